"""Config -> objects: the LightningModule, the callbacks and the loggers of a run.

Every command (train, eval, predict, export, benchmark, reproduce) builds through here, so
a run is assembled the same way wherever it starts.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from seglab import guards
from seglab.config import build, plain
from seglab.module import SegmentationModule


def build_module(cfg: DictConfig, from_checkpoint: bool = False) -> SegmentationModule:
    """The LightningModule for ``cfg.model`` with loss / optimizer / scheduler from their
    groups and the data facts (classes, ignore index, channels) from ``cfg.data``.
    ``from_checkpoint``: a checkpoint's weights follow, so pretrained weights are not loaded."""
    data = cfg.data
    scheduler = cfg.get("scheduler")
    start = {"pretrained": False, "weights_path": None} if from_checkpoint else {}
    inference = cfg.get("inference")
    module = build(
        cfg.model,
        **start,
        inference=OmegaConf.to_container(inference, resolve=True) if inference else None,
        loss=instantiate(cfg.loss),
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(scheduler) if scheduler and "_target_" in scheduler else None,
        num_classes=data.num_classes,
        class_names=list(data.class_names),
        ignore_index=data.ignore_index,
        in_channels=data.in_channels,
    )
    # Set after instantiation: it holds `_target_`s that instantiate would try to build.
    module.run_config = plain(cfg)
    return module


def instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiates every entry of a callbacks / logger group (entries without a
    ``_target_`` are skipped, so an entry can be disabled with ``callbacks.x=null``)."""
    if not group:
        return []
    return [instantiate(c) for c in group.values() if c is not None and "_target_" in c]


def run_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """The callbacks group of ``cfg``, and the step recorder that out-of-memory errors read."""
    return [*instantiate_all(cfg.get("callbacks")), guards.StepRecorder()]
