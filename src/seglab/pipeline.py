"""What the entry scripts run: ``train``, ``evaluate`` and ``predict`` on a composed config.

Kept out of the scripts so that tests call them in-process on composed configs, as the
lightning-hydra-template does.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from seglab import allocator, guards, provenance
from seglab.checkpoints import load_checkpoint
from seglab.config import build, check_config, plain, print_config_tree
from seglab.data.datamodule import worker_init
from seglab.instantiators import build_module, instantiate_all, run_callbacks
from seglab.module import SegmentationModule, autocast, logits_to_labels
from seglab.reporting import print_metrics_table, save_metrics_json

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
            from seglab.instance import print_instance_table

            print_instance_table(metrics, class_names, stage)
        print_metrics_table(metrics, class_names, stage)
    path = save_metrics_json(out / "metrics.json", metrics)
    log.info("metrics written to %s", path)


def _stage_metrics(module: SegmentationModule, trainer: L.Trainer, stage: str) -> dict:
    out = {k: v for k, v in module.last_results.items() if k.startswith(f"{stage}/")}
    loss = trainer.callback_metrics.get(f"{stage}/loss")
    if loss is not None:
        out[f"{stage}/loss"] = float(loss)
    out[f"{stage}/confusion_matrix"] = module.last_confmat[stage].tolist()
    return out


def _sigterm_exit_status(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Lightning stops on SIGTERM with ``SIGTERMException``, a ``SystemExit`` without a code
    (exit status 0), so a preempted run would look finished to a job scheduler: exit like a
    process killed by SIGTERM instead (128 + 15), after ``InterruptCheckpoint`` saved.
    Likewise Ctrl+C (SIGINT) exits with 130 (128 + 2), not Lightning's 1."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SIGTERMException:
            raise SystemExit(143) from None
        except KeyboardInterrupt:  # outside fit / validate / test (e.g. building the data)
            raise SystemExit(130) from None
        except SystemExit as err:
            # Lightning turns Ctrl+C (KeyboardInterrupt) into sys.exit(1), after
            # InterruptCheckpoint saved: exit like a process stopped by SIGINT (128 + 2).
            if err.code == 1 and isinstance(err.__context__, KeyboardInterrupt):
                raise SystemExit(130) from None
            raise

    return wrapped


@_sigterm_exit_status
@guards.explain_oom
def train(cfg: DictConfig) -> dict[str, Any]:
    """Fits, then evaluates the best checkpoint on val (and test when the data has one);
    returns the final metrics, also written to ``metrics.json`` in the run folder."""
    check_config(cfg)
    if cfg.get("malloc_keep_freed"):
        allocator.keep_freed_memory()
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    out_dir = Path(cfg.paths.output_dir)
    print_config_tree(cfg, out_dir / "config_tree.log")
    provenance.save(out_dir, cfg.get("seed"))

    # Resuming: the checkpoint must hold this model and these classes (checked before the
    # data and the trainer are built; Lightning loads the file again to resume).
    resume = load_checkpoint(cfg.ckpt_path) if cfg.get("ckpt_path") else None
    if resume is not None:
        guards.check_checkpoint_data(resume, cfg.ckpt_path, cfg.data, "resume")
    datamodule = build(cfg.data)
    module = build_module(cfg, from_checkpoint=bool(cfg.get("ckpt_path")))
    if resume is not None:
        guards.check_checkpoint_fits(module.net, resume, cfg.ckpt_path, plain(cfg), "resume")
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
    stages = ["val"]
    if cfg.get("test", True) and datamodule.has_test:
        trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
        metrics.update(_stage_metrics(module, trainer, "test"))
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
    return metrics


def _hparams(cfg: DictConfig) -> dict[str, Any]:
    """The hyperparameters worth comparing runs by, for TensorBoard's HPARAMS tab."""
    c = plain(cfg)
    return {
        "model": c["model"]["net"]["_target_"].rsplit(".", 1)[-1],
        "data": c["data"]["name"],
        "loss": c["loss"]["_target_"].rsplit(".", 1)[-1],
        "optimizer": c["optimizer"]["_target_"].rsplit(".", 1)[-1],
        "lr": c["optimizer"].get("lr"),
        "weight_decay": c["optimizer"].get("weight_decay"),
        "batch_size": c["data"]["batch_size"],
        "max_epochs": c["trainer"].get("max_epochs"),
        "precision": str(c["trainer"].get("precision")),
        "train_trunk": c["model"].get("train_trunk"),
        "seed": c.get("seed"),
    }


def _saved_config(cfg: DictConfig, ckpt: dict[str, Any]) -> DictConfig:
    """The training run's config, with this command's ``data`` / ``trainer`` values on top."""
    saved = OmegaConf.create(ckpt["seglab_config"])
    with open_dict(saved):
        if cfg.get("data"):
            saved.data = OmegaConf.merge(saved.data, cfg.data)
        trainer = {k: v for k, v in saved.trainer.items() if k in EVAL_TRAINER_KEYS}
        saved.trainer = OmegaConf.merge(trainer, cfg.get("trainer") or {})
        if cfg.get("inference"):  # this command's choice, not the training run's
            saved.inference = cfg.inference
    return saved


@_sigterm_exit_status
@guards.explain_oom
def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Rebuilds the model from the checkpoint's own config and evaluates ``cfg.split``."""
    if cfg.split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {cfg.split!r}")
    ckpt = load_checkpoint(cfg.ckpt_path)
    run = _saved_config(cfg, ckpt)
    guards.check_checkpoint_data(ckpt, cfg.ckpt_path, run.data, "evaluate")
    out_dir = Path(cfg.paths.output_dir)
    print_config_tree(run, out_dir / "config_tree.log")
    provenance.save(out_dir, run.get("seed"))
    datamodule = build(run.data)
    if cfg.split == "test" and not datamodule.has_test:
        raise ValueError(f"data '{run.data.name}' has no test split; use split=val")
    module = build_module(run, from_checkpoint=True)
    guards.check_checkpoint_fits(module.net, ckpt, cfg.ckpt_path, plain(run), "evaluate")
    module.load_state_dict(ckpt["state_dict"])
    callbacks = run_callbacks(cfg)
    trainer: L.Trainer = instantiate(
        run.trainer, logger=False, callbacks=callbacks, default_root_dir=str(out_dir)
    )
    run_eval = trainer.validate if cfg.split == "val" else trainer.test
    run_eval(module, datamodule=datamodule, verbose=False)
    metrics = _stage_metrics(module, trainer, cfg.split)
    _report(metrics, module.class_names, [cfg.split], out_dir)
    return metrics


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def _list_images(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    raise FileNotFoundError(f"input {path} does not exist; pass input=<image or folder>")


def _as_is(item: Any) -> Any:
    return item


class _ImageFiles(torch.utils.data.Dataset):
    """Reads and normalises one image per item (in DataLoader workers); an unreadable file
    gives its error instead, so that one bad file does not stop the others."""

    def __init__(self, paths: list[Path], grey: bool, mean: Sequence, std: Sequence) -> None:
        self.paths, self.grey = paths, grey
        self.mean, self.std = np.asarray(mean, np.float32), np.asarray(std, np.float32)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, Any, Any]:
        from seglab.data.readers import read_image  # the datasets' rules (16-bit, alpha)

        try:
            image = read_image(self.paths[i], 1 if self.grey else 3)
        except Exception as err:  # reported by predict, after the others
            return i, None, err
        x = torch.from_numpy(((image / 255.0 - self.mean) / self.std).astype(np.float32))
        return i, image, x.permute(2, 0, 1)


Labeller = Callable[[torch.Tensor], np.ndarray]


def _checkpoint_labeller(cfg: DictConfig) -> tuple[dict[str, Any], Labeller]:
    """The data facts and an image batch -> class ids function from a checkpoint."""
    ckpt = load_checkpoint(cfg.ckpt_path)
    run = OmegaConf.create(ckpt["seglab_config"])
    if cfg.get("inference"):
        with open_dict(run):
            run.inference = cfg.inference
    module = build_module(run, from_checkpoint=True)
    module.load_state_dict(ckpt["state_dict"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    module.to(device).eval()
    precision = str(cfg.get("precision") or run.trainer.get("precision", "32-true"))

    def to_labels(x: torch.Tensor) -> np.ndarray:
        x = x.to(device)
        with torch.no_grad(), autocast(precision, device):
            return logits_to_labels(module.inferer(module.logits, x)).cpu().numpy()

    to_labels.run, to_labels.precision = plain(run), precision  # for an out-of-memory error
    return OmegaConf.to_container(run.data, resolve=True), to_labels


def _onnx_labeller(cfg: DictConfig) -> tuple[dict[str, Any], Labeller]:
    """The same from an ONNX file written by ``export.py`` (its metadata holds the data
    facts); onnxruntime runs in fp32 under the configured inference (slide, TTA)."""
    from seglab.export import onnx_predictor, read_onnx_metadata
    from seglab.inference import Inferer

    data = read_onnx_metadata(cfg.onnx_path)
    inference = cfg.get("inference")
    inferer = Inferer(**(OmegaConf.to_container(inference, resolve=True) if inference else {}))
    predict = onnx_predictor(cfg.onnx_path)

    def to_labels(x: torch.Tensor) -> np.ndarray:
        return logits_to_labels(inferer(predict, x)).numpy()

    return data, to_labels


def predict(cfg: DictConfig) -> list[Path]:
    """Writes a palette PNG mask (``<name>.png``, pixel values are class ids) and an overlay
    (``<name>_overlay.png``) for every image under ``cfg.input``, at the image's own size.
    Images are read by ``cfg.num_workers`` workers and run ``cfg.batch_size`` at a time
    (images of equal size share a batch), with the configured inference."""
    from PIL import Image
    from rich.progress import Progress

    from seglab.visualize import overlay

    if cfg.get("onnx_path") and cfg.get("ckpt_path"):
        raise ValueError("pass either ckpt_path=<file.ckpt> or onnx_path=<file.onnx>, not both")
    if cfg.get("ckpt_path"):  # an instance-segmentation checkpoint: its own outputs
        from seglab import instance

        if instance.is_instance_run(load_checkpoint(cfg.ckpt_path)["seglab_config"]):
            return instance.predict(cfg)
    if cfg.get("onnx_path"):
        data, to_labels = _onnx_labeller(cfg)
    elif cfg.get("ckpt_path"):
        data, to_labels = _checkpoint_labeller(cfg)
    else:
        raise ValueError(
            "nothing to predict with: pass ckpt_path=<file.ckpt> or onnx_path=<file.onnx>"
        )
    in_root = Path(cfg.input)
    paths = _list_images(in_root)

    palette = [list(c) for c in data["palette"]]
    flat_palette = [v for c in palette for v in c]
    out_root = Path(cfg.output)
    out_root.mkdir(parents=True, exist_ok=True)
    written, failed = [], []

    def write(i: int, image: np.ndarray, labels: np.ndarray) -> None:
        path = paths[i]
        rel = path.relative_to(in_root).with_suffix("") if in_root.is_dir() else Path(path.stem)
        target = out_root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        mask = Image.fromarray(labels.astype(np.uint8), mode="P")
        mask.putpalette(flat_palette)
        mask.save(target.with_name(target.name + ".png"))
        rgb = image if image.shape[2] == 3 else np.repeat(image, 3, axis=2)
        Image.fromarray(
            overlay(rgb, labels, palette, cfg.get("alpha", 0.5), data["ignore_index"])
        ).save(target.with_name(target.name + "_overlay.png"))
        written.append(target.with_name(target.name + ".png"))

    def run_batch(items: list[tuple[int, np.ndarray, torch.Tensor]]) -> None:
        x = torch.stack([t for _, _, t in items])
        try:
            labels = to_labels(x)
        except Exception as err:  # out of memory: say on what and what to lower
            step = {"stage": "prediction", "shape": tuple(x.shape), "batch_size": batch_size}
            step["run"] = getattr(to_labels, "run", {})  # the checkpoint's config
            step["precision"] = getattr(to_labels, "precision", "32-true (ONNX)")
            guards.raise_if_oom(err, step)
            raise
        for (i, image, _), lab in zip(items, labels, strict=True):
            write(i, image, lab)

    workers = int(cfg.get("num_workers", 0))
    loader = torch.utils.data.DataLoader(
        _ImageFiles(paths, data["in_channels"] == 1, data["mean"], data["std"]),
        batch_size=None,
        collate_fn=_as_is,  # keep the numpy image as it is
        num_workers=workers,
        worker_init_fn=worker_init if workers else None,
    )
    batch_size = max(1, int(cfg.get("batch_size", 1)))
    pending: dict[tuple, list] = {}  # images waiting for a full batch, by size
    with Progress(disable=not cfg.get("progress", True)) as progress:
        task = progress.add_task("predicting", total=len(paths))
        for i, image, x in loader:
            if image is None:
                failed.append((paths[i], x))
                progress.advance(task)
                continue
            group = pending.setdefault(tuple(x.shape), [])
            group.append((i, image, x))
            if len(group) == batch_size:
                run_batch(pending.pop(tuple(x.shape)))
                progress.advance(task, batch_size)
        for group in pending.values():
            run_batch(group)
            progress.advance(task, len(group))
    log.info("wrote %d masks and overlays to %s", len(written), out_root)
    for path, err in failed:
        log.error("could not read %s: %s", path, err)
    if failed:
        log.error(
            "%d of %d files could not be read (listed above)",
            len(failed),
            len(failed) + len(written),
        )
    return written
