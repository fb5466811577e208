"""COCO 2017 instance annotations as semantic segmentation, read from the official files.

Layout, as cocodataset.org distributes it: ``root/annotations/instances_{train,val}2017.json``
and ``root/{train,val}2017/<12-digit id>.jpg``. A mask is built per item (never all at once)
with pycocotools from the polygons and RLEs of the image's annotations; each JSON file is
parsed once per process into compact arrays (polygon coordinates in one numpy buffer, so that
forked DataLoader workers share it instead of copying millions of Python floats).

Which classes (``categories``):

- a list of COCO category names: class ``k`` is the ``k``-th entry (an entry may itself be a
  list of names merged into one class), everything else is background. ``[cat]`` gives the
  binary cat mask (the union of all cat instances); the 20 VOC classes are ``"voc"``
  (:data:`VOC_CATEGORIES`), as torchvision's ``references/segmentation`` trains on COCO;
- ``"all"``: the 80 categories as classes 1..80 in COCO category-id order.

Label rules, the same in every mode:

- ``overlap="classes"``: a pixel covered by instances of two different classes is ambiguous
  and set to ``ignore_index``; instances of the same class simply unite.
  ``overlap="instances"`` reproduces torchvision's reference exactly: any pixel covered by
  two or more instances (even of one class) is ignored.
- ``crowd="category"`` (torchvision's choice): a crowd region (``iscrowd=1``, an RLE) counts
  as its category; ``crowd="ignore"`` sets crowd regions of selected categories to
  ``ignore_index``.
- Image filters, each one value or a ``{split: value}`` mapping: ``only_with_categories``
  keeps only images with an annotation of a selected category; ``min_object_area`` keeps
  only images whose selected annotations cover at least that many pixels by the JSON's
  ``area`` fields (torchvision drops training images under 1000 px). COCO's grey JPEGs are
  converted to RGB.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from seglab.data.base import SegmentationDataset
from seglab.data.readers import read_rgb
from seglab.errors import InputError, MissingFileError

# COCO names of the 20 PASCAL VOC classes, in VOC's class order (aeroplane .. tvmonitor).
VOC_CATEGORIES = (
    "airplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "dining table",
    "dog",
    "horse",
    "motorcycle",
    "person",
    "potted plant",
    "sheep",
    "couch",
    "train",
    "tv",
)


@dataclass(frozen=True)
class CocoIndex:
    """One instances JSON, reduced to what masks need. Annotations are sorted by image;
    image ``i`` owns annotations ``ann_start[i]:ann_start[i + 1]``."""

    categories: dict[int, str]  # COCO id -> name, in id order
    image_ids: np.ndarray
    file_names: list[str]
    heights: np.ndarray
    widths: np.ndarray
    ann_start: np.ndarray
    ann_category: np.ndarray
    ann_crowd: np.ndarray
    ann_area: np.ndarray
    # Polygon annotations: polygons poly_first[a]:poly_first[a + 1], polygon p is
    # coords[coord_start[p]:coord_start[p + 1]]. RLE annotations are kept as given.
    poly_first: np.ndarray
    coord_start: np.ndarray
    coords: np.ndarray
    rles: dict[int, dict[str, Any]]
    # Annotation ids, in the order above (-1: none given), and the ids of annotations whose
    # image_id names no image of the file (left out above; the instance task reports them).
    ann_ids: np.ndarray | None = None
    orphan_ann_ids: tuple[int, ...] = ()


def _build_index(path: Path) -> CocoIndex:
    try:
        with open(path) as f:
            data = json.load(f)
    except ValueError as e:  # not JSON (or not UTF-8)
        raise InputError(f"coco: cannot parse annotation file {path}: {e}") from e
    try:
        categories = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        images = sorted(data["images"], key=lambda im: im["id"])
        anns = data["annotations"]
    except (KeyError, TypeError) as e:
        raise InputError(f"coco: {path} is not a COCO instances file (missing {e})") from e
    categories = dict(sorted(categories.items()))
    position = {im["id"]: i for i, im in enumerate(images)}
    order = sorted(range(len(anns)), key=lambda a: position.get(anns[a]["image_id"], -1))
    order = [a for a in order if anns[a]["image_id"] in position]
    owner = np.fromiter((position[anns[a]["image_id"]] for a in order), np.int64, len(order))
    ann_start = np.searchsorted(owner, np.arange(len(images) + 1)).astype(np.int64)

    poly_first, coord_start, chunks, rles = [0], [0], [], {}
    for k, a in enumerate(order):
        segm = anns[a]["segmentation"]
        if isinstance(segm, dict):  # RLE (crowd regions): rare, kept as they are
            rles[k] = segm
        else:
            # Fewer than 3 points bound no area (and pycocotools would take 4 numbers for a
            # box): such degenerate polygons are dropped.
            for poly in segm:
                if len(poly) >= 6:
                    chunks.append(np.asarray(poly, np.float64))
                    coord_start.append(coord_start[-1] + len(poly))
        poly_first.append(len(coord_start) - 1)
    return CocoIndex(
        categories=categories,
        image_ids=np.array([im["id"] for im in images], np.int64),
        file_names=[im["file_name"] for im in images],
        heights=np.array([im["height"] for im in images], np.int64),
        widths=np.array([im["width"] for im in images], np.int64),
        ann_start=ann_start,
        ann_category=np.array([anns[a]["category_id"] for a in order], np.int64),
        ann_crowd=np.array([bool(anns[a].get("iscrowd", 0)) for a in order], bool),
        ann_area=np.array([float(anns[a].get("area", 0.0)) for a in order], np.float64),
        poly_first=np.array(poly_first, np.int64),
        coord_start=np.array(coord_start, np.int64),
        coords=np.concatenate(chunks) if chunks else np.zeros(0, np.float64),
        rles=rles,
        ann_ids=np.array([int(anns[a].get("id", -1)) for a in order], np.int64),
        orphan_ann_ids=tuple(
            int(an.get("id", -1)) for an in anns if an.get("image_id") not in position
        ),
    )


@lru_cache(maxsize=4)
def _cached_index(path: str, mtime_ns: int, size: int) -> CocoIndex:
    return _build_index(Path(path))


def load_index(path: str | Path) -> CocoIndex:
    """The parsed instances file; parsed once per process (re-read if the file changes)."""
    path = Path(path).resolve()
    if not path.is_file():
        raise MissingFileError(f"coco: annotation file missing: {path}")
    st = path.stat()
    return _cached_index(str(path), st.st_mtime_ns, st.st_size)


def per_split(value: Any, split: str, default: Any) -> Any:
    """This split's value of a setting given as one value or as a ``{split: value}``
    mapping (``default`` for a split the mapping leaves out)."""
    return value.get(split, default) if isinstance(value, Mapping) else value


class CocoDataset(SegmentationDataset):
    """COCO 2017 images with class masks made from the instance annotations."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        categories: str | Sequence[str | Sequence[str]] = "all",
        only_with_categories: bool | Mapping[str, bool] = False,
        min_object_area: float | Mapping[str, float] = 0.0,
        overlap: str = "classes",
        crowd: str = "category",
        ignore_index: int = 255,
        num_classes: int | None = None,
        year: str | int = 2017,
        transform: Any = None,
    ) -> None:
        super().__init__(transform)
        if overlap not in ("classes", "instances"):
            raise InputError(f"coco: overlap must be 'classes' or 'instances', got {overlap!r}")
        if crowd not in ("category", "ignore"):
            raise InputError(f"coco: crowd must be 'category' or 'ignore', got {crowd!r}")
        self.root, self.split = Path(root).expanduser(), split
        folder = split if split.endswith(str(year)) else f"{split}{year}"
        self.image_dir = self.root / folder
        self.ann_file = self.root / "annotations" / f"instances_{folder}.json"
        if not self.ann_file.is_file():
            raise MissingFileError(
                f"coco: annotation file missing: {self.ann_file} (expected the official "
                f"layout: root/annotations/instances_{folder}.json and root/{folder}/*.jpg)"
            )
        self.index = index = load_index(self.ann_file)
        self.overlap, self.crowd, self.ignore_index = overlap, crowd, ignore_index

        groups = self._groups(categories, index.categories)
        by_name = {name: cid for cid, name in index.categories.items()}
        self.class_of = {by_name[n]: k for k, group in enumerate(groups, 1) for n in group}
        self.class_names = ["background", *("+".join(g) for g in groups)]
        if num_classes is not None and num_classes != len(self.class_names):
            raise InputError(
                f"coco: categories give {len(groups)} classes + background but "
                f"num_classes={num_classes}"
            )

        # Which images to serve: filters on the selected categories' annotations.
        n = len(index.file_names)
        owner = np.repeat(np.arange(n), np.diff(index.ann_start))
        selected = np.isin(index.ann_category, list(self.class_of))
        count = np.bincount(owner[selected], minlength=n)
        area = np.bincount(owner[selected], weights=index.ann_area[selected], minlength=n)
        keep = np.ones(n, bool)
        if per_split(only_with_categories, split, False):
            keep &= count > 0
        min_area = float(per_split(min_object_area, split, 0.0))
        if min_area > 0:
            keep &= area >= min_area
        self.positions = np.flatnonzero(keep)

    @staticmethod
    def _groups(
        categories: str | Sequence[str | Sequence[str]], known: dict[int, str]
    ) -> list[tuple[str, ...]]:
        if isinstance(categories, str):
            if categories == "all":
                return [(name,) for name in known.values()]
            categories = VOC_CATEGORIES if categories == "voc" else [categories]
        groups = [(c,) if isinstance(c, str) else tuple(c) for c in categories]
        names = [n for g in groups for n in g]
        unknown = [n for n in names if n not in known.values()]
        if unknown:
            raise InputError(
                f"coco: unknown categories {unknown}; the annotation file has "
                f"{list(known.values())}"
            )
        if len(set(names)) != len(names) or not groups:
            raise InputError(f"coco: categories must be distinct and not empty: {names}")
        return groups

    def __len__(self) -> int:
        return len(self.positions)

    def image_id(self, index: int) -> int:
        """The COCO image id of item ``index``."""
        return int(self.index.image_ids[self.positions[index]])

    def _instance(self, a: int, h: int, w: int) -> np.ndarray | None:
        """Annotation ``a`` decoded to a boolean HxW mask (None: it has no area)."""
        ix = self.index
        if a in ix.rles:
            segm = ix.rles[a]
            if tuple(segm["size"]) != (h, w):
                raise InputError(
                    f"coco: {self.ann_file}: an RLE of image {self._image_of(a)} has size "
                    f"{segm['size']} but the image is {h}x{w}"
                )
            # Uncompressed (counts a list, as in the official files) or compressed.
            compressed = isinstance(segm["counts"], str | bytes)
            rle = segm if compressed else mask_utils.frPyObjects(segm, h, w)
        else:
            polys = [
                ix.coords[ix.coord_start[p] : ix.coord_start[p + 1]]
                for p in range(ix.poly_first[a], ix.poly_first[a + 1])
            ]
            if not polys:
                return None
            rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
        return mask_utils.decode(rle).astype(bool)

    def _image_of(self, a: int) -> Path:
        """The image file annotation ``a`` belongs to (for error messages)."""
        pos = int(np.searchsorted(self.index.ann_start, a, side="right")) - 1
        return self.image_dir / self.index.file_names[pos]

    def mask(self, index: int) -> np.ndarray:
        """The class mask of item ``index`` (uint8 HxW), built from its annotations."""
        ix, pos = self.index, self.positions[index]
        h, w = int(ix.heights[pos]), int(ix.widths[pos])
        unions: dict[int, np.ndarray] = {}
        count = np.zeros((h, w), np.uint16) if self.overlap == "instances" else None
        crowd = np.zeros((h, w), bool)
        for a in range(ix.ann_start[pos], ix.ann_start[pos + 1]):
            cls = self.class_of.get(int(ix.ann_category[a]))
            if cls is None:
                continue
            m = self._instance(a, h, w)
            if m is None:
                continue
            if ix.ann_crowd[a] and self.crowd == "ignore":
                crowd |= m
                continue
            if count is not None:
                count += m
            unions[cls] = unions[cls] | m if cls in unions else m
        label = np.zeros((h, w), np.uint8)
        covered, clash = np.zeros((h, w), bool), np.zeros((h, w), bool)
        for cls, m in unions.items():
            clash |= covered & m
            covered |= m
            label[m] = cls
        if count is not None:  # torchvision's rule: any pixel of two instances
            clash = count > 1
        label[clash] = self.ignore_index
        label[crowd] = self.ignore_index
        return label

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        pos = self.positions[index]
        path = self.image_dir / self.index.file_names[pos]
        if not path.is_file():
            raise MissingFileError(f"coco: image file missing: {path}")
        image = read_rgb(path)
        h, w = int(self.index.heights[pos]), int(self.index.widths[pos])
        if image.shape[:2] != (h, w):
            raise InputError(
                f"coco: {path} is {image.shape[1]}x{image.shape[0]} but {self.ann_file.name} "
                f"says {w}x{h}"
            )
        return image, self.mask(index)
