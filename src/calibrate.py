"""Fit a checkpoint's softmax temperature on its validation split (temperature scaling):
`python src/calibrate.py ckpt_path=<file.ckpt>`. eval.py and predict.py then use it
(`temperature=auto`)."""

from omegaconf import DictConfig

from seglab.calibration_run import calibrate
from seglab.entry_point import entry_point


@entry_point("calibrate")
def main(cfg: DictConfig) -> None:
    calibrate(cfg)


if __name__ == "__main__":
    main()
