"""Check a dataset: `python src/check_data.py data=<name> data.root=<folder>`.

Reads every sample of every configured split and reports all problems at once (a table and
check_data.json in the run folder); exits with status 1 when it found any."""

from omegaconf import DictConfig

from seglab.data.check import check_data
from seglab.entry_point import entry_point


@entry_point("check_data")
def main(cfg: DictConfig) -> None:
    if check_data(cfg)["problems"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
