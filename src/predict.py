"""Segment images: `python src/predict.py ckpt_path=<file.ckpt> input=<image or folder>`."""

from omegaconf import DictConfig

from seglab.entry_point import entry_point
from seglab.prediction import predict


@entry_point("predict")
def main(cfg: DictConfig) -> None:
    predict(cfg)


if __name__ == "__main__":
    main()
