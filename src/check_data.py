"""Check a dataset: `python src/check_data.py data=<name> data.root=<folder>`.

Reads every sample of every configured split and reports all problems at once (a table and
check_data.json in the run folder); exits with status 1 when it found any."""

import os
from pathlib import Path

os.environ.setdefault("SEGLAB_ROOT", str(Path(__file__).resolve().parents[1]))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from seglab.data.check import check_data  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="check_data")
def main(cfg: DictConfig) -> None:
    if check_data(cfg)["problems"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
