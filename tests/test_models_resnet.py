"""PSPNet and DeepLabV3+ on the dilated ResNet encoder: parameter counts, output stride,
atrous rates, ImageNet weight loading and per-part learning rates."""

from __future__ import annotations

import pytest
import torch
import torchvision
from hydra.utils import instantiate

from seglab.models.deeplabv3p import DeepLabV3Plus
from seglab.models.pretrained import load_pretrained
from seglab.models.pspnet import PSPNet
from seglab.models.resnet import ResNetEncoder
from seglab.optim import param_groups


def _params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _conv_bn(cin: int, cout: int, k: int) -> int:
    """A bias-free conv followed by BatchNorm (weight and bias)."""
    return cin * cout * k * k + 2 * cout


def _classifier(cin: int, classes: int) -> int:
    return cin * classes + classes


# torchvision's documented parameter counts (``weights.meta["num_params"]``) of its FCN and
# DeepLabV3 models: 21 classes, with the auxiliary FCN head on layer3.
TV_FCN = {"resnet50": 35_322_218, "resnet101": 54_314_346}
TV_DEEPLABV3 = {"resnet50": 42_004_074, "resnet101": 60_996_202}
# torchvision's auxiliary FCNHead(1024): 3x3 conv to 256, BN, ReLU, dropout, 1x1 classifier;
# PSPNet's auxiliary head is the same.
AUX = _conv_bn(1024, 256, 3) + _classifier(256, 21)


def expected_pspnet(backbone: str, aux: bool) -> int:
    """torchvision's FCN-ResNet with its 3x3 conv (2048 -> 512) replaced by the pyramid pooling
    module (four 1x1 convs 2048 -> 512) and the fusion conv (3x3, 2048 + 4 * 512 -> 512); the
    512 -> 21 classifier and the auxiliary head are the same."""
    n = TV_FCN[backbone] - _conv_bn(2048, 512, 3)
    n += 4 * _conv_bn(2048, 512, 1) + _conv_bn(4096, 512, 3)
    return n if aux else n - AUX


def expected_deeplabv3p(backbone: str) -> int:
    """torchvision's DeepLabV3-ResNet (identical ASPP: 1x1, three 3x3 atrous, image pooling,
    1x1 projection, 256 channels) without its auxiliary head and its 3x3 conv + classifier,
    plus the decoder: 1x1 256 -> 48, 3x3 304 -> 256, 3x3 256 -> 256, 1x1 classifier."""
    n = TV_DEEPLABV3[backbone] - AUX - _conv_bn(256, 256, 3) - _classifier(256, 21)
    decoder = _conv_bn(256, 48, 1) + _conv_bn(304, 256, 3) + _conv_bn(256, 256, 3)
    return n + decoder + _classifier(256, 21)


@pytest.mark.parametrize("backbone", ["resnet50", "resnet101"])
def test_parameter_counts(backbone):
    with torch.device("meta"):  # counts without allocating or initialising weights
        psp = PSPNet(21, backbone=backbone, aux_loss=True)
        psp_noaux = PSPNet(21, backbone=backbone, aux_loss=False)
        dlv3p = DeepLabV3Plus(21, encoder=backbone)
        classifier = getattr(torchvision.models, backbone)()
    assert _params(psp) == expected_pspnet(backbone, aux=True)
    assert _params(psp_noaux) == expected_pspnet(backbone, aux=False)
    assert _params(dlv3p) == expected_deeplabv3p(backbone)
    # The trunk is exactly torchvision's ResNet without its classifier.
    assert _params(dlv3p.encoder) == _params(classifier) - _params(classifier.fc)
    if backbone == "resnet101":
        # The figure usually quoted for DeepLabV3+ ResNet-101 with plain (not separable)
        # 3x3 convolutions, e.g. 21 classes: 59.3M.
        assert abs(_params(dlv3p) - 59.3e6) <= 0.02 * 59.3e6


def _input_of(module: torch.nn.Module, net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    seen = []
    handle = module.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    net.eval()
    with torch.no_grad():
        net(x)
    handle.remove()
    return seen[0]


@pytest.mark.parametrize("output_stride", [16, 8])
def test_deeplabv3p_output_stride_and_rates(output_stride):
    net = DeepLabV3Plus(3, output_stride=output_stride)
    x = torch.randn(1, 3, 64, 96)
    assert _input_of(net.aspp, net, x).shape[-2:] == (64 // output_stride, 96 // output_stride)
    assert _input_of(net.decoder.low_project, net, x).shape[-2:] == (16, 24)
    dilations = [
        m.dilation[0] for m in net.aspp.modules() if getattr(m, "kernel_size", 0) == (3, 3)
    ]
    assert dilations == ([6, 12, 18] if output_stride == 16 else [12, 24, 36])


def test_pspnet_pools_stride_8_features():
    net = PSPNet(3, aux_loss=True)
    x = torch.randn(1, 3, 64, 96)
    assert _input_of(net.ppm, net, x).shape[-2:] == (8, 12)
    assert _input_of(net.aux_head, net, x).shape[1:] == (1024, 8, 12)
    assert [s[0].output_size for s in net.ppm.stages] == [1, 2, 3, 6]


def test_seed_rates_from_the_command_line(make_cfg):
    cfg = make_cfg("train", "model=deeplabv3p", "model.net.aspp_rates=[4,8,14]")
    net = instantiate(cfg.model.net)
    convs = [m for m in net.aspp.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.dilation[0] for c in convs if c.kernel_size == (3, 3)] == [4, 8, 14]
    assert [c.padding[0] for c in convs if c.kernel_size == (3, 3)] == [4, 8, 14]
    out = net(torch.randn(2, 3, 65, 65))
    assert out.shape == (2, cfg.data.num_classes, 65, 65)


@pytest.mark.parametrize("net_class", [PSPNet, DeepLabV3Plus])
def test_load_encoder_weights(net_class):
    net = net_class(4)
    assert net.default_weights == "ResNet50_Weights.IMAGENET1K_V1"
    torchvision.models.get_weight(net.default_weights)  # a name torchvision knows
    source = torchvision.models.resnet50().state_dict()
    net.load_encoder_weights(source)
    for key, value in net.encoder.state_dict().items():
        assert torch.equal(value, source[key]), key
    # The backbone of a torchvision segmentation model loads as well.
    seg = torchvision.models.segmentation.deeplabv3_resnet50(
        weights=None, weights_backbone=None, num_classes=21, aux_loss=False
    ).state_dict()
    net.load_encoder_weights(seg)
    assert torch.equal(net.encoder.layer4[0].conv2.weight, seg["backbone.layer4.0.conv2.weight"])

    missing = {k: v for k, v in source.items() if k != "layer2.1.conv1.weight"}
    with pytest.raises(ValueError, match="layer2.1.conv1.weight"):
        net.load_encoder_weights(missing)
    with pytest.raises(ValueError, match="another shape"):
        net.load_encoder_weights(source | {"conv1.weight": torch.zeros(64, 3, 3, 3)})


def test_weights_path_with_a_torchvision_resnet_fills_the_trunk(tmp_path):
    source = torchvision.models.resnet50().state_dict()
    torch.save(source, tmp_path / "r50.pth")
    net = DeepLabV3Plus(3)
    assert load_pretrained(net, weights_path=str(tmp_path / "r50.pth")).startswith("encoder")
    assert torch.equal(net.encoder.layer3[5].bn2.running_var, source["layer3.5.bn2.running_var"])


def test_encoder_weights_need_matching_depth_and_channels():
    r50, r101 = ResNetEncoder("resnet50"), ResNetEncoder("resnet101")
    with pytest.raises(ValueError, match="missing"):  # ResNet-50 weights lack layer3.6 ...
        r101.load_weights(r50.state_dict())
    with pytest.raises(ValueError, match="another depth"):  # ... which ResNet-101's have
        r50.load_weights(r101.state_dict())
    four = ResNetEncoder("resnet50", in_channels=4)
    assert four.conv1.in_channels == 4
    with pytest.raises(ValueError, match="conv1.weight"):
        four.load_weights(torchvision.models.resnet50().state_dict())
    assert ResNetEncoder("resnet101").default_weights == "ResNet101_Weights.IMAGENET1K_V1"
    # Files saved before PyTorch 0.4.1 lack BatchNorm's step counters: they load all the same.
    old = {k: v for k, v in r50.state_dict().items() if not k.endswith("num_batches_tracked")}
    ResNetEncoder("resnet50").load_weights(old)


def test_per_part_learning_rates():
    net = DeepLabV3Plus(3)
    groups = param_groups(net, {"encoder": 0.1, "aspp": 0.5, "decoder": 1.0})
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"encoder", "aspp", "decoder"}  # nothing left over
    assert by_name["encoder"]["lr_mult"] == 0.1 and by_name["aspp"]["lr_mult"] == 0.5
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    assert len(by_name["encoder"]["params"]) == len(list(net.encoder.parameters()))

    psp = PSPNet(3, aux_loss=True)
    groups = param_groups(psp, {"encoder": 0.1, "ppm": 1.0, "head": 1.0, "aux_head": 1.0})
    assert {g["name"] for g in groups} == {"encoder", "ppm", "head", "aux_head"}


def test_batchnorm_trains_on_a_batch_of_two_and_predicts_one():
    """The 1x1 pooling branches need two images to train; eval works on one."""
    for net in (PSPNet(3, aux_loss=False), DeepLabV3Plus(3)):
        net.train()
        net(torch.randn(2, 3, 33, 47)).mean().backward()
        net.eval()
        with torch.no_grad():
            assert net(torch.randn(1, 3, 33, 47)).shape == (1, 3, 33, 47)
