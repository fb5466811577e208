"""COCO-style box and mask AP by pycocotools' COCOeval, from per-image records.

A record holds one image's ground truth and detections, masks as COCO RLEs: it is small,
picklable and independent of the device, so that DDP processes gather their records on
rank 0, which evaluates exactly the real images (each once: duplicates by image id are
dropped). Category ids are the data config's class ids (1..K; background 0 never occurs).
Crowd ground truth (``iscrowd``) is handled by COCOeval itself: a detection matched to a
crowd region counts neither as true nor as false positive. ``print_ap_table`` shows the
figures at the end of a run.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from rich.console import Console
from rich.table import Table

SUMMARY = ("ap", "ap50", "ap75", "aps", "apm", "apl")


def encode(masks: np.ndarray) -> list[dict[str, Any]]:
    """Boolean masks (N x H x W) -> COCO RLEs (counts as str, JSON-ready)."""
    if len(masks) == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(np.moveaxis(masks.astype(np.uint8), 0, -1)))
    for r in rles:
        r["counts"] = r["counts"].decode("ascii")
    return rles


def image_record(
    image_id: int,
    height: int,
    width: int,
    gt_masks: np.ndarray,
    gt_labels: Sequence[int],
    gt_crowd: Sequence[bool],
    gt_area: Sequence[float] | None,
    det_masks: np.ndarray,
    det_labels: Sequence[int],
    det_scores: Sequence[float],
    det_boxes: np.ndarray,
) -> dict[str, Any]:
    """One image's record. ``gt_area``: COCO's own areas (None: the masks' pixel counts);
    ``det_boxes``: x0 y0 x1 y1."""
    gt_rles = encode(np.asarray(gt_masks, bool))
    gts = []
    for k, rle in enumerate(gt_rles):
        area = float(gt_area[k]) if gt_area is not None else float(mask_utils.area(rle))
        gts.append(
            {
                "segmentation": rle,
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "area": area,
                "iscrowd": int(bool(gt_crowd[k])),
                "category_id": int(gt_labels[k]),
            }
        )
    dets = []
    for k, rle in enumerate(encode(np.asarray(det_masks, bool))):
        x0, y0, x1, y1 = (float(v) for v in det_boxes[k])
        dets.append(
            {
                "segmentation": rle,
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "score": float(det_scores[k]),
                "category_id": int(det_labels[k]),
            }
        )
    return {"id": int(image_id), "height": int(height), "width": int(width), "gt": gts, "det": dets}


def _coco_objects(records: list[dict[str, Any]], num_classes: int, iou_type: str):
    images = [{"id": r["id"], "height": r["height"], "width": r["width"]} for r in records]
    categories = [{"id": k, "name": str(k)} for k in range(1, num_classes)]
    gt_anns, dt_anns = [], []
    for r in records:
        for g in r["gt"]:
            gt_anns.append({**g, "id": len(gt_anns) + 1, "image_id": r["id"]})
        for d in r["det"]:
            ann = {
                "id": len(dt_anns) + 1,
                "image_id": r["id"],
                "category_id": d["category_id"],
                "score": d["score"],
                "iscrowd": 0,
            }
            if iou_type == "bbox":  # as COCO.loadRes does for box results
                x, y, w, h = d["bbox"]
                ann |= {"bbox": d["bbox"], "area": w * h}
                ann["segmentation"] = [[x, y, x, y + h, x + w, y + h, x + w, y]]
            else:  # as loadRes does for mask results: area and box from the mask
                ann |= {
                    "segmentation": d["segmentation"],
                    "area": float(mask_utils.area(d["segmentation"])),
                    "bbox": [float(v) for v in mask_utils.toBbox(d["segmentation"])],
                }
            dt_anns.append(ann)
    gt, dt = COCO(), COCO()
    gt.dataset = {"images": images, "annotations": gt_anns, "categories": categories}
    dt.dataset = {"images": images, "annotations": dt_anns, "categories": categories}
    gt.createIndex()
    dt.createIndex()
    return gt, dt


def _nan(v: float) -> float:
    return math.nan if v < 0 else float(v)


def evaluate(
    records: list[dict[str, Any]], class_names: Sequence[str], prefix: str = ""
) -> dict[str, float]:
    """``{prefix}bbox_ap``, ``..._ap50``, ``_ap75``, ``_aps``, ``_apm``, ``_apl``, the same for
    ``mask``, and per class ``{prefix}bbox_ap/<name>``, ``{prefix}mask_ap/<name>`` (AP at IoU
    .50:.95, all areas, 100 detections). Undefined figures (no ground truth) are NaN."""
    seen: set[int] = set()
    unique = []
    for r in records:
        if r["id"] not in seen:
            seen.add(r["id"])
            unique.append(r)
    out: dict[str, float] = {}
    num_classes = len(class_names)
    for iou_type, name in (("bbox", "bbox"), ("segm", "mask")):
        if not unique:
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            gt, dt = _coco_objects(unique, num_classes, iou_type)
            ev = COCOeval(gt, dt, iou_type)
            ev.params.imgIds = sorted(seen)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        for key, value in zip(SUMMARY, ev.stats[:6], strict=True):
            out[f"{prefix}{name}_{key}"] = _nan(value)
        precision = ev.eval["precision"]  # T x R x K x A x M
        for k, cat in enumerate(ev.params.catIds):
            p = precision[:, :, k, 0, -1]
            p = p[p > -1]
            out[f"{prefix}{name}_ap/{class_names[cat]}"] = float(p.mean()) if p.size else math.nan
    return out


def print_ap_table(metrics: dict[str, Any], class_names: Sequence[str], stage: str) -> None:
    """Per-class box and mask AP, then the COCO summary figures, as a rich table."""

    def fmt(v: Any) -> str:
        return "-" if v is None or not math.isfinite(v) else f"{100 * v:.2f}"

    table = Table(title=f"{stage} instance metrics (COCO AP, %)")
    for col in ("class", "box AP", "mask AP", "IoU (pasted)"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for name in class_names[1:]:
        table.add_row(
            name,
            fmt(metrics.get(f"{stage}/bbox_ap/{name}")),
            fmt(metrics.get(f"{stage}/mask_ap/{name}")),
            fmt(metrics.get(f"{stage}/iou/{name}")),
        )
    table.add_section()
    for key in SUMMARY:
        label = {"ap": "AP", "ap50": "AP50", "ap75": "AP75"}.get(key, f"AP{key[-1]}")
        table.add_row(
            label,
            fmt(metrics.get(f"{stage}/bbox_{key}")),
            fmt(metrics.get(f"{stage}/mask_{key}")),
            "",
        )
    table.add_row("mIoU (pasted masks)", "", "", fmt(metrics.get(f"{stage}/miou")))
    Console().print(table)
