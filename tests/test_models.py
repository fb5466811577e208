"""Architectures: output sizes, parameter counts, trunk freezing, the encoder table."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

from helpers import assert_frozen_encoder
from seglab.losses import CrossEntropy
from seglab.models.base import SegmentationNet
from seglab.models.deeplabv3p import DeepLabV3Plus
from seglab.models.encoders import ENCODERS, get_encoder
from seglab.models.fcn import FCN
from seglab.models.pretrained import PACKAGE_WEIGHTS
from seglab.models.pspnet import PSPNet
from seglab.models.unet import UNet
from seglab.module import SegmentationModule
from seglab.optim import CosineLR, PolyLR, param_groups, scale_group_lrs


@pytest.mark.parametrize("upsampling", ["transpose", "bilinear"])
def test_unet_returns_logits_of_any_input_size(upsampling):
    net = UNet(num_classes=3, depth=3, base_channels=4, upsampling=upsampling)
    for h, w in [(97, 131), (160, 224), (8, 9)]:
        x = torch.randn(2, 3, h, w, requires_grad=True)
        out = net(x)
        assert out.shape == (2, 3, h, w)
        out.mean().backward()
        assert x.grad is not None


def test_unet_parameter_count_matches_the_paper():
    # Ronneberger et al.: about 31.0M parameters (no BatchNorm, transposed convolutions).
    net = UNet(num_classes=2, depth=4, base_channels=64, batch_norm=False)
    n = sum(p.numel() for p in net.parameters())
    assert abs(n - 31.0e6) / 31.0e6 < 0.02


def _module(**kw) -> SegmentationModule:
    return SegmentationModule(
        UNet(num_classes=3, depth=2, base_channels=4),
        CrossEntropy(),
        lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9),
        num_classes=3,
        **kw,
    )


def test_frozen_trunk_keeps_weights_and_batchnorm_statistics():
    """model.train_trunk=false: the module freezes its net's encoder, through module.train()."""
    module = _module(train_trunk=False)
    module.train()
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 3, (4, 16, 16))
    assert_frozen_encoder(module.net, lambda: module._loss(module(x), y)[0], steps=2)


class _NoEncoder(SegmentationNet):
    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Conv2d(3, 3, 1)


def test_freezing_a_net_without_encoder_names_the_fix():
    with pytest.raises(ValueError, match="has no .encoder to freeze; set model.train_trunk=true"):
        _NoEncoder().freeze_encoder()


def test_num_classes_mismatch_is_refused_before_training():
    with pytest.raises(ValueError, match="outputs 3 channels but the data has num_classes=5"):
        SegmentationModule(
            UNet(num_classes=3, depth=2, base_channels=4),
            CrossEntropy(),
            torch.optim.SGD,
            num_classes=5,
        )


def test_lr_mult_makes_parameter_groups_and_rejects_unknown_parts():
    module = _module(lr_mult={"encoder": 0.1})
    opt = scale_group_lrs(torch.optim.SGD(param_groups(module.net, {"encoder": 0.1}), lr=0.1))
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == {"encoder": pytest.approx(0.01), "rest": pytest.approx(0.1)}
    with pytest.raises(ValueError, match="match no parameter"):
        param_groups(module.net, {"backbone": 0.1})


def test_poly_and_cosine_schedules_follow_their_formulas():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = PolyLR(opt, total_steps=100, power=0.9, warmup_steps=10, warmup_ratio=0.1)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[5] == pytest.approx(0.1 + 0.9 * 0.5)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[55] == pytest.approx((1 - 45 / 90) ** 0.9)
    opt = torch.optim.SGD([p], lr=2.0)
    sched = CosineLR(opt, total_steps=10)
    for _ in range(5):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1.0)  # half-way: half the base lr


class _AuxNet(SegmentationNet):
    """A net with an auxiliary head at half resolution, as PSPNet / torchvision models have."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = torch.nn.Conv2d(3, 3, 1)
        self.aux = torch.nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return {"out": self.encoder(x), "aux": self.aux(x[..., ::2, ::2])}


def test_auxiliary_output_adds_weighted_loss():
    module = SegmentationModule(
        _AuxNet(), CrossEntropy(), torch.optim.SGD, num_classes=3, aux_weight=0.25
    )
    x, y = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
    out = module(x)
    loss, logits = module._loss(out, y)
    aux = torch.nn.functional.interpolate(out["aux"], size=(8, 8), mode="bilinear")
    expected = CrossEntropy()(out["out"], y) + 0.25 * CrossEntropy()(aux, y)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert logits is out["out"]


def test_model_compile_keeps_parameter_names():
    """model.compile=true compiles the net in place: checkpoints keep their keys (the
    compilation itself runs at the first call; see the README for models checked)."""

    def build(compile: bool) -> SegmentationModule:
        net = UNet(5, depth=2, base_channels=4)
        return SegmentationModule(
            net, CrossEntropy(), torch.optim.SGD, num_classes=5, compile=compile
        )

    compiled, eager = build(True), build(False)
    assert compiled.net._compiled_call_impl is not None and eager.net._compiled_call_impl is None
    assert list(compiled.state_dict()) == list(eager.state_dict())


@pytest.mark.parametrize("name", list(ENCODERS))
def test_every_encoder_returns_its_documented_features(name):
    """channels / strides say what forward returns (any size: maps of ceil(size / stride)), and the
    default weights are a name torchvision or a weights package knows."""
    if name == "efficientnet_lite0":
        pytest.importorskip("timm", reason="the pretrained extra: pip install -e '.[pretrained]'")
    encoder = get_encoder(name).eval()
    with torch.no_grad():
        features = encoder(torch.randn(1, 3, 45, 67))
    assert [f.shape[1] for f in features] == list(encoder.channels)
    assert [f.shape[-2:] for f in features] == [(-(-45 // s), -(-67 // s)) for s in encoder.strides]
    if encoder.default_weights is None:
        with pytest.raises(ValueError, match="no pretrained weights"):
            encoder.load_weights({})
    elif encoder.default_weights not in PACKAGE_WEIGHTS:
        torchvision.models.get_weight(encoder.default_weights)


@pytest.mark.parametrize(
    "make",
    [
        lambda: UNet(3, encoder="resnet18"),
        lambda: UNet(3, encoder="vgg16", batch_norm=False, decoder_channels=[64, 32, 16, 8]),
        lambda: DeepLabV3Plus(3, encoder="vgg16", output_stride=32),
        lambda: DeepLabV3Plus(3, encoder="unet", aspp_channels=32, decoder_channels=32),
        lambda: FCN(3, variant="8s", encoder="resnet18"),
        lambda: PSPNet(3, backbone="resnet18", output_stride=32),
    ],
    ids=["unet-resnet18", "unet-vgg16", "deeplabv3p-vgg16", "deeplabv3p-unet", "fcn-resnet18",
         "pspnet-resnet18"],
)  # fmt: skip
def test_decoders_take_any_encoder_from_the_table(make):
    torch.manual_seed(0)
    net = make()
    x = torch.randn(2, 3, 45, 67, requires_grad=True)
    out = net(x)
    out = out["out"] if isinstance(out, dict) else out
    assert out.shape == (2, 3, 45, 67)
    F.cross_entropy(out, torch.randint(0, 3, (2, 45, 67))).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert net.default_weights == net.encoder.default_weights


def test_encoder_options_that_another_encoder_takes_are_refused():
    with pytest.raises(ValueError, match=r"model.encoder='nope'; use one of \('unet', 'vgg16'"):
        UNet(3, encoder="nope")
    with pytest.raises(ValueError, match="model.net.depth=3 shapes the unet encoder, not resnet18"):
        UNet(3, encoder="resnet18", depth=3)
    with pytest.raises(ValueError, match="conv_type='ds' shapes the vgg16 encoder, not resnet18"):
        FCN(3, encoder="resnet18", conv_type="ds")
    with pytest.raises(ValueError, match="cannot be dilated: set model.net.output_stride=32"):
        DeepLabV3Plus(3, encoder="vgg16")
    with pytest.raises(
        ValueError,
        match=r"encoder resnet18: output_stride 16 is not one of \(32,\); set model.net.output_stride=32",
    ):
        DeepLabV3Plus(3, encoder="resnet18")
    with pytest.raises(ValueError, match="strides \\(8, 16, 32\\); encoder unet ends at"):
        FCN(3, encoder="unet")
    with pytest.raises(ValueError, match="encoder vgg16 takes no option output_stride"):
        get_encoder("vgg16", output_stride=16)
