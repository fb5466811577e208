"""How samples become batches: padded tensors for semantic segmentation, lists for instance
segmentation. Both pass bad-sample markers on under ``"bad"`` (``seglab.data.bad_samples``);
a batch of only bad samples is ``{"bad": [...]}``."""

from __future__ import annotations

from typing import Any

import torch


def pad_collate(batch: list[dict[str, Any]], ignore_index: int) -> dict[str, Any]:
    """Stacks samples; samples of different sizes are padded (bottom/right) to the largest,
    images with 0 and masks with ``ignore_index``, so padding never counts in loss or metrics.
    Bad-sample markers (``GuardedDataset``) are left out and passed on as ``"bad"``; a batch
    of only bad samples is ``{"bad": [...]}``."""
    bad = [s["bad"] for s in batch if "bad" in s]
    if bad:
        batch = [s for s in batch if "bad" not in s]
        if not batch:
            return {"bad": bad}
        return {**pad_collate(batch, ignore_index), "bad": bad}
    h = max(s["image"].shape[-2] for s in batch)
    w = max(s["image"].shape[-1] for s in batch)
    images = batch[0]["image"].new_zeros((len(batch), batch[0]["image"].shape[0], h, w))
    masks = torch.full((len(batch), h, w), ignore_index, dtype=torch.long)
    for i, s in enumerate(batch):
        ih, iw = s["image"].shape[-2:]
        images[i, :, :ih, :iw] = s["image"]
        masks[i, :ih, :iw] = s["mask"]
    return {
        "image": images,
        "mask": masks,
        "index": torch.tensor([s["index"] for s in batch]),
        # Each image's own size: what of the padded tensors is the image (boundary metrics).
        "size": torch.tensor([list(s["image"].shape[-2:]) for s in batch]),
    }


def instance_collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Lists of images and targets (no padding: the model resizes each image); bad-sample
    markers are passed on under ``"bad"`` as ``pad_collate`` does."""
    bad = [s["bad"] for s in batch if "bad" in s]
    good = [s for s in batch if "bad" not in s]
    out: dict[str, Any] = {}
    if good:
        out = {
            "image": [s["image"] for s in good],
            "target": [s["target"] for s in good],
            "index": torch.tensor([s["index"] for s in good]),
            "image_id": torch.tensor([s["image_id"] for s in good]),
        }
    if bad:
        out["bad"] = bad
    return out
