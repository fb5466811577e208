"""The values each config key accepts, checked when a config is read, before anything is
built from it: a bad value would otherwise fail late in a library without naming the key
(PyTorch's "batch_size should be a positive integer value"), or silently (``flip=abc`` is
true). ``check_values`` stops with one message naming each bad key, the value given and what
is allowed: ``data.batch_size=abc: must be a positive integer (e.g. data.batch_size=8)``.

One table, ``RULES`` (full key -> ``Rule``), serves every entry script: keys absent from a
config are skipped; ``*`` matches every child of a mapping (``model.lr_mult.*``). An
interpolated value (``${...}``) is left to the key it comes from (``data.seed: ${seed}`` is
checked as ``seed``), so one mistake is reported once; missing values (``???``) are
``seglab.config.check_config``'s. Booleans are never numbers here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from seglab.config_rules import (
    BATCHES,
    BOOL,
    BOOL_OR_NULL,
    FRACTION,
    MIN_MAX,
    POSITIVE_INT,
    PRECISION,
    SEED,
    SIZES,
    WINDOW,
    Rule,
    choice,
    devices,
    integer,
    is_int,
    is_num,
    make_rule,
    number,
    numbers,
    per_split,
    show,
    val_check,
)
from seglab.data.bad_samples import ON_BAD_SAMPLE
from seglab.errors import InputError
from seglab.task_module import NONFINITE_LOSS_MODES

# A softmax temperature: auto (the fitted one beside the checkpoint), null (1) or T > 0.
TEMPERATURE = make_rule(
    lambda v: v == "auto" or (is_num(v) and v > 0), "auto or a positive number", "auto", True
)
# compare.py's runs: one folder, or a non-empty list of folders.
RUNS = make_rule(
    lambda v: (
        isinstance(v, str) or (isinstance(v, list) and v and all(isinstance(x, str) for x in v))
    ),
    "a run folder or a list of run folders",
    "[outputs/a,outputs/b]",
    False,
)

RULES: dict[str, Rule] = {
    # train.yaml and every script that composes it
    "seed": SEED,
    **dict.fromkeys(("train", "test", "malloc_keep_freed", "auto_resume"), BOOL),
    # data
    "data.batch_size": POSITIVE_INT,
    "data.eval_batch_size": integer(1, example=1),
    "data.num_workers": integer(0, example=4),
    "data.crop_size": integer(1, example=256),
    "data.val_subset": integer(1, example=50, null=True, note=" (validation images)"),
    "data.num_classes": integer(1, example=2, null=True, note=" (null: data=folder infers it)"),
    "data.ignore_index": integer(example=255),
    "data.mean": numbers(number(0, example=0.5), [0.5, 0.5, 0.5]),
    "data.std": numbers(number(0, lo_open=True, example=0.25), [0.25, 0.25, 0.25]),
    "data.class_weights": numbers(number(0, example=1), [1.0, 2.0], null=True),
    "data.seed": SEED,
    "data.pin_memory": BOOL_OR_NULL,
    **dict.fromkeys(("data.persistent_workers", "data.download"), BOOL),
    "data.on_bad_sample": choice(*ON_BAD_SAMPLE),
    "data.instance_min_size": integer(1, example=800),
    "data.instance_max_size": integer(1, example=1333),
    "data.dataset.num_samples": per_split(integer(1, example=100)),
    "data.dataset.min_size": per_split(integer(1, example=48)),
    "data.dataset.max_size": per_split(integer(1, example=64)),
    "data.dataset.max_objects": integer(1, example=3),
    "data.dataset.seed": integer(0, example=0),
    "data.dataset.touching": FRACTION,
    "data.dataset.min_area": number(0, example=16),
    "data.dataset.min_object_area": per_split(number(0, example=1000)),
    "data.dataset.mask_format": choice("auto", "binary", "index", "rgb"),
    "data.dataset.reduce_zero_label": BOOL_OR_NULL,
    "data.dataset.val_fraction": number(0, 1, example=0.2, lo_open=True, hi_open=True),
    "data.dataset.split_seed": integer(0, example=0),
    "data.dataset.scan_masks": integer(1, example=200, null=True, note=" (masks; null: all)"),
    # model
    **dict.fromkeys(
        [
            f"model.{k}"
            for k in ("pretrained", "train_trunk", "channels_last", "compile", "cpu_bf16")
        ],
        BOOL,
    ),
    "model.nonfinite_loss": choice(*NONFINITE_LOSS_MODES),
    "model.aux_weight": number(0, example=0.4),
    "model.lr_mult.*": number(0, example=0.1),
    **dict.fromkeys(("model.mask_threshold", "model.paste_score_thresh"), FRACTION),
    "model.net.num_classes": integer(1, example=2),
    "model.net.dropout": number(0, 1, example=0.1),
    "model.net.depth": integer(1, example=4),
    "model.net.base_channels": integer(1, example=64),
    "model.net.growth_rate": integer(1, example=16),
    "model.net.output_stride": choice(8, 16, 32),
    "model.net.trainable_layers": integer(0, 5, example=3),
    **dict.fromkeys(("model.net.box_score_thresh", "model.net.box_nms_thresh"), FRACTION),
    "model.net.detections_per_img": integer(1, example=100),
    "model.net.box_batch_size_per_image": integer(1, example=512),
    "model.net.min_size": integer(1, example=800),
    "model.net.max_size": integer(1, example=1333),
    # loss
    "loss.label_smoothing": number(0, 1, example=0.1, hi_open=True),
    "loss.smooth": number(0, example=1.0),
    "loss.gamma": number(0, example=2.0),
    "loss.pos_weight": number(0, lo_open=True, example=2.0, null=True),
    "loss.weights": numbers(number(0, example=1), [1.0, 0.5]),
    "loss.thresh": number(0, 1, example=0.7, lo_open=True),
    "loss.min_kept": integer(0, example=100000),
    # optimizer and scheduler
    "optimizer.lr": number(0, lo_open=True, example=0.001),
    "optimizer.weight_decay": number(0, example=0.0001),
    "optimizer.momentum": number(0, 1, hi_open=True, example=0.9),
    "optimizer.nesterov": BOOL,
    "optimizer.eps": number(0, lo_open=True, example=1e-8),
    "scheduler.warmup_steps": integer(0, example=100),
    "scheduler.warmup_ratio": number(0, 1, example=0.1),
    "scheduler.min_lr_ratio": number(0, 1, example=0.0),
    "scheduler.power": number(0, lo_open=True, example=0.9),
    # trainer (Lightning's Trainer arguments)
    "trainer.max_epochs": integer(-1, example=20, null=True, note=" (-1: no limit)"),
    "trainer.min_epochs": integer(0, example=1, null=True),
    "trainer.max_steps": integer(-1, example=1000, note=" (-1: no limit)"),
    "trainer.min_steps": integer(0, example=100, null=True),
    "trainer.devices": Rule(
        devices, "a positive integer, -1 (all), auto, or a list of device indices", "1"
    ),
    "trainer.num_nodes": integer(1, example=1),
    "trainer.precision": PRECISION,
    "trainer.check_val_every_n_epoch": integer(1, example=1, null=True),
    "trainer.val_check_interval": make_rule(
        val_check,
        "an integer >= 1 (training batches), a number in (0.0, 1.0] (a fraction of the "
        "epoch) or a time DD:HH:MM:SS",
        0.5,
        null=True,
    ),
    "trainer.log_every_n_steps": integer(0, example=20),
    "trainer.num_sanity_val_steps": integer(-1, example=2, note=" (-1: all)"),
    **dict.fromkeys(
        [f"trainer.limit_{s}_batches" for s in ("train", "val", "test", "predict")],
        make_rule(BATCHES.ok, BATCHES.allowed, 0.25, null=True),
    ),
    "trainer.overfit_batches": BATCHES,
    "trainer.fast_dev_run": Rule(
        lambda v: isinstance(v, bool) or (is_int(v) and v >= 0),
        "true, false or a number of batches >= 0",
        "true",
    ),
    "trainer.accumulate_grad_batches": integer(1, example=4),
    "trainer.gradient_clip_val": number(0, example=1.0, null=True),
    "trainer.gradient_clip_algorithm": choice("norm", "value", null=True),
    "trainer.deterministic": choice(True, False, "warn", null=True),
    **dict.fromkeys(("trainer.sync_batchnorm", "trainer.detect_anomaly"), BOOL),
    "trainer.reload_dataloaders_every_n_epochs": integer(0, example=0),
    **dict.fromkeys(
        [f"trainer.{k}" for k in ("benchmark", "enable_checkpointing", "enable_progress_bar")]
        + ["trainer.enable_model_summary"],
        BOOL_OR_NULL,
    ),
    # callbacks
    "callbacks.model_checkpoint.save_top_k": integer(-1, example=1, note=" (-1: all)"),
    "callbacks.model_checkpoint.every_n_epochs": integer(0, example=1, null=True),
    "callbacks.model_checkpoint.save_last": choice(True, False, "link", null=True),
    **dict.fromkeys(("callbacks.model_checkpoint.mode", "callbacks.early_stopping.mode"), MIN_MAX),
    "callbacks.early_stopping.patience": integer(0, example=5),
    "callbacks.early_stopping.min_delta": number(0, example=0.001),
    "callbacks.visualizer.num_samples": integer(0, example=6),
    "callbacks.visualizer.every_n_epochs": integer(1, example=1),
    "callbacks.visualizer.alpha": FRACTION,
    "callbacks.model_summary.max_depth": integer(-1, example=2),
    "callbacks.lr_monitor.logging_interval": choice("step", "epoch", null=True),
    "callbacks.memory_trace.every_n_steps": integer(1, example=20),
    "callbacks.ema.decay": number(0, 1, example=0.999, lo_open=True, hi_open=True),
    # inference (validation, test, eval.py, predict.py)
    "inference.mode": choice("whole", "slide"),
    "inference.window": WINDOW,
    "inference.overlap": number(0, 1, hi_open=True, example=0.333),
    "inference.blend": choice("mean", "gaussian"),
    "inference.scales": numbers(number(0, lo_open=True, example=1), [0.75, 1.0, 1.25]),
    "inference.flip": BOOL,
    # the evaluation group (every evaluation: calibration, boundary metrics, per-image files)
    "evaluation.calibration_bins": integer(1, example=15),
    **dict.fromkeys(("evaluation.boundary", "evaluation.per_image"), BOOL),
    "evaluation.boundary_tolerance_px": number(0, example=2),
    "evaluation.boundary_dilation_ratio": number(0, 1, example=0.02, lo_open=True),
    # eval.py, predict.py, calibrate.py
    "temperature": TEMPERATURE,
    "max_pixels": integer(1, example=2000000),
    "cache_logits_gb": number(0, example=2.0),
    # predict.py (and reproduce.py: precision, num_workers; browse.py: alpha)
    "batch_size": POSITIVE_INT,
    "num_workers": integer(0, example=2),
    "alpha": FRACTION,
    "precision": make_rule(PRECISION.ok, PRECISION.allowed, "bf16-mixed", null=True),
    "score_thresh": number(0, 1, example=0.5, null=True),
    **dict.fromkeys(("instance_masks", "progress", "save_probs", "uncertainty"), BOOL),
    "uncertain_above": number(0, 1, example=0.5, null=True),
    "uncertainty_bits": choice(8, 16),
    # browse.py
    "num": integer(1, example=16, null=True),
    "cols": integer(1, example=4),
    **dict.fromkeys(("shuffle", "augment"), BOOL),
    # check_data.py, data_stats.py, memcheck.py
    "check.num_workers": integer(0, example=4, null=True),
    "check.max_listed": integer(0, example=50),
    "check.progress": BOOL,
    "stats.max_images": integer(1, example=100, null=True),
    "stats.batch_size": POSITIVE_INT,
    "memcheck.steps": integer(1, example=2000),
    "memcheck.every_n_steps": integer(1, example=20),
    "memcheck.warmup_steps": integer(0, example=200),
    "memcheck.max_growth_mb": number(0, example=25),
    # benchmark.py
    "bench.warmup": integer(0, example=5),
    "bench.steps": integer(1, example=12),
    "bench.repeats": integer(1, example=4),
    "bench.batch_size": integer(1, example=8, null=True),
    "bench.loader_batches": integer(1, example=30),
    "bench.flops_size": integer(1, example=512),
    "bench.onnx": BOOL,
    # export.py
    "opset": integer(1, example=17),
    "sample_size": SIZES,
    "check_size": SIZES,
    "tolerance": number(0, example=0.001),
    # compare.py; split also eval.py's (val | test) and browse.py's (train too), each script
    # checking its own choices
    "runs": RUNS,
    "split": choice("auto", "train", "val", "test"),
    "resamples": integer(1, example=1000),
    "confidence": number(0, 1, example=0.95, lo_open=True, hi_open=True),
    # reproduce.py
    "budget": number(0, lo_open=True, example=1.0),
    "grid_images": integer(0, example=4),
}


def _values(node: DictConfig, parts: list[str], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(full key, plain value) of each key under ``node`` that ``parts`` names, skipping keys
    that are absent, missing (``???``), interpolated or that do not resolve."""
    head, rest = parts[0], parts[1:]
    for name in list(node.keys()) if head == "*" else [head]:
        if name not in node or OmegaConf.is_interpolation(node, str(name)):
            continue  # ``in`` is false for a missing value
        key = f"{prefix}{name}"
        try:
            child = node[name]
            if OmegaConf.is_config(child) and not rest:
                child = OmegaConf.to_container(child, resolve=True)
        except OmegaConfBaseException:
            continue
        if not rest:
            yield key, child
        elif isinstance(child, DictConfig):
            yield from _values(child, rest, f"{key}.")


def problems(cfg: DictConfig) -> list[str]:
    """One line per value of ``cfg`` that its rule in ``RULES`` refuses."""
    found = []
    for pattern, rule in RULES.items():
        for key, value in _values(cfg, pattern.split(".")):
            if not rule.ok(value):
                found.append(
                    f"{key}={show(value)}: must be {rule.allowed} (e.g. {key}={rule.example})"
                )
    return found


def check_values(cfg: DictConfig) -> None:
    """Raises one ``InputError`` listing every bad value of ``cfg``; call it first, before
    anything is built from the config."""
    found = problems(cfg)
    if len(found) == 1:
        raise InputError(found[0])
    if found:
        raise InputError(f"{len(found)} config values are not valid:\n  " + "\n  ".join(found))
