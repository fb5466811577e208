"""``predict``: what ``src/predict.py`` runs. Picks the prediction for what it is given: a
semantic checkpoint or an ONNX file (masks and overlays), or an instance checkpoint
(instance overlays)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from seglab.checkpoints import load_checkpoint
from seglab.instance_prediction import is_instance_run, predict_instances
from seglab.semantic_prediction import checkpoint_labeller, onnx_labeller, predict_semantic


def predict(cfg: DictConfig) -> list[Path]:
    """Predicts every image under ``cfg.input`` with ``cfg.ckpt_path`` or ``cfg.onnx_path``
    into ``cfg.output``, with the configured inference; returns the files written (masks,
    or instance overlays)."""
    if cfg.get("onnx_path") and cfg.get("ckpt_path"):
        raise ValueError("pass either ckpt_path=<file.ckpt> or onnx_path=<file.onnx>, not both")
    if cfg.get("onnx_path"):
        return predict_semantic(cfg, *onnx_labeller(cfg))
    if not cfg.get("ckpt_path"):
        raise ValueError(
            "nothing to predict with: pass ckpt_path=<file.ckpt> or onnx_path=<file.onnx>"
        )
    ckpt = load_checkpoint(cfg.ckpt_path)
    if is_instance_run(ckpt["seglab_config"]):
        return predict_instances(cfg, ckpt)
    return predict_semantic(cfg, *checkpoint_labeller(cfg, ckpt))
