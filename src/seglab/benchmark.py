"""The benchmark behind ``python src/benchmark.py``: what seglab costs over a plain loop.

One fixed batch (from the configured data, after augmentation) feeds both training loops, so
the comparison measures the training step alone: seglab's ``SegmentationModule`` through a
Lightning ``Trainer`` (logging included) against a minimal PyTorch loop with the same model,
loss, optimizer, precision and memory format. The two loops run in alternating rounds
(seglab, plain, plain, seglab, ...), so a shared machine's drifting speed hits both alike, and
the ratio is the geometric median of the per-round ratios. Data loading is timed on its own.
Peak memory is the process's peak RSS on CPU (the kernel's mark is reset before each phase,
after freeing what the previous phase left) and the allocator's peak on CUDA.
"""

from __future__ import annotations

import ctypes
import gc
import json
import math
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, open_dict
from rich.console import Console
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode

from seglab.allocator import keep_freed_memory
from seglab.config import build, print_config_tree
from seglab.module import autocast, split_output
from seglab.optim import param_groups, scale_group_lrs


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _summary(times: list[float], images: int, repeats: int) -> dict[str, float]:
    """Images/s as the median over ``repeats`` equal groups of steps, and the spread
    (max - min) / median between the groups."""
    size = max(1, len(times) // repeats)
    groups = [times[i : i + size] for i in range(0, size * repeats, size)]
    return _median_spread([images * len(g) / sum(g) for g in groups if g])


def _median_spread(rates: list[float]) -> dict[str, float]:
    """The median rate and the spread (max - min) / median."""
    median = statistics.median(rates)
    return {"median": median, "spread": (max(rates) - min(rates)) / median}


def flops_per_image(net: torch.nn.Module, in_channels: int, size: int | list[int]) -> float:
    """Forward FLOPs (a multiply-add counts 2) of one image of ``size`` (side or [h, w])."""
    h, w = (size, size) if isinstance(size, int) else size
    was_training = net.training
    net.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(torch.zeros(1, in_channels, h, w))
    net.train(was_training)
    return float(counter.get_total_flops())


class _StepTimes(Callback):
    def __init__(self, device: torch.device) -> None:
        self.device, self.stamps = device, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        _sync(self.device)
        self.stamps.append(time.perf_counter())


class _SameBatch(torch.utils.data.Dataset):
    """The one benchmark batch, ``n`` times (DataLoader with ``batch_size=None``)."""

    def __init__(self, batch: dict[str, torch.Tensor], n: int) -> None:
        self.batch, self.n = batch, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.batch


def _train_seglab(cfg: DictConfig, batch: dict, steps: int) -> list[float]:
    """seglab's training as ``train.py`` runs it: the module through a Trainer with the run's
    callbacks (progress bar, learning-rate monitor, interrupt checkpoint, ...) and loggers.
    Only the epoch-end checkpoint is left out: it is written after the last timed step."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from seglab.instantiators import build_module, instantiate_all, run_callbacks

    L.seed_everything(0, workers=False, verbose=False)
    module = build_module(cfg)
    timer = _StepTimes(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    callbacks = [c for c in run_callbacks(cfg) if not isinstance(c, ModelCheckpoint)]
    trainer = build(
        cfg.trainer,
        max_steps=steps,
        max_epochs=-1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=instantiate_all(cfg.get("logger")) or False,
        callbacks=[*callbacks, timer],
        enable_checkpointing=False,
        default_root_dir=cfg.paths.output_dir,
    )
    loader = torch.utils.data.DataLoader(_SameBatch(batch, steps), batch_size=None)
    trainer.fit(module, train_dataloaders=loader)
    return [b - a for a, b in zip(timer.stamps, timer.stamps[1:], strict=False)]


def _train_plain(cfg: DictConfig, batch: dict, steps: int) -> list[float]:
    """The reference: the loop anyone would write by hand for the same training."""
    from seglab.instantiators import build_module

    L.seed_everything(0, workers=False, verbose=False)
    module = build_module(cfg)
    net, loss_fn = module.net, module.loss
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net.to(device).train()
    if not module.train_trunk:
        net.encoder.eval()
    fmt = torch.channels_last if module.channels_last else torch.contiguous_format
    optimizer = scale_group_lrs(module.optimizer_factory(param_groups(net, module.lr_mult)))
    schedule = module.scheduler_factory
    scheduler = schedule(optimizer, total_steps=steps) if schedule is not None else None
    precision = str(cfg.trainer.get("precision", "32-true"))
    scaler = torch.amp.GradScaler(enabled=precision.startswith("16") and device.type == "cuda")
    stamps = []
    for _ in range(steps):
        # As a loader's batch would: moved and converted to the memory format every step.
        x = batch["image"].to(device).contiguous(memory_format=fmt)
        y = batch["mask"].to(device)
        with autocast(precision, device):
            logits, aux = split_output(net(x))
            loss = loss_fn(logits, y)
            if aux is not None and module.aux_weight:
                aux = torch.nn.functional.interpolate(aux, size=y.shape[-2:], mode="bilinear")
                loss = loss + module.aux_weight * loss_fn(aux, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()
        _sync(device)
        stamps.append(time.perf_counter())
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)]


def _reset_peak_rss() -> bool:
    """Frees what can be freed and resets the kernel's peak-RSS mark (VmHWM) of this
    process, so the next phase's peak is its own. False where Linux does not allow it."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # return freed heap pages to the OS
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(fn: Callable[..., list[float]], *args: Any) -> tuple[list[float], float]:
    """Runs a training phase in this process and returns (step times, peak memory in MB):
    the allocator's peak on CUDA, the process's peak RSS on CPU. (A forked child would
    isolate memory better, but OpenMP's thread pool deadlocks after fork.)"""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        times = fn(*args)
        return times, torch.cuda.max_memory_allocated() / 2**20
    _reset_peak_rss()
    times = fn(*args)
    return times, _peak_rss_mb()


def _interleaved_training(
    cfg: DictConfig, batch: dict, warmup: int, steps: int, rounds: int
) -> dict[str, dict[str, float]]:
    """Both training loops for ``rounds`` rounds in ABBA order (seglab first in even rounds,
    the plain loop first in odd ones), each phase warmed up and timed on its own. Returns,
    per loop, the median images/s over rounds, their spread and the median peak memory, and
    the median, min and max of the per-round ratio seglab / plain."""
    n = batch["image"].shape[0]
    loops = {"seglab": _train_seglab, "plain": _train_plain}
    rates: dict[str, list[float]] = {"seglab": [], "plain": []}
    peaks: dict[str, list[float]] = {"seglab": [], "plain": []}
    for r in range(rounds):
        for name in ("seglab", "plain") if r % 2 == 0 else ("plain", "seglab"):
            times, peak = _measure(loops[name], cfg, batch, steps)
            timed = times[warmup:]
            rates[name].append(n * len(timed) / sum(timed))
            peaks[name].append(peak)
    out = {
        name: _median_spread(rates[name]) | {"peak_mb": statistics.median(peaks[name])}
        for name in loops
    }
    pairs = list(zip(rates["seglab"], rates["plain"], strict=True))
    ratios = [a / b for a, b in pairs]
    # The median in log space: ratios r and 1/r (an order effect ABBA cancels) give 1.
    median = math.exp(statistics.median(math.log(r) for r in ratios))
    out["ratio"] = {"median": median, "min": min(ratios), "max": max(ratios)}
    # What seglab adds to each step, in ms: the number that stays put across models.
    out["overhead_ms"] = {"median": statistics.median(1e3 * n * (1 / a - 1 / b) for a, b in pairs)}
    return out


def _infer(
    module: torch.nn.Module, x: torch.Tensor, steps: int, warmup: int, precision: str
) -> list[float]:
    device = x.device
    times = []
    with torch.inference_mode(), autocast(precision, device):
        for _ in range(warmup + steps):
            start = time.perf_counter()
            module(x)
            _sync(device)
            times.append(time.perf_counter() - start)
    return times[warmup:]


def _infer_onnx(net: torch.nn.Module, x: torch.Tensor, steps: int, path: Path) -> list[float]:
    import onnxruntime as ort

    from seglab.export import export_onnx

    export_onnx(net, x[:1].cpu(), path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.cpu().float().numpy()}
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return times[1:]


def _metric_update_ms(
    num_classes: int, ignore_index: int, shape: tuple[int, ...], device: torch.device
) -> tuple[float, float]:
    """Median time of one confusion-matrix update (seglab's) and of torchmetrics'
    MulticlassJaccardIndex update, on the same predictions and labels (10 % ignored)."""
    from torchmetrics.classification import MulticlassJaccardIndex

    from seglab.metrics import ConfusionMatrix

    gen = torch.Generator().manual_seed(0)
    preds = torch.randint(0, num_classes, shape, generator=gen).to(device)
    target = torch.randint(0, num_classes, shape, generator=gen)
    target[torch.rand(shape, generator=gen) < 0.1] = ignore_index
    target = target.to(device)
    ours = ConfusionMatrix(num_classes, ignore_index).to(device)
    theirs = MulticlassJaccardIndex(num_classes, ignore_index=ignore_index).to(device)
    result = []
    for metric in (ours, theirs):
        times = []
        for _ in range(12):
            _sync(device)
            start = time.perf_counter()
            metric.update(preds, target)
            _sync(device)
            times.append(time.perf_counter() - start)
        result.append(1000 * statistics.median(times[2:]))
    return result[0], result[1]


def _loader_rate(datamodule: Any, batches: int) -> tuple[float, int]:
    loader = datamodule.train_dataloader()
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    count, start = 0, time.perf_counter()
    for _ in range(batches):
        try:
            count += next(it)["image"].shape[0]
        except StopIteration:
            break
    return count / (time.perf_counter() - start), count


def run(cfg: DictConfig) -> dict[str, Any]:
    """Measures everything listed in the module docstring and writes ``benchmark.json``."""
    bench = cfg.bench
    if cfg.get("malloc_keep_freed"):  # as training does; both loops run under it
        keep_freed_memory()
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    print_config_tree(cfg, out_dir / "config_tree.log")
    if bench.get("batch_size"):
        with open_dict(cfg):
            cfg.data.batch_size = bench.batch_size
    datamodule = build(cfg.data)
    datamodule.setup("fit")
    loader_rate, _ = _loader_rate(datamodule, bench.loader_batches)
    batch = next(iter(datamodule.train_dataloader()))
    batch = {"image": batch["image"], "mask": batch["mask"]}
    n = batch["image"].shape[0]
    steps = bench.warmup + bench.steps
    precision = str(cfg.trainer.get("precision", "32-true"))

    train = _interleaved_training(cfg, batch, bench.warmup, steps + 1, bench.repeats)
    seglab_train, plain_train = train["seglab"], train["plain"]

    from seglab.instantiators import build_module

    module = build_module(cfg).eval()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    module.to(device)
    x = batch["image"].to(device)
    infer = _summary(_infer(module, x, bench.steps, bench.warmup, precision), n, bench.repeats)
    onnx = None
    if bench.onnx:
        net = module.net.cpu().float()
        onnx = _summary(
            _infer_onnx(net, x.cpu(), bench.steps, out_dir / "model.onnx"), n, bench.repeats
        )
    gflops = flops_per_image(module.net.cpu().float(), cfg.data.in_channels, bench.flops_size) / 1e9
    image_size = list(batch["image"].shape[-2:])
    gflops_batch = flops_per_image(module.net, cfg.data.in_channels, image_size) / 1e9

    metric_ms, torchmetrics_ms = _metric_update_ms(
        cfg.data.num_classes, cfg.data.ignore_index, tuple(batch["mask"].shape), device
    )

    result = {
        "model": cfg.model.net._target_.rsplit(".", 1)[-1],
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "precision": precision,
        "channels_last": bool(cfg.model.get("channels_last", False)),
        "batch_size": n,
        "image_size": image_size,
        "params": sum(p.numel() for p in module.net.parameters()),
        "train.rounds": bench.repeats,
        "train.seglab_img_per_s": seglab_train["median"],
        "train.seglab_spread": seglab_train["spread"],
        "train.plain_img_per_s": plain_train["median"],
        "train.plain_spread": plain_train["spread"],
        "train.ratio": train["ratio"]["median"],
        "train.ratio_min": train["ratio"]["min"],
        "train.ratio_max": train["ratio"]["max"],
        "train.overhead_ms_per_step": train["overhead_ms"]["median"],
        "train.seglab_peak_mb": seglab_train["peak_mb"],
        "train.plain_peak_mb": plain_train["peak_mb"],
        "train.memory_ratio": seglab_train["peak_mb"] / plain_train["peak_mb"],
        "infer.img_per_s": infer["median"],
        "infer.spread": infer["spread"],
        "infer.onnx_img_per_s": onnx["median"] if onnx else None,
        "loader.img_per_s": loader_rate,
        "loader.ratio_to_train": loader_rate / seglab_train["median"],
        "gflops_per_img": gflops,
        "metric.update_ms": metric_ms,
        "metric.torchmetrics_update_ms": torchmetrics_ms,
        "gflops_size": bench.flops_size,
        # Training does forward + backward: about 3x the forward FLOPs per image.
        "train.gflop_per_s": 3 * gflops_batch * seglab_train["median"],
    }
    (out_dir / "benchmark.json").write_text(json.dumps(result, indent=2))
    _print(result)
    return result


def _print(r: dict[str, Any]) -> None:
    table = Table(
        title=f"{r['model']}: batch {r['batch_size']} at {r['image_size']}, "
        f"{r['precision']}, {r['device']} ({r['threads']} threads)"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("parameters", f"{r['params'] / 1e6:.2f} M"),
        (f"GFLOPs / image at {r['gflops_size']}x{r['gflops_size']}", f"{r['gflops_per_img']:.1f}"),
        (
            "train img/s: seglab",
            f"{r['train.seglab_img_per_s']:.1f} ±{r['train.seglab_spread']:.0%}",
        ),
        (
            "train img/s: plain loop",
            f"{r['train.plain_img_per_s']:.1f} ±{r['train.plain_spread']:.0%}",
        ),
        (
            "train ratio seglab / plain",
            f"{r['train.ratio']:.3f} (median of {r['train.rounds']} rounds, "
            f"{r['train.ratio_min']:.3f}-{r['train.ratio_max']:.3f})",
        ),
        ("train ms per step seglab adds", f"{r['train.overhead_ms_per_step']:.2f}"),
        (
            "train peak MB: seglab / plain",
            f"{r['train.seglab_peak_mb']:.0f} / {r['train.plain_peak_mb']:.0f}",
        ),
        ("train GFLOP/s achieved", f"{r['train.gflop_per_s']:.1f}"),
        ("inference img/s (eager)", f"{r['infer.img_per_s']:.1f}"),
        (
            "inference img/s (onnxruntime)",
            "-" if r["infer.onnx_img_per_s"] is None else f"{r['infer.onnx_img_per_s']:.1f}",
        ),
        (
            "metric update ms: seglab / torchmetrics",
            f"{r['metric.update_ms']:.2f} / {r['metric.torchmetrics_update_ms']:.2f}",
        ),
        (
            "data loading img/s",
            f"{r['loader.img_per_s']:.0f} ({r['loader.ratio_to_train']:.1f}x training)",
        ),
    ]
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def markdown_table(root: str | Path) -> str:
    """The README's model table from the ``benchmark.json`` files under ``root``."""
    rows = [
        "| model | params (M) | GFLOPs @512 | train img/s | plain img/s | ratio (rounds) | "
        "ms added / step | infer img/s | peak MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for path in sorted(Path(root).glob("*/benchmark.json")):
        r = json.loads(path.read_text())
        rows.append(
            f"| {path.parent.name} | {r['params'] / 1e6:.2f} | {r['gflops_per_img']:.1f} "
            f"| {r['train.seglab_img_per_s']:.2f} | {r['train.plain_img_per_s']:.2f} "
            f"| {r['train.ratio']:.2f} ({r['train.ratio_min']:.2f}-{r['train.ratio_max']:.2f}) "
            f"| {r['train.overhead_ms_per_step']:.1f} | {r['infer.img_per_s']:.2f} "
            f"| {r['train.seglab_peak_mb']:.0f} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":  # python -m seglab.benchmark outputs/bench
    import sys

    print(markdown_table(sys.argv[1]))
