"""Benchmark a model: `python src/benchmark.py model=<name> data=<name> [overrides]`."""

from omegaconf import DictConfig

from seglab.benchmark.command import benchmark
from seglab.entry_point import entry_point


@entry_point("benchmark")
def main(cfg: DictConfig) -> None:
    benchmark(cfg)


if __name__ == "__main__":
    main()
