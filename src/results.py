"""Rerun every CPU recipe and write the measured results page: `python src/results.py
[budget=1.0] [recipes=[cpu_shapes,...]] [data_roots.coco=...]` (see conf/results.yaml and
seglab/results/). Writes docs/results.md and docs/results/<recipe>.png; the runs' folders
go into this run's folder."""

from omegaconf import DictConfig

from seglab.entry_point import entry_point
from seglab.results.command import results


@entry_point("results")
def main(cfg: DictConfig) -> None:
    print(f"results: {results(cfg)}")


if __name__ == "__main__":
    main()
