"""Clear stops for a checkpoint that does not fit the run.

Resuming (``train.py ckpt_path=``) or evaluating (``eval.py data=...``) a checkpoint with
other classes, channels or another architecture stops before the data or the trainer is
built, with one message naming the checkpoint's model and classes, the run's, and what to
change; not torch's size mismatch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from seglab.config import model_name
from seglab.errors import InputError


def _data_facts(data: Mapping[str, Any]) -> tuple[int, list[str], int]:
    return int(data["num_classes"]), list(data["class_names"]), int(data.get("in_channels", 3))


def _shown(names: Sequence[str]) -> str:
    return ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")


def _describe(run: Mapping[str, Any]) -> str:
    n, names, cin = _data_facts(run["data"])
    return (
        f"{model_name(run)} with num_classes={n} ({_shown(names)}), in_channels={cin} "
        f"(data '{run['data'].get('name', '?')}')"
    )


def check_checkpoint_data(
    ckpt: Mapping[str, Any], ckpt_path: Any, data: Mapping[str, Any], action: str
) -> None:
    """Refuses data whose classes (count, names) or channels differ from the checkpoint's.
    ``action``: "resume" (train.py) or "evaluate" (eval.py), for the fix in the message."""
    saved = ckpt["seglab_config"]
    if _data_facts(saved["data"]) == _data_facts(data):
        return
    if action == "resume":
        fix = (
            "a run resumes only with the data (classes) it started with: resume with the "
            f"checkpoint's data config (data={saved['data'].get('name')}) and change only "
            "where it lives (data.root=...), or start a new run on this data without "
            "ckpt_path (from scratch, or from ImageNet encoder weights with "
            "model.pretrained=true)"
        )
    else:
        fix = (
            "evaluate it on data with the same classes: leave data= out (the checkpoint's "
            "own data config) and point it elsewhere with +data.root=..., or train a model "
            "for this data first"
        )
    n, names, cin = _data_facts(data)
    raise InputError(
        f"checkpoint {ckpt_path} holds a {_describe(saved)}, but this run's data "
        f"'{data.get('name', '?')}' has num_classes={n} ({_shown(names)}), in_channels={cin}. "
        f"To fix: {fix}."
    )


def _net_options_diff(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    a = dict((saved.get("model") or {}).get("net") or {})
    b = dict((now.get("model") or {}).get("net") or {})
    return [
        f"model.net.{k}={a.get(k)!r} (now {b.get(k)!r})"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]


def check_checkpoint_fits(
    net: nn.Module, ckpt: Mapping[str, Any], ckpt_path: Any, run: Mapping[str, Any], action: str
) -> None:
    """Refuses a checkpoint whose net tensors (``net.*``) do not fit ``net`` (missing,
    unexpected or of another shape), naming the model options that differ."""
    own = {f"net.{k}": v for k, v in net.state_dict().items()}
    theirs = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    missing = [k for k in own if k not in theirs]
    extra = [k for k in theirs if k not in own]
    wrong = [
        f"{k} {tuple(theirs[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in theirs and theirs[k].shape != v.shape
    ]
    if not (missing or extra or wrong):
        return
    problems = []
    if wrong:
        problems.append(f"{len(wrong)} of another shape (e.g. {'; '.join(wrong[:2])})")
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {', '.join(missing[:2])})")
    if extra:
        problems.append(f"{len(extra)} not in this net (e.g. {', '.join(extra[:2])})")
    saved = ckpt["seglab_config"]
    diff = _net_options_diff(saved, run)
    options = f" The checkpoint's model options: {', '.join(diff[:6])}." if diff else ""
    fix = (
        "resume with the checkpoint's model config (the options above), or train this model "
        "as a new run without ckpt_path"
        if action == "resume"
        else "use the checkpoint's own model and data config"
    )
    raise InputError(
        f"checkpoint {ckpt_path} holds a {_describe(saved)} whose weights do not fit this "
        f"run's {_describe(run)}: {' and '.join(problems)}.{options} To fix: {fix}."
    )
