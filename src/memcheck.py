"""Memory over a long run: `python src/memcheck.py [training overrides]` (see seglab/memcheck.py).
Exits 1 when memory grows more than ``memcheck.max_growth_mb`` after the warm-up."""

from omegaconf import DictConfig

from seglab import memcheck
from seglab.entry_point import entry_point


@entry_point("memcheck")
def main(cfg: DictConfig) -> None:
    if not memcheck.run(cfg)["flat"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
