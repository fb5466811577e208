"""Browse a dataset: `python src/browse.py data=<name> [split=train|val|test] [num=16]
[augment=false]`."""

import os
from pathlib import Path

os.environ.setdefault("SEGLAB_ROOT", str(Path(__file__).resolve().parents[1]))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from seglab.data import tools  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="browse")
def main(cfg: DictConfig) -> None:
    tools.run_browse(cfg)


if __name__ == "__main__":
    main()
