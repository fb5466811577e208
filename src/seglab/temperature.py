"""A checkpoint's fitted softmax temperature (``src/calibrate.py``), kept in a small JSON file
beside it (``best.ckpt`` -> ``best.calibration.json``), so that the checkpoint itself is
never rewritten and eval / predict find it with ``temperature=auto``."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from seglab.errors import InputError

log = logging.getLogger(__name__)

SUFFIX = ".calibration.json"


def temperature_file(ckpt_path: str | Path) -> Path:
    """Where a checkpoint's (or ONNX file's) temperature lives."""
    path = Path(ckpt_path)
    return path.with_name(path.stem + SUFFIX)


def save_calibration(ckpt_path: str | Path, temperature: float, report: dict[str, Any]) -> Path:
    """Writes ``{"temperature": T, ...report}`` beside the checkpoint (replacing an earlier fit
    of the same checkpoint) and returns the file."""
    path = temperature_file(ckpt_path)
    record = {"temperature": float(temperature), "checkpoint": Path(ckpt_path).name, **report}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)  # a reader never sees half a file
    return path


def _valid(value: Any, where: str) -> float:
    try:
        t = float(value)
    except (TypeError, ValueError):
        t = float("nan")
    if not math.isfinite(t) or t <= 0:
        raise InputError(
            f"temperature {value!r} from {where} is not a positive number; pass temperature=auto "
            "(the file src/calibrate.py wrote beside the checkpoint), temperature=1 (the raw "
            "softmax) or a positive number"
        )
    return t


def resolve_temperature(setting: Any, ckpt_path: str | Path | None) -> float:
    """The temperature eval / predict use: ``auto`` the fitted one beside the checkpoint, or
    1 (none fitted); None: 1; a number: that number."""
    if setting is None:
        return 1.0
    if str(setting).lower() != "auto":
        t = _valid(setting, "the command line")
        log.info("softmax temperature %.4g (temperature=%s)", t, setting)
        return t
    path = temperature_file(ckpt_path) if ckpt_path else None
    if path is None or not path.is_file():
        return 1.0
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(
            f"cannot read the calibration file {path} ({err}); run src/calibrate.py again, or "
            "pass temperature=1 to ignore it"
        ) from err
    t = _valid(record.get("temperature"), str(path))
    log.info("softmax temperature %.4g, fitted by src/calibrate.py (%s)", t, path)
    return t
