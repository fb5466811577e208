"""Export a checkpoint: `python src/export.py ckpt_path=<file.ckpt> [format=onnx]`."""

from omegaconf import DictConfig

from seglab.entry_point import entry_point
from seglab.export import export


@entry_point("export")
def main(cfg: DictConfig) -> None:
    export(cfg)


if __name__ == "__main__":
    main()
