"""Memory over a long run: `python src/memcheck.py [training overrides]` (see seglab/memcheck.py).
Exits 1 when memory grows more than ``memcheck.max_growth_mb`` after the warm-up."""

import os
import sys
from pathlib import Path

os.environ.setdefault("SEGLAB_ROOT", str(Path(__file__).resolve().parents[1]))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from seglab import memcheck  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="memcheck")
def main(cfg: DictConfig) -> None:
    if not memcheck.run(cfg)["flat"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
