"""Config helpers: resolvers, early validation and the printed config tree."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.syntax import Syntax
from rich.tree import Tree

from seglab.config_schema import check_values
from seglab.errors import InputError


def auto_precision(cpu_bf16: bool = True) -> str:
    """The fastest correct precision here: mixed precision on CUDA, bf16 autocast on CPUs with
    native bf16 (AVX-512-BF16 / AMX) unless the model's config measured it slower there
    (``model.cpu_bf16: false``, e.g. depthwise-convolution nets), full fp32 elsewhere."""
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    if not cpu_bf16:
        return "32-true"
    if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def cudnn_benchmark(deterministic: bool = False) -> bool:
    """cuDNN autotuning (fastest convolution algorithms for fixed input sizes) on GPUs,
    unless the run must be deterministic; irrelevant on CPU."""
    return torch.cuda.is_available() and not deterministic


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, e.g. a container's or a job
    scheduler's share), not the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def max_workers(workers: int) -> int:
    """``workers`` DataLoader processes, at most one per usable CPU: more only compete for
    the same cores (and PyTorch warns about them)."""
    return min(int(workers), usable_cpus())


def register_resolvers() -> None:
    """The ``${seglab.*:}`` resolvers the configs use (idempotent; done at import)."""
    resolvers = {
        "seglab.precision": auto_precision,
        "seglab.cudnn_benchmark": cudnn_benchmark,
        # Part of run folder names: with the microsecond time it keeps runs started at the
        # same moment apart.
        "seglab.pid": os.getpid,
        "seglab.workers": max_workers,
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn, use_cache=True)


register_resolvers()


def build(node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, but a constructor's own error (a missing file, a class
    count that does not fit) reaches the user as itself, not wrapped in Hydra's trace."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, (ValueError, FileNotFoundError, RuntimeError, ImportError)):
            raise cause from None
        raise


def plain(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain dicts and lists (no OmegaConf objects), without the
    ``hydra`` node: safe to store in checkpoints loaded with ``weights_only=True``."""
    c = OmegaConf.to_container(cfg, resolve=True)
    c.pop("hydra", None)
    return c


def model_name(run: Mapping[str, Any]) -> str:
    """The net's class name in a (plain or OmegaConf) run config, e.g. ``UNet``."""
    target = str(((run.get("model") or {}).get("net") or {}).get("_target_", "?"))
    return target.rsplit(".", 1)[-1]


# The instance task's LightningModule: it takes no loss group (task=instance sets loss: null).
INSTANCE_MODULE = "seglab.instance_module.InstanceModule"


def check_config(cfg: DictConfig) -> None:
    """Cheap checks, run before any model or data is built: each value's type and range
    (``seglab.config_schema``), then missing values and whether data, model and loss agree."""
    check_values(cfg)
    missing = {k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra.")}
    if missing:
        raise InputError(
            f"config values missing: {sorted(missing)}; set them on the command line, e.g. "
            f"{sorted(missing)[0]}=..."
        )
    data, net = cfg.data, cfg.model.get("net", {})
    if cfg.model.get("_target_") == INSTANCE_MODULE and cfg.get("loss") is not None:
        raise InputError(
            f"{model_name(plain(cfg))} is an instance-segmentation model: run it with "
            "task=instance (e.g. python src/train.py task=instance model=maskrcnn_resnet18_fpn)"
        )
    out = net.get("num_classes")
    if out is not None and out != data.num_classes and not (out == 1 and data.num_classes == 2):
        raise InputError(
            f"model.net.num_classes={out} but data '{data.name}' has num_classes="
            f"{data.num_classes}; remove the override (it defaults to ${{data.num_classes}}) "
            "or pick the data config that matches"
        )
    if (
        out == 1
        and "BCE" not in str(cfg.loss.get("_target_", ""))
        and "Dice" not in str(cfg.loss.get("_target_", ""))
    ):
        raise InputError(
            "a single-channel net (model.net.num_classes=1) needs loss=bce or loss=dice"
        )
    if data.get("in_channels") not in (1, 3):
        raise InputError(
            f"data.in_channels={data.get('in_channels')}: images are read as 3 (RGB) or 1 "
            "(grey) channels; set data.in_channels=3 or 1"
        )
    for key in ("mean", "std"):
        stats = data.get(key)
        if stats is not None and len(stats) != data.in_channels:
            one = "[0.5]" if key == "mean" else "[0.25]"
            raise InputError(
                f"data.{key} has {len(stats)} values but data.in_channels={data.in_channels}: "
                f"give one per channel (e.g. data.{key}={one} for grey images, or the "
                "dataset's own statistics from src/data_stats.py)"
            )
    weights = data.get("class_weights")
    if weights is not None and len(weights) != data.num_classes:
        raise InputError(
            f"data.class_weights has {len(weights)} values but data '{data.name}' has "
            f"num_classes={data.num_classes}: give one weight per class (src/data_stats.py "
            "prints them) or data.class_weights=null"
        )
    cin = net.get("in_channels")
    if cin is not None and cin != data.in_channels:
        raise InputError(
            f"model.net.in_channels={cin} but data '{data.name}' has in_channels="
            f"{data.in_channels}; remove the override"
        )


@rank_zero_only
def print_config_tree(cfg: DictConfig, save_to: str | Path | None = None) -> None:
    """Prints the resolved config as a rich tree (one branch per group) and saves it."""
    tree = Tree("config", guide_style="dim")
    for key, value in cfg.items():
        if key == "hydra":
            continue
        branch = tree.add(str(key), style="bold")
        text = (
            OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        )
        branch.add(Syntax(text.rstrip(), "yaml", theme="ansi_dark", word_wrap=True))
    Console().print(tree)
    if save_to is not None:
        path = Path(save_to)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as f:
            Console(file=f, width=120, color_system=None).print(tree)
