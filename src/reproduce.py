"""Reproduce the seed projects' findings and write a report: `python src/reproduce.py
[budget=1.0] [findings=[coco_cat,...]] [data_roots.coco=...]` (see conf/reproduce.yaml and
seglab/reproduce/). The report, its figures and every run's folder go into the run folder."""

from omegaconf import DictConfig

from seglab.entry_point import entry_point
from seglab.reproduce.command import reproduce


@entry_point("reproduce")
def main(cfg: DictConfig) -> None:
    print(f"report: {reproduce(cfg)}")


if __name__ == "__main__":
    main()
