"""Classes that moved: the ``_target_`` paths saved in older checkpoints' configs, and where
those classes live now. ``checkpoints.load_checkpoint`` rewrites a saved config through
``upgrade_targets`` so that a checkpoint written before a move still rebuilds its run.
When a class named by a config moves, add one entry here (and a line in docs/architecture.md).
"""

from __future__ import annotations

from typing import Any

# old "_target_" -> new "_target_"
MOVED_TARGETS: dict[str, str] = {
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
