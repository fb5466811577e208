"""Reproduce the seed projects' findings and write a report: `python src/reproduce.py
[budget=1.0] [findings=[coco_cat,...]] [data_roots.coco=...]` (see conf/reproduce.yaml and
seglab/report.py). The report, its figures and every run's folder go into the run folder."""

import os
from pathlib import Path

os.environ.setdefault("SEGLAB_ROOT", str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

import seglab.config  # noqa: E402, F401  (registers the config resolvers)
from seglab import report  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="reproduce")
def main(cfg: DictConfig) -> None:
    path = report.reproduce(cfg)
    print(f"report: {path}")


if __name__ == "__main__":
    main()
