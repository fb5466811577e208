"""Train a segmentation model: `python src/train.py [group=option ...] [key=value ...]`."""

from omegaconf import DictConfig

from seglab.entry_point import entry_point
from seglab.pipeline import train


@entry_point("train")
def main(cfg: DictConfig) -> float | None:
    # The value a sweeper (e.g. Optuna) optimises.
    return train(cfg).get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
