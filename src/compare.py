"""Compare evaluated runs on the same images: `python src/compare.py runs=[A,B,...]
[split=auto|val|test] [resamples=1000] [seed=0] [confidence=0.95]` (see conf/compare.yaml and
seglab/comparison/). The first run is the reference; a multirun folder counts as one
configuration per group of jobs that differ only in `seed=`. Writes comparison.md,
comparison.json and comparison.png into outputs/compare/<time>/."""

from omegaconf import DictConfig

from seglab.comparison.command import compare
from seglab.entry_point import entry_point


@entry_point("compare")
def main(cfg: DictConfig) -> None:
    compare(cfg)


if __name__ == "__main__":
    main()
