"""Evaluate a checkpoint: `python src/eval.py ckpt_path=<file.ckpt> [split=val|test]`."""

from omegaconf import DictConfig

from seglab.entry_point import entry_point
from seglab.pipeline import evaluate


@entry_point("eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
