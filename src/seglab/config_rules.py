"""The kinds of rule a config value can have (``seglab.config_schema``'s table is built
from them): integers and numbers in a range, choices, lists, per-split values, and the
values Lightning accepts for batch limits, devices and precision. Each rule says in words
what it allows and gives an example that passes it."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    """What a key accepts: ``ok(plain value)``, in words (``allowed``), with an ``example``
    as typed on the command line."""

    ok: Callable[[Any], bool]
    allowed: str
    example: str


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def list_of(item: Rule, v: Any, length: int | None = None) -> bool:
    """``v`` is a non-empty list (of ``length`` items when given) of values ``item`` accepts."""
    if not isinstance(v, list) or not v or (length is not None and len(v) != length):
        return False
    return all(item.ok(x) for x in v)


def show(value: Any, sep: str = ", ") -> str:
    """``value`` as written in YAML or a Hydra override; a string that would read as another
    type (``'8'``, ``'true'``, ``''``) is quoted."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        typed = value.strip() != value or value.lower() in ("", "true", "false", "null", "~")
        try:
            float(value)
            typed = True
        except ValueError:
            pass
        return repr(value) if typed else value
    if isinstance(value, list | tuple):
        return "[" + sep.join(show(v, sep) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + sep.join(f"{k}: {show(v, sep)}" for k, v in value.items()) + "}"
    return repr(value)


def make_rule(ok: Callable[[Any], bool], allowed: str, example: Any, null: bool) -> Rule:
    example = show(example, sep=",")  # as typed on the command line: no spaces
    if null:
        return Rule(lambda v: v is None or ok(v), f"{allowed} or null", example)
    return Rule(ok, allowed, example)


def integer(lo=None, hi=None, *, example: int, null: bool = False, note: str = "") -> Rule:
    """An int (not a bool, not 8.0) in [lo, hi]."""
    if lo is None:
        words = "an integer"
    elif hi is not None:
        words = f"an integer from {lo} to {hi}"
    else:
        words = "a positive integer" if lo == 1 else f"an integer >= {lo}"

    def ok(v: Any) -> bool:
        return is_int(v) and (lo is None or v >= lo) and (hi is None or v <= hi)

    return make_rule(ok, words + note, example, null)


def number(lo: float, hi=None, *, example: Any, lo_open=False, hi_open=False, null=False):
    """A finite int or float from ``lo`` to ``hi`` (open ends excluded)."""

    def ok(v: Any) -> bool:
        if not is_num(v) or v < lo or (lo_open and v == lo):
            return False
        return hi is None or v < hi or (v == hi and not hi_open)

    if hi is None:
        words = f"a number {'>' if lo_open else '>='} {lo:g}"
    else:
        words = f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    return make_rule(ok, words, example, null)


def numbers(item: Rule, example: list, *, null: bool = False) -> Rule:
    """A non-empty list of ``item``'s numbers (``item`` is a ``number`` rule)."""
    words = item.allowed.replace("a number", "a list of numbers", 1)
    return make_rule(lambda v: list_of(item, v), words, example, null)


def boolean(*, null: bool = False) -> Rule:
    return make_rule(lambda v: isinstance(v, bool), "true or false", True, null)


def choice(*values: Any, null: bool = False) -> Rule:
    """One of ``values`` (``True`` does not count as ``1``)."""
    words = ", ".join(show(x) for x in values[:-1]) + f" or {show(values[-1])}"
    ok = lambda v: any(type(v) is type(x) and v == x for x in values)  # noqa: E731
    return make_rule(ok, words, values[0], null)


def per_split(rule: Rule) -> Rule:
    """``rule``'s value, or a mapping split -> such a value (``{train: 3200, val: 100}``)."""
    return Rule(
        lambda v: rule.ok(v) or (isinstance(v, dict) and bool(v) and all(map(rule.ok, v.values()))),
        f"{rule.allowed}, or one per split ({{train: ..., val: ...}})",
        rule.example,
    )


def batches(v: Any) -> bool:
    """Lightning's batch limits: a count, a fraction, or a whole float (2.0: 2 batches)."""
    return is_num(v) and v >= 0 and (is_int(v) or v <= 1 or float(v).is_integer())


def val_check(v: Any) -> bool:
    if isinstance(v, str):
        return re.fullmatch(r"\d+:\d+:\d+:\d+", v) is not None
    return isinstance(v, dict) or (batches(v) and v > 0)


def devices(v: Any) -> bool:
    if isinstance(v, str):
        return v == "auto" or re.fullmatch(r"-1|\d+(,\d*)*", v.replace(" ", "")) is not None
    if isinstance(v, list):
        return len(v) > 0 and all(is_int(x) and x >= 0 for x in v)
    return is_int(v) and (v >= 1 or v == -1)


# Lightning's precision values (lightning.fabric.plugins.precision: _PRECISION_INPUT);
# predict.py reads the same strings.
PRECISIONS = (
    *("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true"),
    *("transformer-engine", "transformer-engine-float16", "32", "16", "bf16", "64", 32, 16, 64),
)

POSITIVE_INT = integer(1, example=8)
BOOL, BOOL_OR_NULL = boolean(), boolean(null=True)
FRACTION = number(0, 1, example=0.5)
SEED = integer(0, 2**32 - 1, example=42, null=True)
BATCHES = Rule(
    batches, "an integer >= 0 (batches) or a number in [0.0, 1.0] (a fraction of them)", "0.25"
)
MIN_MAX = choice("min", "max")
PRECISION = Rule(
    lambda v: v in PRECISIONS and not isinstance(v, bool | float),
    "one of " + ", ".join(map(str, PRECISIONS[:6])) + " (or Lightning's aliases 32, 16, bf16)",
    "32-true",
)
SIZES = Rule(
    lambda v: list_of(POSITIVE_INT, v, 3), "[batch, height, width], positive integers", "[2,64,64]"
)
WINDOW = Rule(
    lambda v: POSITIVE_INT.ok(v) or list_of(POSITIVE_INT, v, 2),
    "a positive integer or [height, width]",
    "512",
)
