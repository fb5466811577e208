"""torchvision's Mask R-CNN (ResNet-50 FPN, v1 and v2) as seglab instance-segmentation nets.

Built here from torchvision's parts (never with torchvision's own download): ``num_classes``
counts the background (class 0), as torchvision's does and as seglab's data configs do.
The anchor sizes, the resize range (``min_size`` / ``max_size``: the model resizes every image
itself and returns boxes and masks at the input's size), the box score threshold and the
number of detections per image are options. Images arrive normalised by the data config,
so the model's own normalisation is the identity.

``.encoder`` is the ResNet-50 (``backbone.body``): what ``model.train_trunk=false`` freezes
and what ImageNet weights (``model.pretrained=true``) fill. Whole Mask R-CNN weights
(``model.pretrained=MaskRCNN_ResNet50_FPN_Weights.COCO_V1``) load everything but the
class-specific predictors when the class count differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torchvision.models import resnet18, resnet50
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.faster_rcnn import (
    FastRCNNConvFCHead,
    FastRCNNPredictor,
    RPNHead,
    TwoMLPHead,
)
from torchvision.models.detection.mask_rcnn import MaskRCNN as TVMaskRCNN
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import misc as misc_nn_ops
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from seglab.errors import InputError
from seglab.models.base import SegmentationNet, Tensors
from seglab.models.state_dicts import load_all_but_heads, load_exact, with_bn_counters

ARCHS = ("maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2", "maskrcnn_resnet18_fpn")
# The small variant (not a torchvision model): ResNet-18, a 128-channel FPN, a 512-wide box head
# and a 4-conv 128-channel mask head; 14.0M parameters instead of 44M, for CPUs and quick
# experiments on small images.
SMALL_FPN_CHANNELS, SMALL_BOX_WIDTH = 128, 512
# Class-specific last layers, left out when whole-model weights of other classes are loaded.
HEAD_KEYS = ("roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits.")


class MaskRCNN(SegmentationNet):
    """``forward(images, targets)``: a dict of losses in training mode, a list of
    ``{"boxes", "labels", "scores", "masks"}`` (masks: N x 1 x H x W probabilities at the
    input's size) in eval mode. ``images``: a list of normalised C x H x W tensors."""

    def __init__(
        self,
        arch: str = "maskrcnn_resnet50_fpn",
        num_classes: int = 91,
        min_size: int = 800,
        max_size: int = 1333,
        anchor_sizes: Sequence[int] = (32, 64, 128, 256, 512),
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        box_score_thresh: float = 0.05,
        box_nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        box_batch_size_per_image: int = 512,
        trainable_layers: int = 3,
        frozen_bn: Any = False,
    ) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise InputError(f"unknown Mask R-CNN arch {arch!r}; one of {ARCHS}")
        if len(anchor_sizes) != 5:
            raise InputError(
                f"model.net.anchor_sizes needs one size per FPN level (5), got {list(anchor_sizes)}"
            )
        if not 0 <= trainable_layers <= 5:
            raise InputError(f"model.net.trainable_layers must be 0..5, got {trainable_layers}")
        # A weights name (model.pretrained=<name>) counts as true.
        frozen = frozen_bn not in (False, None, "false", "False")
        anchors = AnchorGenerator(
            tuple((int(s),) for s in anchor_sizes), (tuple(float(a) for a in aspect_ratios),) * 5
        )
        common = {
            "num_classes": num_classes,
            "min_size": min_size,
            "max_size": max_size,
            "image_mean": [0.0, 0.0, 0.0],  # the data config normalises
            "image_std": [1.0, 1.0, 1.0],
            "rpn_anchor_generator": anchors,
            "box_score_thresh": box_score_thresh,
            "box_nms_thresh": box_nms_thresh,
            "box_detections_per_img": detections_per_img,
            "box_batch_size_per_image": box_batch_size_per_image,
        }
        norm = misc_nn_ops.FrozenBatchNorm2d if frozen else nn.BatchNorm2d
        trunk = (resnet18 if arch == "maskrcnn_resnet18_fpn" else resnet50)(
            weights=None, norm_layer=norm
        )
        if arch == "maskrcnn_resnet18_fpn":
            c = SMALL_FPN_CHANNELS
            backbone = _resnet_fpn_extractor(trunk, trainable_layers)
            # _resnet_fpn_extractor builds a 256-channel FPN: rebuild it narrower.
            backbone.fpn = FeaturePyramidNetwork([64, 128, 256, 512], c, LastLevelMaxPool())
            backbone.out_channels = c
            model = TVMaskRCNN(
                backbone,
                rpn_head=RPNHead(c, anchors.num_anchors_per_location()[0]),
                box_head=TwoMLPHead(c * 7 * 7, SMALL_BOX_WIDTH),
                box_predictor=FastRCNNPredictor(SMALL_BOX_WIDTH, num_classes),
                mask_head=MaskRCNNHeads(c, [c] * 4, 1),
                mask_predictor=MaskRCNNPredictor(c, c, num_classes),
                **{k: v for k, v in common.items() if k != "num_classes"},
            )
        elif arch == "maskrcnn_resnet50_fpn":
            backbone = _resnet_fpn_extractor(trunk, trainable_layers)
            model = TVMaskRCNN(backbone, **common)
        else:  # v2: torchvision's improved recipe (BatchNorm in FPN and heads, 4-conv heads)
            backbone = _resnet_fpn_extractor(trunk, trainable_layers, norm_layer=nn.BatchNorm2d)
            c = backbone.out_channels
            model = TVMaskRCNN(
                backbone,
                rpn_head=RPNHead(c, anchors.num_anchors_per_location()[0], conv_depth=2),
                box_head=FastRCNNConvFCHead(
                    (c, 7, 7), [256, 256, 256, 256], [1024], norm_layer=nn.BatchNorm2d
                ),
                mask_head=MaskRCNNHeads(c, [256, 256, 256, 256], 1, norm_layer=nn.BatchNorm2d),
                **common,
            )
        self.model = model
        self.arch = arch
        self.default_weights = (
            "ResNet18_Weights.IMAGENET1K_V1"
            if arch == "maskrcnn_resnet18_fpn"
            else "ResNet50_Weights.IMAGENET1K_V1"
        )

    @property
    def encoder(self) -> nn.Module:
        return self.model.backbone.body

    def load_encoder_weights(self, state_dict: Tensors) -> None:
        """ImageNet ResNet-50 weights go into the trunk; whole torchvision Mask R-CNN weights
        load everything but the class-specific predictors when the class count differs."""
        if any(k.startswith("roi_heads.") for k in state_dict):
            what = f"Mask R-CNN weights do not fit {self.arch} (v1, v2 and r18 weights differ)"
            load_all_but_heads(self.model, state_dict, HEAD_KEYS, what)
            return
        # Old ImageNet files lack BatchNorm's step counters: keep ours.
        load_exact(self.encoder, with_bn_counters(self.encoder, state_dict), "ImageNet weights")

    def forward(
        self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None
    ) -> Any:
        return self.model(list(images), targets)
