"""task=instance: COCO AP against pycocotools, the instance datasets and their bad-input
checks, and train / eval / predict end to end on the built-in shapes and a COCO fixture."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from fixtures import make_coco
from helpers import assert_frozen_encoder
from seglab import coco_eval, pipeline
from seglab.config import build
from seglab.data.coco_instances import CocoInstancesDataset
from seglab.data.instance_targets import boxes_from_masks
from seglab.data.shapes_instances import ShapesInstancesDataset
from seglab.instantiators import build_module
from seglab.models.maskrcnn import HEAD_KEYS, MaskRCNN
from seglab.prediction import predict

# Fast: a 96..128 px resize, the trunk's weights not trained, few images.
SMALL = [
    "task=instance",
    "data.num_workers=0",
    "data.dataset.num_samples={train: 4, val: 2, test: 1}",
    "data.instance_min_size=96",
    "data.instance_max_size=128",
    "model.net.detections_per_img=20",
    "data.batch_size=2",
    "model.net.trainable_layers=0",
    "trainer.max_epochs=1",
    "trainer.log_every_n_steps=1",
    "trainer.num_sanity_val_steps=0",
    "++callbacks.rich_progress_bar=null",
    "++callbacks.model_summary=null",
]


# ------------------------------------------------------------------------------ COCO AP
def _hand_made_coco(path: Path) -> COCO:
    """3 images (40 x 50): two objects and a crowd region, one object, no annotation."""

    def rect(x0, y0, x1, y1):
        return [[x0, y0, x1, y0, x1, y1, x0, y1]]

    crowd = np.zeros((40, 50), np.uint8)
    crowd[30:38, 0:20] = 1
    crowd_rle = mask_utils.encode(np.asfortranarray(crowd))
    crowd_rle["counts"] = crowd_rle["counts"].decode()
    anns = [
        (1, 1, 1, rect(5, 5, 20, 25), 0),
        (2, 1, 2, rect(25, 5, 45, 20), 0),
        (3, 1, 1, crowd_rle, 1),
        (4, 2, 2, rect(10, 10, 30, 30), 0),
    ]
    data = {
        "images": [
            {"id": i, "height": 40, "width": 50, "file_name": f"{i}.jpg"} for i in (1, 2, 3)
        ],
        "annotations": [],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    for aid, img, cat, segm, iscrowd in anns:
        rle = (
            segm
            if isinstance(segm, dict)
            else mask_utils.merge(mask_utils.frPyObjects(segm, 40, 50))
        )
        data["annotations"].append(
            {
                "id": aid,
                "image_id": img,
                "category_id": cat,
                "segmentation": segm,
                "area": float(mask_utils.area(rle)),
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "iscrowd": iscrowd,
            }
        )
    path.write_text(json.dumps(data))
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def _records(gt: COCO, shift: int = 0, extra_on_crowd: bool = False) -> list[dict]:
    """Records whose detections are the ground truth (score 1), the first object moved
    ``shift`` px right; optionally a detection on the crowd region."""
    records = []
    for img in gt.dataset["images"]:
        anns = gt.loadAnns(gt.getAnnIds(imgIds=img["id"]))
        masks = np.stack([gt.annToMask(a) for a in anns]) if anns else np.zeros((0, 40, 50))
        dets = [k for k, a in enumerate(anns) if not a["iscrowd"]]
        det_masks = masks[dets].astype(bool)
        if shift and img["id"] == 1:
            det_masks[0] = np.roll(det_masks[0], shift, axis=1)
        labels = [anns[k]["category_id"] for k in dets]
        if extra_on_crowd and img["id"] == 1:
            crowd = next(k for k, a in enumerate(anns) if a["iscrowd"])
            det_masks = np.concatenate([det_masks, masks[crowd : crowd + 1].astype(bool)])
            labels.append(1)
        scores = [1.0] * len(labels)
        if extra_on_crowd and img["id"] == 1:
            scores[-1] = 0.99
        boxes = np.array(
            [
                [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
                for ys, xs in (np.nonzero(m) for m in det_masks)
            ]
        ).reshape(-1, 4)
        records.append(
            coco_eval.image_record(
                img["id"], 40, 50, masks.astype(bool), [a["category_id"] for a in anns],
                [a["iscrowd"] for a in anns], [a["area"] for a in anns],
                det_masks, labels, scores, boxes,
            )
        )  # fmt: skip
    return records


def _pycocotools(gt: COCO, records: list[dict], iou_type: str) -> np.ndarray:
    results = [
        {"image_id": r["id"], **{k: d[k] for k in ("category_id", "score", "segmentation")}}
        if iou_type == "segm"
        else {"image_id": r["id"], **{k: d[k] for k in ("category_id", "score", "bbox")}}
        for r in records
        for d in r["det"]
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(results), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[:6]


def test_ap_matches_pycocotools(tmp_path):
    gt = _hand_made_coco(tmp_path / "gt.json")
    names = ["background", "a", "b"]
    perfect = coco_eval.evaluate(_records(gt), names)
    assert perfect["mask_ap"] == 1.0 and perfect["bbox_ap"] == 1.0
    assert perfect["mask_ap/a"] == pytest.approx(1.0) and perfect["mask_ap/b"] == pytest.approx(1)
    # A detection on a crowd region is neither a true nor a false positive.
    assert coco_eval.evaluate(_records(gt, extra_on_crowd=True), names)["mask_ap"] == 1.0
    # A shifted mask: IoU (15 - 6) / (15 + 6) < 0.5 misses at every threshold.
    shifted = _records(gt, shift=6)
    ours = coco_eval.evaluate(shifted, names)
    assert 0 < ours["mask_ap"] < 1 and ours["mask_ap/a"] == 0.0
    assert ours["mask_ap/b"] == pytest.approx(1.0)
    for iou_type, name in (("segm", "mask"), ("bbox", "bbox")):
        theirs = _pycocotools(gt, shifted, iou_type)
        mine = [ours[f"{name}_{k}"] for k in coco_eval.SUMMARY]
        np.testing.assert_allclose(np.where(theirs < 0, np.nan, theirs), mine)
    # A small shift keeps AP50 at 1 but lowers AP.
    slight = coco_eval.evaluate(_records(gt, shift=2), names)
    assert slight["mask_ap50"] == 1.0 and slight["mask_ap"] < 1.0


# ------------------------------------------------------------------------------- data
def test_augmentation_moves_boxes_masks_and_classes_together(make_cfg):
    """Boxes go through albumentations with the image and masks (flip: mirrored by hand;
    crop: clipped, and an object cropped away leaves with its mask and class); a pipeline
    made without bbox_params falls back to the transformed masks' boxes."""
    dm = instantiate(make_cfg("train", *SMALL, tiny=False).data)

    def shapes(transforms, compose=dm._compose):
        kw = {"num_samples": 12, "min_size": 64, "max_size": 64}
        return ShapesInstancesDataset("train", transform=compose(transforms), **kw)

    plain, flip = shapes([]), shapes([A.HorizontalFlip(p=1)])
    crop = shapes([A.Crop(x_min=0, y_min=0, x_max=32, y_max=64)])
    unbound = shapes([A.HorizontalFlip(p=1)], lambda t: A.Compose([*t, A.ToTensorV2()]))
    gone = 0
    for i in range(len(plain)):
        ref, f, c = plain[i]["target"], flip[i]["target"], crop[i]["target"]
        assert torch.equal(ref["boxes"], boxes_from_masks(ref["masks"]))
        assert torch.equal(f["labels"], ref["labels"])
        assert torch.equal(f["masks"], ref["masks"].flip(-1))
        x0, y0, x1, y1 = ref["boxes"].unbind(1)
        mirrored = torch.stack([64 - x1, y0, 64 - x0, y1], 1)
        assert torch.allclose(f["boxes"], mirrored)
        left = ref["masks"][..., :32].flatten(1).any(1)  # objects with pixels left of x=32
        gone += int((~left).sum())
        assert torch.equal(c["labels"], ref["labels"][left])
        assert torch.equal(c["masks"], ref["masks"][left][..., :32])
        assert torch.allclose(c["boxes"][:, [0, 1, 3]], ref["boxes"][left][:, [0, 1, 3]])
        assert torch.allclose(c["boxes"][:, 2], ref["boxes"][left][:, 2].clamp(max=32))
        u = unbound[i]["target"]
        assert torch.equal(u["boxes"], boxes_from_masks(u["masks"]))
        assert torch.equal(u["boxes"], f["boxes"])
    assert gone > 0  # the crop did remove objects


def test_instance_datasets_and_bad_annotations(tmp_path):
    shapes = ShapesInstancesDataset("train", num_samples=40, min_size=64, max_size=64)
    touching = 0
    for i in range(len(shapes)):
        _, inst = shapes.load_instances(i)
        masks, labels = inst["masks"].astype(bool), inst["labels"]
        for a in range(len(masks)):
            grown = cv2.dilate(masks[a].astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            touching += sum(
                1
                for b in range(a + 1, len(masks))
                if labels[a] == labels[b] and (grown & masks[b]).any()
            )
        assert not (masks.sum(0) > 1).any()  # one instance per pixel
    assert touching > 0

    root = make_coco(tmp_path / "coco")
    train = CocoInstancesDataset(str(root), "train")
    assert [train.image_id(i) for i in range(len(train))] == [1, 2, 4]  # image 3: nothing
    item = train[0]
    assert item["target"]["labels"].tolist() == [16, 17, 24]  # the crowd cat left out
    assert not item["target"]["iscrowd"].any()
    assert item["target"]["boxes"][0, :2].tolist() == [4.0, 4.0]
    val = CocoInstancesDataset(str(root), "val", categories=["cat", "person"])
    assert len(val) == 2  # the image without a cat or person is kept for evaluation
    assert val[0]["target"]["iscrowd"].tolist() == [False, True]
    assert val[1]["target"]["masks"].shape == (0, 48, 64)

    ann_file = root / "annotations" / "instances_train2017.json"
    data = json.loads(ann_file.read_text())
    good = data["annotations"][0]
    data["annotations"] += [
        {**good, "id": 901, "image_id": 999},
        {**good, "id": 902, "segmentation": []},
        {**good, "id": 903, "category_id": 999},
    ]
    ann_file.write_text(json.dumps(data))
    for aid, problem in [(901, "image_id"), (902, "empty segmentation"), (903, "category_id 999")]:
        with pytest.raises(ValueError, match=f"annotation id {aid} [^;]*{problem}"):
            CocoInstancesDataset(str(root), "train")
    skipped = CocoInstancesDataset(str(root), "train", on_bad_sample="skip")
    assert len(skipped.dropped) == 3
    assert skipped[0]["target"]["labels"].tolist() == [16, 17, 24]


# ------------------------------------------------------------------------ end to end
def test_train_eval_predict_on_shapes(make_cfg, tmp_path):
    cfg = make_cfg("train", *SMALL, "seed=1", tiny=False)
    metrics = pipeline.train(cfg)
    out = Path(cfg.paths.output_dir)
    saved = json.loads((out / "metrics.json").read_text())
    for key in ("val/mask_ap", "val/bbox_ap50", "val/mask_apl", "val/mask_ap/star", "val/miou",
                "val/iou/star", "test/mask_ap", "best_checkpoint"):  # fmt: skip
        assert key in saved, key
    assert 0.0 <= metrics["val/mask_ap"] <= 1.0
    assert metrics["val/num_images"] == 2
    ckpt = torch.load(saved["best_checkpoint"], weights_only=True)
    assert ckpt["seglab_config"]["model"]["_target_"] == "seglab.instance_module.InstanceModule"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard")).Reload()
    tags = events.Tags()
    assert {"train/loss_mask_step", "train/loss_step", "val/mask_ap"} <= set(tags["scalars"])
    assert "val/predictions" in tags["images"]

    # eval.py reproduces the saved figures.
    ev = pipeline.evaluate(make_cfg("eval", f"ckpt_path={saved['best_checkpoint']}", out="ev"))
    for key in ("val/mask_ap", "val/bbox_ap", "val/miou"):
        assert ev[key] == pytest.approx(saved[key], abs=1e-9, nan_ok=True), key
    assert ev["val/confusion_matrix"] == saved["val/confusion_matrix"]

    # predict.py: overlays of the input's size, per-instance masks, COCO results JSON.
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (37, 53, 3), dtype=np.uint8)).save(inputs / "a.png")
    Image.fromarray(rng.integers(0, 255, (90, 41), dtype=np.uint8)).save(inputs / "000042.jpg")
    written = predict(
        make_cfg(
            "predict", f"ckpt_path={saved['best_checkpoint']}", f"input={inputs}",
            f"output={tmp_path / 'pred'}", "score_thresh=0.0", "instance_masks=true",
            f"coco_json={tmp_path / 'pred' / 'results.json'}", "progress=false", out="pr",
        )
    )  # fmt: skip
    assert sorted(p.name for p in written) == ["000042_overlay.png", "a_overlay.png"]
    assert Image.open(tmp_path / "pred" / "a_overlay.png").size == (53, 37)
    assert Image.open(tmp_path / "pred" / "000042_overlay.png").size == (41, 90)
    results = json.loads((tmp_path / "pred" / "results.json").read_text())
    assert {r["image_id"] for r in results} <= {42, 1}  # the number, else the position
    for r in results:
        assert r["segmentation"]["size"] in ([37, 53], [90, 41])
    masks = list((tmp_path / "pred").glob("*_instances/*.png"))
    assert len(masks) == len(results)


def test_one_epoch_on_a_coco_fixture(make_cfg, tmp_path):
    root = make_coco(tmp_path / "coco")
    cfg = make_cfg(
        "train", *[o for o in SMALL if not o.startswith("data.dataset.")], "data=coco_instances",
        f"data.root={root}", tiny=False,
    )  # fmt: skip
    metrics = pipeline.train(cfg)
    assert metrics["val/num_images"] == 2  # the validation image without objects counts
    assert 0.0 <= metrics["val/mask_ap"] <= 1.0


def test_mask_rcnn_architectures():
    """v1 / v2 are torchvision's networks tensor for tensor (torchvision's published 44.4M for
    v1 counts FrozenBatchNorm, which holds no parameters); the small ResNet-18 variant has
    torchvision's ResNet-18 as its trunk and trains and predicts at any image size."""
    from torchvision.models import resnet18
    from torchvision.models.detection import maskrcnn_resnet50_fpn, maskrcnn_resnet50_fpn_v2

    def count(m):
        return sum(p.numel() for p in m.parameters())

    def shapes(m):
        return {k: v.shape for k, v in m.state_dict().items()}

    for arch, builder, n in (
        ("maskrcnn_resnet50_fpn", maskrcnn_resnet50_fpn, 44_454_513),
        ("maskrcnn_resnet50_fpn_v2", maskrcnn_resnet50_fpn_v2, 46_359_409),
    ):
        ours = MaskRCNN(arch, num_classes=91, trainable_layers=5)
        ref = builder(weights=None, weights_backbone=None, trainable_backbone_layers=5)
        assert shapes(ours.model) == shapes(ref) and count(ours) == n
    frozen = MaskRCNN("maskrcnn_resnet50_fpn", num_classes=91, trainable_layers=5, frozen_bn=True)
    assert count(frozen) == 44_401_393  # torchvision's documented figure
    small = MaskRCNN("maskrcnn_resnet18_fpn", num_classes=5, min_size=64, max_size=96)
    trunk = {k: v for k, v in shapes(resnet18()).items() if not k.startswith("fc.")}
    assert shapes(small.encoder) == trunk
    assert count(small) == 16_183_661
    masks = torch.zeros(1, 50, 70, dtype=torch.uint8)
    masks[0, 10:30, 20:45] = 1
    target = {
        "boxes": torch.tensor([[20.0, 10, 45, 30]]),
        "labels": torch.tensor([2]),
        "masks": masks,
    }
    torch.manual_seed(0)
    losses = small.train()([torch.randn(3, 50, 70)], [target])
    assert set(losses) == {
        "loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"
    }  # fmt: skip
    out = small.eval()([torch.randn(3, 50, 70)])[0]
    assert out["masks"].shape[-2:] == (50, 70)


def test_whole_mask_rcnn_weights_load_all_but_the_class_heads():
    """COCO-style whole-model weights (91 classes) into a 5-class model: every tensor but the
    class-specific predictors is loaded; weights of the other architecture are refused."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    coco = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()
    net = MaskRCNN("maskrcnn_resnet50_fpn", num_classes=5)
    fresh = {k: v.clone() for k, v in net.model.state_dict().items() if k.startswith(HEAD_KEYS)}
    net.load_encoder_weights(coco)
    for key, value in net.model.state_dict().items():
        expected = fresh[key] if key in fresh and coco[key].shape != value.shape else coco[key]
        assert torch.equal(value, expected), key
    small = MaskRCNN("maskrcnn_resnet18_fpn", num_classes=5)
    with pytest.raises(ValueError, match="do not fit maskrcnn_resnet18_fpn.*tensors missing"):
        small.load_encoder_weights(coco)


def _touching_pairs(target: dict) -> list[tuple[int, int]]:
    """Pairs of instances of one class whose masks touch (8-neighbourhood)."""
    masks, labels = target["masks"].numpy().astype(bool), target["labels"].numpy()
    pairs = []
    for a in range(len(masks)):
        grown = cv2.dilate(masks[a].astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        pairs += [
            (a, b)
            for b in range(a + 1, len(masks))
            if labels[a] == labels[b] and (grown & masks[b]).any()
        ]
    return pairs


def _separated(pred_masks, pred_labels, target: dict) -> int:
    """Touching pairs of which both instances have their own prediction: the right class
    and mask IoU > 0.5 (one prediction cannot be > 0.5 with two disjoint masks)."""
    gt, labels = target["masks"].numpy().astype(bool), target["labels"].numpy()

    def found(a: int) -> bool:
        for m, c in zip(pred_masks, pred_labels, strict=True):
            union = (m | gt[a]).sum()
            if c == labels[a] and union and (m & gt[a]).sum() / union > 0.5:
                return True
        return False

    return sum(found(a) and found(b) for a, b in _touching_pairs(target))


def test_mask_rcnn_learns_to_separate_touching_objects_of_one_class(make_cfg):
    """Six shapes images whose objects come in touching same-class pairs. Connected
    components of the class map (all a semantic model can offer) separate none of the pairs;
    the untrained Mask R-CNN none either; after 300 AdamW steps on these images,
    maskrcnn_resnet18_fpn gives both objects of most pairs their own mask."""

    dm = instantiate(make_cfg("train", *SMALL, tiny=False).data)
    ds = ShapesInstancesDataset(
        "train", num_samples=6, min_size=64, max_size=64, touching=1.0, transform=dm._compose([])
    )
    items = [ds[i] for i in range(len(ds))]
    pairs = sum(len(_touching_pairs(it["target"])) for it in items)
    assert pairs >= 5
    for it in items:  # connected components of each class's pixels
        t = it["target"]
        comps, comp_labels = [], []
        for c in t["labels"].unique().tolist():
            union = t["masks"][t["labels"] == c].any(0).numpy().astype(np.uint8)
            n, cc = cv2.connectedComponents(union, connectivity=8)
            comps += [cc == k for k in range(1, n)]
            comp_labels += [c] * (n - 1)
        assert _separated(comps, comp_labels, t) == 0

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same sums, so the same result, however pytest runs
    try:
        torch.manual_seed(0)
        net = MaskRCNN(
            "maskrcnn_resnet18_fpn", num_classes=5, min_size=64, max_size=96,
            anchor_sizes=[16, 32, 64, 128, 256], box_batch_size_per_image=64,
        )  # fmt: skip

        def separated() -> int:
            net.eval()
            total = 0
            with torch.no_grad():
                for it in items:
                    out = net([it["image"]])[0]
                    keep = out["scores"] >= 0.5
                    masks = (out["masks"][keep, 0] > 0.5).numpy()
                    total += _separated(masks, out["labels"][keep].tolist(), it["target"])
            return total

        assert separated() == 0
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
        keys = ("boxes", "labels", "masks")
        for step in range(300):
            net.train()
            batch = [items[(2 * step + j) % len(items)] for j in range(2)]
            for group in opt.param_groups:  # a short warmup
                group["lr"] = 1e-3 * min(1.0, (step + 1) / 20)
            losses = net(
                [b["image"] for b in batch], [{k: b["target"][k] for k in keys} for b in batch]
            )
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()
        learnt = separated()
    finally:
        torch.set_num_threads(threads)
    print(f"{learnt} of {pairs} touching pairs separated")  # pytest -s shows it
    assert learnt >= pairs - 2, f"{learnt} of {pairs} touching pairs separated"


def test_a_few_steps_lower_the_loss(make_cfg):
    cfg = make_cfg("train", *SMALL, tiny=False)
    torch.manual_seed(0)
    module = build_module(cfg)
    dm = build(cfg.data)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    targets = [{k: t[k] for k in ("boxes", "labels", "masks")} for t in batch["target"]]
    net = module.train().net
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    losses = []
    for _ in range(6):
        loss = sum(net(batch["image"], targets).values())
        losses.append(float(loss))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.7 * losses[0], losses
    # model.train_trunk=false freezes the ResNet trunk (and keeps it in eval mode).
    frozen = build_module(make_cfg("train", *SMALL, "model.train_trunk=false", tiny=False))
    net = frozen.net
    assert_frozen_encoder(net, lambda: sum(net(batch["image"], targets).values()))


def test_ddp_evaluation_equals_one_process(make_cfg, tmp_path):
    """Two CPU processes: every validation image's detections are gathered exactly once
    (3 images over 2 processes, no padding duplicates), and the figures equal a
    single-process evaluation of the same checkpoint."""
    from test_cli import run_script

    run_dir = tmp_path / "ddp"
    run_script(
        "train.py",
        *SMALL,
        "data.dataset.num_samples={train: 4, val: 3, test: 1}",
        "model.net.box_score_thresh=0.0",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        "test=false",
        "seed=1",
        f"hydra.run.dir={run_dir}",
    )
    ddp = json.loads((run_dir / "metrics.json").read_text())
    assert ddp["val/num_images"] == 3
    single = pipeline.evaluate(
        make_cfg("eval", f"ckpt_path={ddp['best_checkpoint']}", "+trainer.devices=1", out="one")
    )
    assert single["val/num_images"] == 3
    assert single["val/confusion_matrix"] == ddp["val/confusion_matrix"]
    for key in ("val/mask_ap", "val/bbox_ap", "val/miou"):
        assert single[key] == pytest.approx(ddp[key], abs=1e-9, nan_ok=True), key
