"""Warnings seglab knows do not apply to its runs, silenced at their source so that a run's
console shows what a user needs (the config tree, progress, the metrics tables, where the
files went) and the warnings that do matter stand out. Each filter matches one message and
says why it does not apply; anything else still shows."""

from __future__ import annotations

import warnings

# (message regex, why it does not apply)
KNOWN = (
    (
        r"It is recommended to use `self\.log\('(val|test)/",
        # Evaluation metrics come from a confusion matrix that is all-reduced over the
        # processes before logging (seglab.module), so every rank logs the same value and
        # sync_dist=True would only average identical numbers, once per metric.
        "already reduced across processes",
    ),
    (
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        # Lightning 2.6's own use of a torch pytree API that torch 2.14 deprecates; nothing a
        # user can change, printed at every fit / validate / test.
        "inside Lightning",
    ),
    (
        r"Precision .* is not supported by the model summary",
        # The summary's size in MB counts parameters at 32 bits; mixed precision keeps fp32
        # weights, so the figure is right.
        "the figure is right",
    ),
)


def silence_known_warnings() -> None:
    """Installs the filters above (idempotent: ``warnings`` keeps one of each)."""
    for message, _why in KNOWN:
        warnings.filterwarnings("ignore", message=message)
