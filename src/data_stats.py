"""Dataset statistics and class weights: `python src/data_stats.py data=<name> [data.root=...]`."""

import os
from pathlib import Path

os.environ.setdefault("SEGLAB_ROOT", str(Path(__file__).resolve().parents[1]))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from seglab.data import tools  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="data_stats")
def main(cfg: DictConfig) -> None:
    tools.run_stats(cfg)


if __name__ == "__main__":
    main()
