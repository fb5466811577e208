"""What ``src/train.py`` and ``src/eval.py`` run: ``train`` and ``evaluate`` on a composed config.

Kept out of the scripts so that tests call them in-process on composed configs, as the
lightning-hydra-template does. Prediction is ``seglab.prediction``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from seglab import allocator, provenance
from seglab.calibration import reliability_figure
from seglab.checkpoint_checks import check_checkpoint_data, check_checkpoint_fits
from seglab.checkpoints import load_checkpoint, module_from_checkpoint
from seglab.coco_eval import print_ap_table
from seglab.config import build, check_config, plain, print_config_tree
from seglab.data.conventions import infer_num_classes
from seglab.errors import InputError
from seglab.instantiators import build_module, instantiate_all, run_callbacks
from seglab.metrics import trivial_baselines
from seglab.metrics_output import print_metrics_table, save_metrics_json
from seglab.out_of_memory import explain_oom
from seglab.per_image import save_per_image
from seglab.plotting import pyplot
from seglab.resume import resolve_resume
from seglab.task_module import TaskModule
from seglab.temperature import resolve_temperature
from seglab.tracking import log_artifacts

log = logging.getLogger(__name__)

# Trainer settings an evaluation inherits from the training run (the rest is fit-only).
# Not num_nodes: a multi-node run's checkpoint is evaluated on one machine unless
# `+trainer.num_nodes=N` says otherwise (N nodes would wait for the others' processes).
EVAL_TRAINER_KEYS = (
    "_target_",
    "accelerator",
    "devices",
    "strategy",
    "precision",
    "deterministic",
)


@rank_zero_only
def _report(metrics: dict, class_names: Sequence[str], stages: Sequence[str], out: Path) -> None:
    for stage in stages:
        if f"{stage}/mask_ap" in metrics:  # task=instance: COCO AP per class first
            print_ap_table(metrics, class_names, stage)
        print_metrics_table(metrics, class_names, stage)
    path = save_metrics_json(out / "metrics.json", metrics)
    log.info("metrics written to %s", path)


def _stage_metrics(module: TaskModule, trainer: L.Trainer, stage: str) -> dict:
    out = {k: v for k, v in module.last_results.items() if k.startswith(f"{stage}/")}
    loss = trainer.callback_metrics.get(f"{stage}/loss")
    if loss is not None:
        out[f"{stage}/loss"] = float(loss)
    confmat = module.last_confmat[stage]
    out[f"{stage}/confusion_matrix"] = confmat.tolist()
    for name, figures in trivial_baselines(confmat).items():
        out.update({f"{stage}/baseline/{name}/{k}": v for k, v in figures.items()})
    reliability = getattr(module, "last_reliability", {}).get(stage)
    if reliability is not None:  # the semantic task's calibration bins
        out[f"{stage}/reliability"] = reliability
    return out


@rank_zero_only
def _stage_files(
    module: TaskModule, stage: str, out: Path, loggers: Sequence[Any] = (), step: int = 0
) -> None:
    """A final evaluation's files in the run folder: ``per_image_<stage>.npz`` and
    ``reliability_<stage>.png`` (also to TensorBoard, for ``loggers`` given)."""
    per_image = getattr(module, "last_per_image", {}).pop(stage, None)
    if per_image is not None:
        path = save_per_image(out / f"per_image_{stage}.npz", *per_image, module.class_names)
        log.info("per-image confusion matrices written to %s", path)
    metrics = module.last_results
    reliability = getattr(module, "last_reliability", {}).get(stage)
    if reliability is None:
        return
    stats = {**reliability, **{k: metrics[f"{stage}/{k}"] for k in ("ece", "nll")}}
    fig = reliability_figure(stats, f"{stage} reliability (temperature {module.temperature:g})")
    fig.savefig(out / f"reliability_{stage}.png", dpi=100)
    boards = [lg for lg in loggers if isinstance(lg, TensorBoardLogger)]
    for lg in boards:
        lg.experiment.add_figure(f"{stage}/reliability", fig, global_step=step, close=False)
    pyplot().close(fig)


@explain_oom
def train(cfg: DictConfig) -> dict[str, Any]:
    """Fits, then evaluates the best checkpoint on val (and test when the data has one);
    returns the final metrics, also written to ``metrics.json`` in the run folder."""
    check_config(cfg)
    resolve_resume(cfg)
    if cfg.get("malloc_keep_freed"):
        allocator.keep_freed_memory()
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    out_dir = Path(cfg.paths.output_dir)

    # Resuming: the checkpoint must hold this model and these classes (checked before the
    # data and the trainer are built; Lightning loads the file again to resume).
    resume = load_checkpoint(cfg.ckpt_path) if cfg.get("ckpt_path") else None
    if resume is not None:
        if cfg.data.get("num_classes") is None:  # a run started with num_classes=null
            infer_num_classes(cfg)
        check_checkpoint_data(resume, cfg.ckpt_path, cfg.data, "resume")
    infer_num_classes(cfg)  # folder data: the masks checked, num_classes=null inferred
    print_config_tree(cfg, out_dir / "config_tree.log")
    provenance.save(out_dir, cfg.get("seed"))
    datamodule = build(cfg.data)
    module = build_module(cfg, from_checkpoint=bool(cfg.get("ckpt_path")))
    if resume is not None:
        check_checkpoint_fits(module.net, resume, cfg.ckpt_path, plain(cfg), "resume")
        del resume
    if module.loaded_weights:
        log.info("initial weights: %s", module.loaded_weights)
    callbacks = run_callbacks(cfg)
    loggers = instantiate_all(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    metrics: dict[str, Any] = {}
    if cfg.get("train", True):
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        best = trainer.callback_metrics.get("val/miou_best")
        if best is not None:
            metrics["val/miou_best"] = float(best)

    ckpt_cb = trainer.checkpoint_callback
    best_path = ckpt_cb.best_model_path if ckpt_cb is not None and cfg.get("train", True) else ""
    ckpt = best_path or None
    if ckpt is None and not cfg.get("train", True):
        ckpt = cfg.get("ckpt_path")
    if ckpt:
        log.info("evaluating checkpoint %s", ckpt)
    trainer.validate(module, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
    metrics.update(_stage_metrics(module, trainer, "val"))
    _stage_files(module, "val", out_dir, trainer.loggers, trainer.global_step)
    stages = ["val"]
    if cfg.get("test", True) and datamodule.has_test:
        trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
        metrics.update(_stage_metrics(module, trainer, "test"))
        _stage_files(module, "test", out_dir, trainer.loggers, trainer.global_step)
        stages.append("test")
    metrics.setdefault("val/miou_best", metrics["val/miou"])
    if best_path:
        metrics["best_checkpoint"] = best_path

    _report(metrics, module.class_names, stages, out_dir)
    for lg in trainer.loggers:
        if isinstance(lg, TensorBoardLogger):
            scalars = {
                f"hp/{k.replace('/', '_')}": v
                for k, v in metrics.items()
                if isinstance(v, float) and k.count("/") == 1
            }
            lg.log_hyperparams(_hparams(cfg), metrics=scalars)
        else:  # MLflow, W&B (and CSV: csv/hparams.yaml)
            lg.log_hyperparams(_hparams(cfg))
    run_files = ["metrics.json", "config_tree.log", ".hydra/config.yaml"]
    log_artifacts(trainer.loggers, [out_dir / name for name in run_files])  # ends a W&B run
    return metrics


def _hparams(cfg: DictConfig) -> dict[str, Any]:
    """The hyperparameters worth comparing runs by, for TensorBoard's HPARAMS tab."""
    c = plain(cfg)
    return {
        "model": c["model"]["net"]["_target_"].rsplit(".", 1)[-1],
        "data": c["data"]["name"],
        "loss": (c.get("loss") or {"_target_": "none"})["_target_"].rsplit(".", 1)[-1],
        "optimizer": c["optimizer"]["_target_"].rsplit(".", 1)[-1],
        "lr": c["optimizer"].get("lr"),
        "weight_decay": c["optimizer"].get("weight_decay"),
        "batch_size": c["data"]["batch_size"],
        "max_epochs": c["trainer"].get("max_epochs"),
        "precision": str(c["trainer"].get("precision")),
        "train_trunk": c["model"].get("train_trunk"),
        "seed": c.get("seed"),
    }


def saved_run_config(cfg: DictConfig, ckpt: dict[str, Any]) -> DictConfig:
    """The training run's config, with this command's ``data`` / ``trainer`` values on top."""
    saved = OmegaConf.create(ckpt["seglab_config"])
    with open_dict(saved):
        if cfg.get("data"):
            saved.data = _data_on_top(saved.data, cfg.data)
        trainer = {k: v for k, v in saved.trainer.items() if k in EVAL_TRAINER_KEYS}
        saved.trainer = OmegaConf.merge(trainer, cfg.get("trainer") or {})
        if cfg.get("inference"):  # this command's choice, not the training run's
            saved.inference = cfg.inference
        if cfg.get("evaluation"):  # the same: what this evaluation computes
            saved.evaluation = cfg.evaluation
    return saved


def _data_on_top(saved: DictConfig, given: DictConfig) -> DictConfig:
    """``given`` (this command's data values) merged over a checkpoint's data config.

    A checkpoint saves its config resolved: the dataset's ``root: ${data.root}`` became the
    training run's path. So a value given for ``data.<key>`` also replaces ``data.dataset.
    <key>`` (root, num_classes, ignore_index, ...) where that held the same saved value,
    unless this command sets ``data.dataset.<key>`` itself: the dataset reads what the user
    names, as in training."""
    merged = OmegaConf.merge(saved, given)
    dataset, own = merged.get("dataset"), given.get("dataset") or {}
    if dataset is None:
        return merged
    for key, value in given.items():
        if key == "dataset" or key not in dataset or key in own:
            continue
        if dataset.get(key) == saved.get(key):
            dataset[key] = value
    return merged


def checkpoint_run(cfg: DictConfig, ckpt: dict[str, Any]) -> tuple[DictConfig, Path]:
    """What a command run on a checkpoint (eval.py, calibrate.py) starts with: the training
    run's config with this command's values on top, checked against the checkpoint, printed
    and saved with the provenance into this command's run folder (returned too)."""
    run = saved_run_config(cfg, ckpt)
    check_checkpoint_data(ckpt, cfg.ckpt_path, run.data, "evaluate")
    out_dir = Path(cfg.paths.output_dir)
    print_config_tree(run, out_dir / "config_tree.log")
    provenance.save(out_dir, run.get("seed"))
    return run, out_dir


@explain_oom
def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Rebuilds the model from the checkpoint's own config and evaluates ``cfg.split``."""
    if cfg.split not in ("val", "test"):
        raise InputError(f"split must be 'val' or 'test', got {cfg.split!r}")
    ckpt = load_checkpoint(cfg.ckpt_path)
    run, out_dir = checkpoint_run(cfg, ckpt)
    datamodule = build(run.data)
    if cfg.split == "test" and not datamodule.has_test:
        raise InputError(f"data '{run.data.name}' has no test split; use split=val")
    module, _ = module_from_checkpoint(ckpt, run, path=cfg.ckpt_path)
    if hasattr(module, "temperature"):  # the semantic task's probabilities
        module.temperature = resolve_temperature(cfg.get("temperature"), cfg.ckpt_path)
    callbacks = run_callbacks(cfg)
    trainer: L.Trainer = instantiate(
        run.trainer, logger=False, callbacks=callbacks, default_root_dir=str(out_dir)
    )
    run_eval = trainer.validate if cfg.split == "val" else trainer.test
    run_eval(module, datamodule=datamodule, verbose=False)
    metrics = _stage_metrics(module, trainer, cfg.split)
    _stage_files(module, cfg.split, out_dir)
    _report(metrics, module.class_names, [cfg.split], out_dir)
    return metrics
