"""What ``src/calibrate.py`` runs: temperature scaling of a semantic checkpoint.

The model and data are rebuilt from the checkpoint's saved config as ``eval.py`` rebuilds
them (``seglab.pipeline``'s helpers), the validation split runs under the configured
inference, precision and memory format, and one softmax temperature is fitted on a seeded
uniform sample of at most ``max_pixels`` labelled pixels (all of them when there are fewer).
NLL, ECE and Brier before and after are taken on every labelled pixel of the split, not the
sample: the logits are kept in memory when they fit in ``cache_logits_gb``, else the split
runs a second time. The temperature is saved beside the checkpoint
(``seglab.temperature``), where ``eval.py`` and ``predict.py`` find it (``temperature=auto``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from seglab.calibration import CalibrationStats, fit_temperature, reliability_figure
from seglab.checkpoints import load_checkpoint, module_from_checkpoint
from seglab.config import build
from seglab.errors import InputError, MissingFileError
from seglab.instance_prediction import is_instance_run
from seglab.metrics_output import save_metrics_json
from seglab.module import autocast
from seglab.out_of_memory import explain_oom
from seglab.pipeline import checkpoint_run
from seglab.plotting import pyplot, save_figure
from seglab.temperature import save_calibration

log = logging.getLogger(__name__)

FIGURES = ("before", "after")


class PixelSample:
    """A seeded uniform sample, without replacement, of at most ``size`` labelled pixels'
    logits: every pixel draws a random key and the ``size`` smallest keys are kept (a
    reservoir that needs no pixel count in advance)."""

    def __init__(self, size: int, seed: int, ignore_index: int | None) -> None:
        self.size, self.ignore_index = int(size), ignore_index
        self.generator = torch.Generator().manual_seed(int(seed))
        self.keys = torch.empty(0)
        self.logits: torch.Tensor | None = None
        self.labels = torch.empty(0, dtype=torch.long)

    def add(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """``logits`` (N, C, H, W) and ``target`` (N, H, W), on the CPU."""
        classes = max(2, logits.shape[1])  # a one-channel net has two classes
        valid = (target >= 0) & (target < classes)
        if self.ignore_index is not None:
            valid &= target != self.ignore_index
        z = logits.permute(0, 2, 3, 1)[valid]
        y = target[valid].long()
        keys = torch.rand(y.shape[0], generator=self.generator)
        if self.keys.numel() >= self.size:  # full: only keys below the largest kept can enter
            below = keys < self.keys.max()
            z, y, keys = z[below], y[below], keys[below]
        kept = z if self.logits is None else torch.cat([self.logits, z])
        self.labels, self.keys = torch.cat([self.labels, y]), torch.cat([self.keys, keys])
        self.logits = kept
        if self.keys.numel() > self.size:
            keep = self.keys.topk(self.size, largest=False).indices
            self.logits, self.labels, self.keys = kept[keep], self.labels[keep], self.keys[keep]


def _check_writable_beside(ckpt_path: Path) -> None:
    """The temperature is written beside the checkpoint: a folder that cannot be written
    stops the run before the validation pass, not after it."""
    if not ckpt_path.is_file():
        raise MissingFileError(f"checkpoint {ckpt_path} does not exist; pass ckpt_path=<file.ckpt>")
    folder = ckpt_path.resolve().parent
    try:
        fd, probe = tempfile.mkstemp(prefix=".seglab-write-check-", dir=folder)
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise InputError(
            f"cannot write the fitted temperature beside the checkpoint: the folder {folder} "
            f"is not writable ({err.strerror or err}). Copy the checkpoint into a writable "
            "folder and pass ckpt_path=<the copy>"
        ) from None


def _device(run: DictConfig) -> torch.device:
    """The GPU when there is one and the run's trainer does not ask for the CPU."""
    on_cpu = str(run.trainer.get("accelerator", "auto")) == "cpu"
    return torch.device("cuda" if torch.cuda.is_available() and not on_cpu else "cpu")


class SplitLogits:
    """The validation split's (logits, target) batches on the CPU, as often as iterated: the
    first pass runs the model (batches as the validation loader gives them, so
    ``data.on_bad_sample`` acts as in validation); later passes replay the logits kept from
    it when they fit in ``cache_gb`` GiB, else run the model again."""

    def __init__(
        self, module: Any, datamodule: Any, device: torch.device, precision: str, cache_gb: float
    ) -> None:
        self.module, self.datamodule, self.device = module, datamodule, device
        self.precision, self.limit = precision, cache_gb * 2**30
        self.cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.cache is not None:
            yield from self.cache
            return
        kept: list | None = []
        used = 0
        for batch in self.datamodule.val_dataloader():
            x = batch["image"].to(self.device)
            with torch.no_grad(), autocast(self.precision, self.device):
                logits = self.module.inferer(self.module.logits, x)
            item = (logits.float().cpu(), batch["mask"].cpu())
            if kept is not None:
                used += item[0].numel() * 4 + item[1].numel() * item[1].element_size()
                if used <= self.limit:
                    kept.append(item)
                else:
                    kept = None
            yield item
        self.cache = kept  # only after a whole pass
        if kept is None:
            log.info("the logits exceed cache_logits_gb: the split runs a second time")


def _print_table(report: dict[str, Any]) -> None:
    table = Table(title=f"calibration ({report['pixels']} val pixels)")
    for name, justify in (("", "left"), ("before", "right"), ("after", "right")):
        table.add_column(name, justify=justify)
    table.add_row("temperature", "1", f"{report['temperature']:.4f}")
    for name, label in (("nll", "NLL"), ("ece", "ECE"), ("brier", "Brier")):
        table.add_row(label, f"{report['before'][name]:.4f}", f"{report['after'][name]:.4f}")
    Console().print(table)


@explain_oom
def calibrate(cfg: DictConfig) -> dict[str, Any]:
    """Fits the checkpoint's softmax temperature on the validation split, writes
    ``calibration.json`` and the reliability diagrams into the run folder and the
    temperature beside the checkpoint; returns the report."""
    ckpt_path = Path(cfg.ckpt_path)
    _check_writable_beside(ckpt_path)
    max_pixels = int(cfg.get("max_pixels", 2_000_000))
    cache_gb = float(cfg.get("cache_logits_gb", 2.0))
    if max_pixels < 1:
        raise InputError(f"max_pixels must be a positive integer, got {max_pixels}")
    ckpt = load_checkpoint(ckpt_path)
    if is_instance_run(ckpt["seglab_config"]):
        raise InputError(
            f"{ckpt_path} is a Mask R-CNN (task=instance) checkpoint; calibrate.py fits the "
            "softmax temperature of semantic segmentation checkpoints only"
        )
    run, out_dir = checkpoint_run(cfg, ckpt)
    datamodule = build(run.data)
    datamodule.prepare_data()
    datamodule.setup("validate")
    module, run = module_from_checkpoint(ckpt, run, path=cfg.ckpt_path)
    del ckpt
    device = _device(run)
    module.to(device).eval()
    precision = str(cfg.get("precision") or run.trainer.get("precision", "32-true"))
    bins = int(OmegaConf.select(cfg, "evaluation.calibration_bins", default=15))
    ignore = module.ignore_index

    module.temperature = 1.0  # the raw logits are what is calibrated
    split = SplitLogits(module, datamodule, device, precision, cache_gb)
    seed = int(cfg.get("seed") or 0)  # null: 0 (the sample is always seeded)
    sample = PixelSample(max_pixels, seed, ignore)
    before = CalibrationStats(module.num_classes, ignore, bins)
    for logits, target in split:
        before.update(logits, target)
        sample.add(logits, target)
    if sample.logits is None or not sample.labels.numel():
        raise InputError("the validation split has no labelled pixel: nothing to calibrate on")
    temperature = fit_temperature(sample.logits, sample.labels)
    if not 0.0101 < temperature < 99:  # fit_temperature searches [0.01, 100]
        log.warning(
            "the fitted temperature %.4g is at the end of the range searched: the model's "
            "validation predictions are %s; a model trained longer calibrates meaningfully",
            temperature,
            "no better than chance" if temperature > 1 else "almost never wrong",
        )
    after = CalibrationStats(module.num_classes, ignore, bins)
    for logits, target in split:
        after.update(logits, target, temperature)
    datamodule.teardown("validate")  # logs the bad samples skipped, if any

    figures = {"before": before.compute(), "after": after.compute()}
    summary = {f"{k}_{when}": figures[when][k] for k in ("nll", "ece", "brier") for when in FIGURES}
    report = {
        "temperature": temperature,
        "checkpoint": str(ckpt_path),
        "split": "val",
        "pixels": figures["before"]["pixels"],
        "fit_pixels": int(sample.labels.numel()),
        "max_pixels": max_pixels,
        "seed": seed,
        "bins": bins,
        "precision": precision,
        "inference": OmegaConf.to_container(run.inference, resolve=True),
        **summary,
        **figures,
    }
    _print_table(report)
    save_metrics_json(out_dir / "calibration.json", report)
    plt = pyplot()
    for when in FIGURES:
        title = f"{when} temperature scaling (T = {1.0 if when == 'before' else temperature:.3f})"
        save_figure(
            plt, reliability_figure(figures[when], title), out_dir / f"reliability_{when}.png"
        )
    keep = {k: v for k, v in report.items() if k not in ("checkpoint", *FIGURES)}
    beside = save_calibration(ckpt_path, temperature, {**keep, "run_dir": str(out_dir)})
    log.info("temperature %.4f written to %s; report in %s", temperature, beside, out_dir)
    return report
