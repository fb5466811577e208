"""A folder dataset's masks against its config, before anything trains: the convention
found (``seglab.data.convention_names``), the exact overrides that fit when the config
disagrees, and ``data.num_classes=null`` inferred.

``infer_num_classes(cfg)`` is what a script calls before it builds the model (the model's
``num_classes`` interpolates ``data.num_classes``): for ``data=folder`` it scans the masks
(all, or a seeded sample of ``data.dataset.scan_masks``), logs the convention, fills in what
the config leaves null (``num_classes``, ``class_names``, ``palette``) or ``auto``
(``mask_format``, ``reduce_zero_label``), and stops with ``InputError`` when the config does
not read the masks, naming the overrides that do. ``check_labels`` is the same for
``check_data.py``, returning the finding instead of stopping.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from seglab.data.convention_names import (
    Finding,
    Labels,
    Verdict,
    check_fit,
    name_convention,
    voc_colours,
)
from seglab.data.layouts import MASK_SUFFIXES, Layout, all_masks, detect_layout
from seglab.data.mask_scan import Colour, MaskInfo, scan_masks
from seglab.errors import InputError

log = logging.getLogger(__name__)

FOLDER_TARGET = "seglab.data.folder.FolderDataset"


def is_folder(data: DictConfig) -> bool:
    """Whether a data config reads a ``FolderDataset`` (``data=folder`` and recipes on it)."""
    dataset = data.get("dataset") or {}
    return str(dataset.get("_target_", "")) == FOLDER_TARGET


def _colour_list(value: Any) -> tuple[Colour, ...] | None:
    if value is None:
        return None
    return tuple(tuple(int(v) for v in c) for c in value)  # type: ignore[misc]


def labels_of(data: DictConfig) -> Labels:
    """The label settings of a folder data config."""
    ds = data.dataset
    return Labels(
        mask_format=str(ds.get("mask_format", "binary")),
        num_classes=data.get("num_classes"),
        ignore_index=int(ds.get("ignore_index", data.get("ignore_index", 255))),
        palette=_colour_list(ds.get("palette")),
        void_colours=_colour_list(ds.get("void_colours")) or (),
        reduce_zero_label=ds.get("reduce_zero_label"),
    )


def scan_layout(
    layout: Layout,
    have: Labels,
    mask_suffixes: Sequence[str] = MASK_SUFFIXES,
    limit: int | None = 200,
    seed: int = 0,
) -> tuple[Finding, list[MaskInfo]]:
    """The convention of the masks of ``layout`` (every split's), and what was read."""
    infos, total = scan_masks(all_masks(layout, mask_suffixes), limit, seed)
    return name_convention(infos, total, have), infos


def _shown(colours: Sequence[Colour]) -> str:
    return "[" + ",".join(f"[{r},{g},{b}]" for r, g, b in colours) + "]"


def _overrides(
    infos: list[MaskInfo], have: Labels, want: Labels, names: Any, palette: Any
) -> list[str]:
    """The overrides that turn ``have`` into ``want`` (``names`` / ``palette``: the config's
    ``class_names`` and ``palette``, None when not set)."""
    out = []
    if have.num_classes != want.num_classes:
        out.append(f"data.num_classes={want.num_classes}")
    if bool(have.reduce_zero_label) != bool(want.reduce_zero_label):
        out.append(f"data.dataset.reduce_zero_label={str(bool(want.reduce_zero_label)).lower()}")
    if have.ignore_index != want.ignore_index:
        out.append(f"data.ignore_index={want.ignore_index}")
    if want.mask_format == "rgb":
        if tuple(have.palette or ()) != want.palette:
            out.append(f"'data.palette={_shown(want.palette or ())}'")
    elif palette is not None and len(palette) != want.num_classes:
        out.append("data.palette=null")
    if names is not None and len(names) != want.num_classes:
        out.append("data.class_names=null")
    after = replace(want, mask_format=have.mask_format)
    auto = have.mask_format == "auto" and check_fit(infos, after).labels == want
    if have.mask_format != want.mask_format and not auto:
        out.insert(0, f"data.dataset.mask_format={want.mask_format}")
    return out


def fits(
    finding: Finding, infos: list[MaskInfo], have: Labels, names: Any = None, palette: Any = None
) -> list[tuple[str, list[str]]]:
    """``(why, overrides)`` for each reading of the masks that fits (the first is the one
    the finding names); empty when none does (lossy or unreadable masks)."""
    if finding.fit is None:
        return []
    out = [("", _overrides(infos, have, finding.fit, names, palette))]
    if finding.other is not None:
        why, other = finding.other
        ade_like = have.num_classes == finding.max_id  # 0..K stored, K classes configured
        if other.reduce_zero_label is False or ade_like:
            out.append((why, _overrides(infos, have, other, names, palette)))
    return [(why, o) for why, o in out if o]


def mismatch_message(
    root: Path, finding: Finding, verdict: Verdict, readings: list[tuple[str, list[str]]]
) -> str:
    """The error for a config that does not read the masks: why, what they are, and the
    overrides that fit."""
    lines = [
        f"folder: the masks in {root} do not fit the config: {verdict.mismatch}.",
        f"The masks are {finding.summary()}.",
    ]
    if not readings:
        lines.append("No setting reads them: fix the masks.")
    for i, (why, overrides) in enumerate(readings):
        head = "These overrides fit" if i == 0 else f"Or, if {why}"
        lines.append(f"{head}: {' '.join(overrides)}")
    if readings:
        lines.append("(data.num_classes=null infers the classes from the masks.)")
    return "\n".join(lines)


def resolve_mask_format(
    layout: Layout, have: Labels, mask_suffixes: Sequence[str], limit: int | None, seed: int
) -> Labels:
    """``have`` with ``mask_format=auto`` replaced by the format that reads the masks of
    ``layout`` (what a ``FolderDataset`` given ``auto`` does); InputError when none does."""
    finding, infos = scan_layout(layout, have, mask_suffixes, limit, seed)
    verdict = check_fit(infos, have)
    if verdict.mismatch is not None:
        readings = fits(finding, infos, have)
        raise InputError(mismatch_message(layout.root, finding, verdict, readings))
    return verdict.labels


def _scan(data: DictConfig) -> tuple[Layout, Finding, list[MaskInfo]]:
    ds = data.dataset
    splits = data.get("splits") or {}
    layout = detect_layout(ds.root, str(splits.get("train") or "train"))
    finding, infos = scan_layout(
        layout,
        labels_of(data),
        list(ds.get("mask_suffixes") or MASK_SUFFIXES),
        ds.get("scan_masks", 200),
        int(ds.get("split_seed", 0)),
    )
    return layout, finding, infos


def _inferred(root: Path, finding: Finding, have: Labels) -> Labels:
    """The settings ``data.num_classes=null`` takes: the finding's, within what the config
    sets itself (an explicit ``mask_format`` or ``reduce_zero_label``)."""
    if finding.fit is None:
        raise InputError(
            f"folder: data.num_classes=null, but no class count can be read from the masks in "
            f"{root}: they are {finding.summary()}"
        )
    want = finding.fit
    if have.mask_format not in ("auto", want.mask_format):
        raise InputError(
            f"folder: the masks in {root} are {finding.summary()}, but the config reads them "
            f"with data.dataset.mask_format={have.mask_format}. This override fits: "
            f"data.dataset.mask_format={want.mask_format}"
        )
    chosen = have.reduce_zero_label
    if want.mask_format == "index" and chosen is not None and chosen != want.reduce_zero_label:
        top = finding.max_id or 0
        want = replace(want, num_classes=top if chosen else top + 1, reduce_zero_label=chosen)
    return want


def _default_names(n: int, fmt: str, finding: Finding) -> tuple[list[str], list[Colour]]:
    """Class names and display colours for ``n`` classes: the finding's when it has ``n``."""
    if finding.class_names is not None and len(finding.class_names) == n and finding.palette:
        return list(finding.class_names), list(finding.palette)
    if fmt == "binary" and n == 2:
        return ["background", "foreground"], [(0, 0, 0), (255, 255, 255)]
    return [f"class_{i}" for i in range(n)], voc_colours(n)


def _fill(data: DictConfig, finding: Finding, inferred: bool) -> None:
    """Sets ``class_names`` and ``palette`` where null, or, the classes inferred, where their
    length does not fit them (a log line says so)."""
    n, fmt = int(data.num_classes), str(data.dataset.mask_format)
    names, colours = _default_names(n, fmt, finding)
    for key, default in (("class_names", names), ("palette", colours)):
        given = data.get(key)
        mine = len(given or ()) == n or not inferred or (key == "palette" and fmt == "rgb")
        if given is not None and mine:
            continue  # the user's (the DataModule or the check names a disagreement)
        data[key] = [list(c) for c in default] if key == "palette" else list(default)
        shown = ", ".join(map(str, default[:8])) + (", ..." if n > 8 else "")
        log.info("folder: data.%s: %s (set data.%s, %d entries, to choose)", key, shown, key, n)


def classes_seen(infos: Sequence[MaskInfo], labels: Labels) -> set[int] | None:
    """The class ids the scanned masks hold when read with ``labels`` (None when a mask's
    values are not known: too many colours)."""
    seen: set[int] = set()
    table = {tuple(c): i for i, c in enumerate(labels.palette or ())}
    for m in infos:
        if not m.ok:
            continue
        if labels.mask_format == "rgb":
            if m.colours is None:
                return None
            seen |= {table[c] for c in m.colours if c in table}
            continue
        if m.values is None:
            return None
        for v in m.values:
            if labels.mask_format == "binary":
                seen.add(int(v in (1, 255)))
            elif labels.reduce_zero_label:
                if v not in (0, labels.ignore_index):
                    seen.add(v - 1)
            elif v != labels.ignore_index:
                seen.add(v)
    return seen


def _warn_absent(
    data: DictConfig, infos: Sequence[MaskInfo], labels: Labels, finding: Finding
) -> None:
    """A class no scanned training mask holds cannot be learnt: name it (a warning, since a
    sample may miss a rare class, and evaluation may still want the class's row)."""
    seen = classes_seen(infos, labels)
    if seen is None:
        return
    names = list(data.get("class_names") or [])
    absent = [i for i in range(int(data.num_classes)) if i not in seen]
    for i in absent:
        name = names[i] if i < len(names) else f"class_{i}"
        log.warning(
            "folder: class %d (%s) occurs in none of the %d training masks scanned: the model "
            "cannot learn it; check data.num_classes and the masks (python src/check_data.py)",
            i,
            name,
            finding.scanned,
        )


def _settle(cfg: DictConfig) -> tuple[Layout, Finding, str | None]:
    """Infers what ``cfg.data`` leaves null / auto (in place) and checks the rest against
    the masks: ``(layout, finding, the mismatch message or None)``."""
    data = cfg.data
    layout, finding, infos = _scan(data)
    have = labels_of(data)
    names, palette = data.get("class_names"), data.get("palette")  # as given, for overrides
    log.info("folder: %s: %s", layout.root, finding.summary())
    with open_dict(cfg):
        if have.num_classes is None:
            want = _inferred(layout.root, finding, have)
            data.num_classes = want.num_classes
            data.dataset.mask_format = want.mask_format
            data.dataset.reduce_zero_label = bool(want.reduce_zero_label)
            data.ignore_index = want.ignore_index
            if want.mask_format == "rgb":
                data.palette = [list(c) for c in want.palette or ()]
            log.info(
                "folder: data.num_classes=null: %d classes inferred from the masks (%s)",
                want.num_classes,
                finding.convention,
            )
        _fill(data, finding, inferred=have.num_classes is None)
        labels = labels_of(data)
        verdict = check_fit(infos, labels)
        if verdict.mismatch is not None:
            readings = fits(finding, infos, labels, names, palette)
            return layout, finding, mismatch_message(layout.root, finding, verdict, readings)
        if labels.mask_format == "auto":
            data.dataset.mask_format = verdict.labels.mask_format
            log.info(
                "folder: data.dataset.mask_format=auto: read as %s", verdict.labels.mask_format
            )
        if data.dataset.get("reduce_zero_label") is None:
            data.dataset.reduce_zero_label = False
    _warn_absent(data, infos, verdict.labels, finding)
    if verdict.rejected:
        m, why = verdict.rejected[0]
        log.warning(
            "folder: %d of %d scanned masks do not fit %s, e.g. %s: %s. Bad files? Training "
            "stops at them (data.on_bad_sample=skip leaves them out); `python "
            "src/check_data.py` lists them all",
            len(verdict.rejected),
            verdict.readable,
            describe_short(verdict.labels),
            m.path,
            why,
        )
    return layout, finding, None


def describe_short(labels: Labels) -> str:
    """``mask_format=index, num_classes=3``: the settings in a log line."""
    return f"mask_format={labels.mask_format}, num_classes={labels.num_classes}"


def infer_num_classes(cfg: DictConfig) -> Finding | None:
    """For folder data: scans the masks, logs their convention, fills in ``data.num_classes``
    (when null), ``class_names`` and ``palette`` (when null) and ``mask_format`` (when auto)
    in ``cfg``, and raises ``InputError`` with the overrides that fit when the config does
    not read the masks. Call it before the model is built. Other data: nothing (but
    ``num_classes=null`` is an error there). Returns the finding (None for other data)."""
    data = cfg.data
    if not is_folder(data):
        if data.get("num_classes") is None:
            raise InputError(
                f"data.num_classes=null: only data=folder infers the classes from its masks; "
                f"set data.num_classes for data '{data.get('name')}'"
            )
        return None
    _, finding, problem = _settle(cfg)
    if problem is not None:
        raise InputError(problem)
    return finding


def check_labels(cfg: DictConfig) -> dict[str, Any] | None:
    """``infer_num_classes`` for check_data.py: the finding as a dict (``problem``: the
    mismatch message, or None) instead of an error; None for other data."""
    if not is_folder(cfg.data):
        return None
    layout, finding, problem = _settle(cfg)
    return {
        "layout": layout.describe(),
        "convention": finding.convention,
        "finding": finding.summary(),
        "mask_format": str(cfg.data.dataset.mask_format),
        "num_classes": cfg.data.num_classes,
        "problem": problem,
    }
