"""Export a checkpoint: `python src/export.py ckpt_path=<file.ckpt> [format=onnx]`."""

import os
from pathlib import Path

os.environ.setdefault("SEGLAB_ROOT", str(Path(__file__).resolve().parents[1]))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from seglab import export  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    export.export(cfg)


if __name__ == "__main__":
    main()
