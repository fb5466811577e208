"""Benchmark a model: `python src/benchmark.py model=<name> data=<name> [overrides]`."""

import os
from pathlib import Path

os.environ.setdefault("SEGLAB_ROOT", str(Path(__file__).resolve().parents[1]))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from seglab import benchmark  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="benchmark")
def main(cfg: DictConfig) -> None:
    benchmark.run(cfg)


if __name__ == "__main__":
    main()
