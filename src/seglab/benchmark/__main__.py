"""``python -m seglab.benchmark <folder>``: the README's model table, in markdown, from
``<folder>/*/benchmark.json`` (``make bench`` ends with it)."""

from __future__ import annotations

import sys

from seglab.benchmark.tables import markdown_table


def main() -> None:
    print(markdown_table(sys.argv[1]))


if __name__ == "__main__":
    main()
