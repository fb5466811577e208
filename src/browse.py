"""Browse a dataset: `python src/browse.py data=<name> [split=train|val|test] [num=16]
[augment=false]`."""

from omegaconf import DictConfig

from seglab.data.browse import run_browse
from seglab.entry_point import entry_point


@entry_point("browse")
def main(cfg: DictConfig) -> None:
    run_browse(cfg)


if __name__ == "__main__":
    main()
