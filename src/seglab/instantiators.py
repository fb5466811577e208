"""Config -> objects: the LightningModule, the callbacks and the loggers of a run.

Every command (train, eval, predict, export, benchmark, reproduce) builds through here, so
a run is assembled the same way wherever it starts.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from seglab.config import build, plain
from seglab.out_of_memory import StepRecorder
from seglab.task_module import TaskModule
from seglab.time_split import TimeSplit

# Keys of a model config that other parts of the config read, not the module's constructor
# (dropped before it is built; old checkpoints' saved configs hold them too):
# - encoder: interpolated into the net's own option (model.net.encoder: ${model.encoder});
# - cpu_bf16: feeds the trainer's precision resolver (conf/trainer/default.yaml,
#   ${seglab.precision:${oc.select:model.cpu_bf16,true}}).
CONFIG_ONLY_MODEL_KEYS = ("encoder", "cpu_bf16")


def build_module(cfg: DictConfig, from_checkpoint: bool = False) -> TaskModule:
    """The LightningModule for ``cfg.model`` with loss / optimizer / scheduler from their
    groups and the data facts (classes, ignore index, channels) from ``cfg.data``.
    ``from_checkpoint``: a checkpoint's weights follow, so pretrained weights are not loaded."""
    data = cfg.data
    scheduler = cfg.get("scheduler")
    start = {"pretrained": False, "weights_path": None} if from_checkpoint else {}
    inference = cfg.get("inference")
    evaluation = cfg.get("evaluation")  # absent from older checkpoints' configs: defaults
    # Resolved first, so that what the dropped keys fed (e.g. net.encoder) keeps its value.
    model = OmegaConf.to_container(cfg.model, resolve=True)
    for key in CONFIG_ONLY_MODEL_KEYS:
        model.pop(key, None)
    # The loss group, where the task has one (task=instance: none, the net's own loss dict).
    loss = {"loss": instantiate(cfg.loss)} if cfg.get("loss") is not None else {}
    module = build(
        model,
        **start,
        **loss,
        inference=OmegaConf.to_container(inference, resolve=True) if inference else None,
        evaluation=OmegaConf.to_container(evaluation, resolve=True) if evaluation else None,
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
    """The callbacks group of ``cfg``, and the step recorder that out-of-memory errors read.
    ``TimeSplit`` goes last, so that the other callbacks' batch-end work (an EMA update)
    counts as training, not as waiting for the next batch (Lightning itself moves the
    checkpoint callbacks after it; their writes are timed apart)."""
    callbacks = [*instantiate_all(cfg.get("callbacks")), StepRecorder()]
    return sorted(callbacks, key=lambda c: isinstance(c, TimeSplit))
