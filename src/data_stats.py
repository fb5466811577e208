"""Dataset statistics and class weights: `python src/data_stats.py data=<name> [data.root=...]`."""

from omegaconf import DictConfig

from seglab.data.stats import run_stats
from seglab.entry_point import entry_point


@entry_point("data_stats")
def main(cfg: DictConfig) -> None:
    run_stats(cfg)


if __name__ == "__main__":
    main()
