"""Architectures: output sizes, parameter counts, trunk freezing."""

from __future__ import annotations

import pytest
import torch

from seglab.losses import CrossEntropy
from seglab.models.unet import UNet
from seglab.module import SegmentationModule


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
    module = _module(train_trunk=False)
    module.train()
    before = {k: v.clone() for k, v in module.net.encoder.state_dict().items()}
    head_before = module.net.head.weight.clone()
    opt = module.optimizer_factory([p for p in module.parameters() if p.requires_grad])
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 3, (4, 16, 16))
    for _ in range(2):
        loss, _ = module._loss(module(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = module.net.encoder.state_dict()
    for key, value in before.items():  # weights and running stats, bit for bit
        assert torch.equal(value, after[key]), key
    assert not torch.equal(head_before, module.net.head.weight)  # the rest trains


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
    from seglab.optim import param_groups, scale_group_lrs

    opt = scale_group_lrs(torch.optim.SGD(param_groups(module.net, {"encoder": 0.1}), lr=0.1))
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == {"encoder": pytest.approx(0.01), "rest": pytest.approx(0.1)}
    with pytest.raises(ValueError, match="match no parameter"):
        param_groups(module.net, {"backbone": 0.1})


def test_poly_and_cosine_schedules_follow_their_formulas():
    from seglab.optim import CosineLR, PolyLR

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


class _AuxNet(torch.nn.Module):
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
