"""Which label convention a folder dataset's masks follow, read from the masks, and whether
a config reads them so: detected, never guessed.

``name_convention`` names what the scanned masks (``seglab.data.mask_scan``) hold:

- **binary** masks, 0/255 or 0/1 (grey, palette or 1-bit PNGs);
- **class-index** masks, grey or palette PNGs whose values are class ids; ``ignore_index``
  (255) as void; values 1..K with no 0 anywhere: 0 is void and the classes are 1..K
  (ADE20K's ``reduce_zero_label``);
- **RGB colour** masks, with the distinct colours found, and **grey levels** (0/128/255:
  few values, not consecutive ids), read as colours too;
- **lossy** masks (hundreds of values or colours: JPEG, anti-aliasing): no setting fits.

Each finding carries the settings that read every scanned mask (``fit``). ``check_fit`` says
whether a config's settings read them: a mismatch is when more than half of the readable
masks do not fit (a few that do not are bad files, left to the dataset's errors and to
``data.on_bad_sample``), or when index masks hold only 0 and ``ignore_index`` (binary 0/255
masks: every foreground pixel would be ignored). ``seglab.data.conventions`` holds them
against a config: the overrides that fit, and ``data.num_classes=null`` inferred.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from seglab.data.mask_scan import MAX_DISTINCT, Colour, MaskInfo

FORMATS = ("binary", "index", "rgb")
MAX_COLOUR_CLASSES = 64  # more colours (or grey levels) than this: not a label mask


@dataclass(frozen=True)
class Labels:
    """How masks are read: a folder config's label settings (``mask_format`` may be
    ``auto``, ``num_classes`` None: to be found)."""

    mask_format: str
    num_classes: int | None
    ignore_index: int = 255
    palette: tuple[Colour, ...] | None = None
    void_colours: tuple[Colour, ...] = ()
    reduce_zero_label: bool | None = None


@dataclass
class Finding:
    """The convention the scanned masks follow. ``fit``: settings that read every one of
    them (None when none do); ``other``: another reading that fits too, with why;
    ``class_names`` / ``palette``: defaults for ``fit``."""

    convention: str
    text: str
    fit: Labels | None
    scanned: int
    total: int
    unreadable: list[MaskInfo] = field(default_factory=list)
    other: tuple[str, Labels] | None = None
    class_names: list[str] | None = None
    palette: list[Colour] | None = None
    max_id: int | None = None  # the largest class value (index masks)

    def summary(self) -> str:
        """The finding in one line, with how many masks were read."""
        sample = "all" if self.scanned == self.total else f"a seeded sample of {self.scanned} of"
        bad = f"; {len(self.unreadable)} could not be read" if self.unreadable else ""
        return f"{self.text} ({sample} {self.total} masks scanned{bad})"


@dataclass
class Verdict:
    """Whether ``labels`` read the scanned masks: ``rejected`` masks (with why) and, when
    the config does not read the dataset, ``mismatch`` (why)."""

    labels: Labels
    readable: int
    rejected: list[tuple[MaskInfo, str]]
    mismatch: str | None


def ranges(values: Sequence[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    runs: list[list[int]] = []
    for v in sorted(values):
        if runs and runs[-1][1] == v - 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _index_palette(infos: list[MaskInfo], stored: Sequence[int]) -> list[Colour]:
    """Display colours of the classes stored as ``stored``: a palette mask's own colours,
    else the VOC colour map."""
    own = dict(next((m.index_colours for m in infos if m.index_colours), ()))
    voc = voc_colours(len(stored))
    return [own.get(v, voc[i]) for i, v in enumerate(stored)]


def voc_colours(n: int) -> list[Colour]:
    """The first ``n`` colours of the PASCAL VOC colour map (distinct, bit-interleaved)."""
    out = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append((r, g, b))
    return out


def _outliers(single: list[MaskInfo], void: set[int]) -> tuple[set[int], str]:
    """Values that one mask alone (of five or more) holds and that are not the next class id
    (above the largest other id plus one): a bad file more often than a class. They are
    named in the finding and left out of the convention; the check then reports that mask,
    and the dataset stops at it (or skips it)."""
    if len(single) < 5:
        return set(), ""
    where: dict[int, list[MaskInfo]] = {}
    for m in single:
        for v in m.values or ():
            where.setdefault(v, []).append(m)
    top = max((v for v, ms in where.items() if len(ms) > 1 and v not in void), default=0)
    odd = {v for v, ms in where.items() if len(ms) == 1 and v > top + 1 and v not in void}
    shown = [f"{v} only in {where[v][0].path}" for v in sorted(odd)[:3]]
    return odd, (f"; {', '.join(shown)} (bad files?)" if odd else "")


def _source(readable: list[MaskInfo]) -> str:
    modes = Counter(
        "palette" if m.mode == "P" else "RGB" if m.mode == "RGB" else "grey" for m in readable
    )
    return " / ".join(f"{k} PNG" if k != "RGB" else "RGB" for k, _ in modes.most_common())


def _lossy(
    scanned: int, total: int, unreadable: list[MaskInfo], how: str, example: MaskInfo
) -> Finding:
    return Finding(
        "lossy",
        f"lossy masks: {how} (e.g. {example.path}), not class labels (saved as JPEG, or "
        "with anti-aliased edges?); masks must be lossless files (PNG) holding exact class "
        "values or colours",
        None,
        scanned,
        total,
        unreadable,
    )


def _colours(readable, scanned, total, unreadable, have: Labels, grey: bool) -> Finding:
    """Colour masks (or grey levels): one class per colour that is not a void colour."""
    most = max(readable, key=lambda m: MAX_DISTINCT + 1 if m.colours is None else len(m.colours))
    if most.colours is None:
        how = f"more than {MAX_DISTINCT} colours in a mask"
        return _lossy(scanned, total, unreadable, how, most)
    seen = set().union(*(m.colours for m in readable))
    classes = sorted(seen - set(have.void_colours))
    if len(classes) > MAX_COLOUR_CLASSES:
        return _lossy(scanned, total, unreadable, f"{len(classes)} distinct colours", most)
    if have.palette is not None and set(have.palette) == set(classes):
        classes = list(have.palette)  # the config's class order
    kind = "grey-level" if grey else "RGB colour"
    shown = ", ".join(str(c[0]) if grey and c[0] == c[1] == c[2] else str(c) for c in classes[:12])
    note = " (read as colours: they are not consecutive class ids)" if grey else ""
    n = len(classes)
    void = f", void colours {list(have.void_colours)}" if seen & set(have.void_colours) else ""
    return Finding(
        "grey levels" if grey else "RGB colours",
        f"{kind} masks ({_source(readable)}) with {n} {'levels' if grey else 'colours'}: "
        f"{shown}{', ...' if n > 12 else ''}{void}{note}",
        Labels("rgb", n, have.ignore_index, tuple(classes), have.void_colours),
        scanned,
        total,
        unreadable,
        class_names=[f"class_{i}" for i in range(n)],
        palette=classes,
    )


def name_convention(infos: Sequence[MaskInfo], total: int, have: Labels) -> Finding:
    """The convention of the scanned masks ``infos`` (of ``total``); ``have`` (the config's
    settings) gives ``ignore_index``, the void colours and the palette's class order."""
    readable = [m for m in infos if m.ok]
    unreadable = [m for m in infos if not m.ok]
    scanned = len(infos)
    if not readable:
        shown = f": {unreadable[0].error}" if unreadable else ""
        return Finding(
            "unreadable", f"no mask could be read{shown}", None, scanned, total, unreadable
        )
    single = [m for m in readable if m.values is not None]
    if len(single) * 2 < len(readable):
        return _colours(readable, scanned, total, unreadable, have, grey=False)
    odd, rare = _outliers(single, {have.ignore_index, 255})
    values = set().union(*(m.values for m in single)) - odd
    source = _source(single)
    each_binary = all(m.values - odd <= {0, 1} or m.values - odd <= {0, 255} for m in single)
    if each_binary and values <= {0, 1, 255}:
        fg = "/".join(str(v) for v in sorted(values - {0})) or "none"
        kind = {"1": "0/1", "255": "0/255"}.get(fg, "0/1 and 0/255")
        text = f"binary masks ({source}), 0 = background, {fg} = foreground"
        if fg == "none":
            text = f"binary masks ({source}) holding only 0: no foreground pixel in any"
        return Finding(
            f"binary {kind}",
            text + rare,
            Labels("binary", 2, have.ignore_index),
            scanned,
            total,
            unreadable,
            class_names=["background", "foreground"],
            palette=[(0, 0, 0), (255, 255, 255)],
        )
    void = have.ignore_index if have.ignore_index in values else None
    if void is None and 255 in values and max(values - {255}) < 255:
        void = 255  # the usual void value, though the config says otherwise
    ignore = have.ignore_index if void is None else void
    ids = values - {void}
    if not ids or max(ids) + 1 > 2 * len(ids) + 2:  # far from consecutive: levels
        if len(values) > MAX_COLOUR_CLASSES:
            most = max(single, key=lambda m: len(m.values or ()))
            return _lossy(scanned, total, unreadable, f"{len(values)} distinct values", most)
        return _colours(readable, scanned, total, unreadable, have, grey=True)
    top = max(ids)
    voids = f", {void} = void (ignore_index)" if void is not None else ""
    palettes = any(m.index_colours for m in single)
    if 0 not in ids:
        names = [f"class_{v}" for v in range(1, top + 1)]
        return Finding(
            "index, reduce zero label",
            f"class-index masks ({source}) with values {ranges(ids)}{voids} and no 0 "
            f"in any: 0 means void and the classes are 1-{top} (ADE20K's reduce_zero_label)" + rare,
            Labels("index", top, ignore, reduce_zero_label=True),
            scanned,
            total,
            unreadable,
            other=(
                "0 is a class no mask holds",
                Labels("index", top + 1, ignore, reduce_zero_label=False),
            ),
            class_names=names,
            palette=_index_palette(single, range(1, top + 1)),
            max_id=top,
        )
    return Finding(
        f"index ({'palette' if palettes else 'grey'})",
        f"class-index masks ({source}) with values {ranges(ids)} ({top + 1} classes)"
        + voids
        + rare,
        Labels("index", top + 1, ignore, reduce_zero_label=False),
        scanned,
        total,
        unreadable,
        other=(
            "0 means void (ADE20K's reduce_zero_label)",
            Labels("index", top, ignore, reduce_zero_label=True),
        )
        if top >= 2
        else None,
        class_names=[f"class_{v}" for v in range(top + 1)],
        palette=_index_palette(single, range(top + 1)),
        max_id=top,
    )


def _why_not(m: MaskInfo, labels: Labels) -> str | None:
    """Why ``labels`` do not read mask ``m`` (None: they do)."""
    fmt = labels.mask_format
    if fmt == "rgb":
        if m.colours is None:
            return f"more than {MAX_DISTINCT} colours"
        table = set(labels.palette or ()) | set(labels.void_colours)
        bad = sorted(m.colours - table)
        return f"colours {bad[:4]} are not in data.palette" if bad else None
    if m.values is None:
        return f"a colour mask ({m.mode}), colours {sorted(m.colours or ())[:4]}"
    if fmt == "binary":
        ok = m.values <= {0, 1} or m.values <= {0, 255}
        return None if ok else f"values {sorted(m.values)[:10]} are not 0/1 or 0/255"
    k = labels.num_classes or 0
    lo = 1 if labels.reduce_zero_label else 0  # reduce zero: stored 0 is void, 1..K classes
    allowed = set(range(lo, lo + k)) | {labels.ignore_index} | ({0} if lo else set())
    bad = sorted(m.values - allowed)
    if not bad:
        return None
    return f"values {bad[:10]} are neither class ids ({lo}-{lo + k - 1}) nor ignore_index"


def describe(labels: Labels) -> str:
    """The settings in words, as config keys."""
    out = f"data.dataset.mask_format={labels.mask_format}, data.num_classes={labels.num_classes}"
    if labels.reduce_zero_label:
        out += ", data.dataset.reduce_zero_label=true"
    return out


def check_fit(infos: Sequence[MaskInfo], labels: Labels) -> Verdict:
    """Whether ``labels`` read the scanned masks (see the module docstring); with
    ``mask_format=auto`` the first of binary, index, rgb that does is taken."""
    if labels.mask_format == "auto":
        verdicts = [check_fit(infos, replace(labels, mask_format=f)) for f in FORMATS]
        good = next((v for v in verdicts if v.mismatch is None), None)
        if good is not None:
            return good
        best = min(verdicts, key=lambda v: len(v.rejected))
        example = (
            f" (e.g. {best.rejected[0][0].path}: {best.rejected[0][1]})" if best.rejected else ""
        )
        why = (
            f"data.dataset.mask_format=auto with data.num_classes={labels.num_classes}: none "
            f"of {', '.join(FORMATS)} reads them{example}"
        )
        return replace(best, labels=labels, mismatch=why)
    readable = [m for m in infos if m.ok]
    rejected = [(m, why) for m in readable if (why := _why_not(m, labels)) is not None]
    mismatch = None
    if labels.mask_format == "binary" and labels.num_classes != 2:
        mismatch = f"binary masks make 2 classes, not data.num_classes={labels.num_classes}"
    elif labels.mask_format == "rgb" and len(labels.palette or ()) != labels.num_classes:
        mismatch = (
            f"data.dataset.mask_format=rgb reads class i as colour data.palette[i], but "
            f"data.palette has {len(labels.palette or ())} colours for "
            f"data.num_classes={labels.num_classes}"
        )
    elif not readable:
        mismatch = "no scanned mask could be read"
    elif len(rejected) * 2 > len(readable):
        m, why = rejected[0]
        mismatch = (
            f"read with {describe(labels)}, {len(rejected)} of {len(readable)} scanned masks "
            f"do not fit (e.g. {m.path}: {why})"
        )
    elif labels.mask_format == "index" and not labels.reduce_zero_label:
        values = set().union(*(m.values or set() for m in readable))
        if values == {0, labels.ignore_index}:
            mismatch = (
                f"read with {describe(labels)}, the masks hold only 0 and "
                f"{labels.ignore_index} (= ignore_index): every non-0 pixel would be ignored, "
                "nothing but class 0 learnt"
            )
    return Verdict(labels, len(readable), rejected, mismatch)
