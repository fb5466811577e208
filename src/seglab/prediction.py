"""``predict``: what ``src/predict.py`` runs. Picks the prediction for what it is given: a
semantic checkpoint or an ONNX file (masks and overlays), or an instance checkpoint
(instance overlays). Everything that can be checked without the model (the model file is
there, the input holds images, no two outputs are one file, the output folder is writable)
is checked before the model is loaded, so that a mistake costs seconds, not a model load and
a first batch."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from seglab.checkpoints import load_checkpoint
from seglab.errors import InputError, MissingFileError
from seglab.export import read_onnx_metadata
from seglab.instance_prediction import is_instance_run, predict_instances
from seglab.prediction_io import INSTANCE_MASKS, OutputPlan, check_writable, plan_outputs
from seglab.semantic_prediction import (
    checkpoint_scorer,
    onnx_scorer,
    predict_semantic,
    semantic_outputs,
)


def _model_file(cfg: DictConfig) -> tuple[str, Path]:
    """Which of ``ckpt_path`` / ``onnx_path`` is given, and its file, which must exist."""
    if cfg.get("onnx_path") and cfg.get("ckpt_path"):
        raise InputError("pass either ckpt_path=<file.ckpt> or onnx_path=<file.onnx>, not both")
    key = "onnx_path" if cfg.get("onnx_path") else "ckpt_path"
    if not cfg.get(key):
        raise InputError(
            "nothing to predict with: pass ckpt_path=<file.ckpt> or onnx_path=<file.onnx>"
        )
    path = Path(cfg[key])
    if not path.is_file():
        kind = "ONNX model" if key == "onnx_path" else "checkpoint"
        ext = "onnx" if key == "onnx_path" else "ckpt"
        raise MissingFileError(f"{kind} {path} does not exist; pass {key}=<file.{ext}>")
    return key, path


def plan_run(cfg: DictConfig, semantic_only: bool) -> OutputPlan:
    """The inputs and every output of the run, checked, and the folders written to, checked
    writable. A checkpoint's kind (semantic or instance) is known only once it is loaded, so
    for one the names of both kinds' outputs are planned (``semantic_only``: an ONNX file)."""
    out_root = Path(cfg.output)
    folders, others = [], {}
    if not semantic_only:  # what an instance checkpoint writes besides the overlays
        folders = [INSTANCE_MASKS] if cfg.get("instance_masks", False) else []
        others = {"coco_json": Path(cfg.coco_json)} if cfg.get("coco_json") else {}
    endings = semantic_outputs(cfg)  # mask, overlay (+ probabilities, uncertainty maps)
    plan = plan_outputs(Path(cfg.input), out_root, endings, folders, others)
    check_writable(out_root)
    if "coco_json" in others:
        check_writable(others["coco_json"].parent, "coco_json", "a file in a writable folder")
    return plan


def predict(cfg: DictConfig) -> list[Path]:
    """Predicts every image under ``cfg.input`` with ``cfg.ckpt_path`` or ``cfg.onnx_path``
    into ``cfg.output``, with the configured inference; returns the files written (masks,
    or instance overlays). Raises ``InputError`` when an input could not be read, after
    writing the others' outputs."""
    key, model_file = _model_file(cfg)
    if key == "onnx_path":
        data = read_onnx_metadata(model_file)  # cheap; refuses an ONNX file without metadata
        plan = plan_run(cfg, semantic_only=True)
        return predict_semantic(cfg, plan, onnx_scorer(cfg, data))
    plan = plan_run(cfg, semantic_only=False)
    ckpt = load_checkpoint(model_file)
    if is_instance_run(ckpt["seglab_config"]):
        wanted = [k for k in ("save_probs", "uncertainty") if cfg.get(k, False)]
        if wanted:
            raise InputError(
                f"{' and '.join(wanted)} are for semantic checkpoints; {model_file} is a "
                f"Mask R-CNN (task=instance) checkpoint: leave {'/'.join(wanted)} out"
            )
        return predict_instances(cfg, plan, ckpt)
    return predict_semantic(cfg, plan, checkpoint_scorer(cfg, ckpt))
