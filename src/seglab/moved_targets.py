"""What changed in saved configs: the ``_target_`` paths of classes that moved, and keys a
constructor no longer takes. ``checkpoints.load_checkpoint`` rewrites a saved config through
``upgrade_saved_config`` so that a checkpoint written before a change still rebuilds its run.
When a class named by a config moves, add one entry here (and a line in docs/architecture.md).
"""

from __future__ import annotations

from typing import Any

from seglab.config import INSTANCE_MODULE

# old "_target_" -> new "_target_"
MOVED_TARGETS: dict[str, str] = {
    "seglab.report.EpochTimer": "seglab.reproduce.training.EpochTimer",
    "seglab.instance.InstanceModule": "seglab.instance_module.InstanceModule",
    "seglab.instance.InstanceVisualizer": "seglab.callbacks.InstanceVisualizer",
    "seglab.data.instances.InstanceDataModule": "seglab.data.datamodule.InstanceDataModule",
    "seglab.data.instances.ShapesInstancesDataset": (
        "seglab.data.shapes_instances.ShapesInstancesDataset"
    ),
    "seglab.data.instances.CocoInstancesDataset": "seglab.data.coco_instances.CocoInstancesDataset",
}


def upgrade_targets(node: Any) -> Any:
    """``node`` (a saved config: dicts and lists) with every moved ``_target_`` replaced."""
    if isinstance(node, dict):
        out = {k: upgrade_targets(v) for k, v in node.items()}
        target = out.get("_target_")
        if isinstance(target, str) and target in MOVED_TARGETS:
            out["_target_"] = MOVED_TARGETS[target]
        return out
    if isinstance(node, list):
        return [upgrade_targets(v) for v in node]
    return node


def upgrade_saved_config(run: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's saved run config as today's code builds it: moved targets replaced, and
    no loss group for Mask R-CNN runs (its own loss dict is the loss; older runs saved the
    unused default, ``loss: ce``)."""
    run = upgrade_targets(run)
    if run.get("model", {}).get("_target_") == INSTANCE_MODULE:
        run["loss"] = None
    return run
