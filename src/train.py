"""Train a segmentation model: `python src/train.py [group=option ...] [key=value ...]`."""

import os
from pathlib import Path

os.environ.setdefault("SEGLAB_ROOT", str(Path(__file__).resolve().parents[1]))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from seglab import pipeline  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = pipeline.train(cfg)
    # The value a sweeper (e.g. Optuna) optimises.
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
