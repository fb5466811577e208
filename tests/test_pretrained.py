"""Pretrained weights: loaded exactly where asked, a clear stop where missing, never random."""

from __future__ import annotations

import pytest
import torch
import torchvision

from seglab.instantiators import build_module
from seglab.models.fcn import FCN
from seglab.models.pretrained import cache_file, load_pretrained
from seglab.models.segnet import SegNet
from seglab.models.torchvision_seg import TorchvisionSegmentation
from seglab.models.unet import UNet


def test_missing_weights_stop_with_the_file_to_place(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cfg = make_cfg("train", "model=lraspp_mobilenetv3", "model.pretrained=true")
    url, path = cache_file("MobileNet_V3_Large_Weights.IMAGENET1K_V1")
    with pytest.raises(FileNotFoundError) as e:
        build_module(cfg)
    msg = str(e.value)
    assert url in msg and str(path) in msg and "model.weights_path" in msg
    assert str(path).startswith(str(tmp_path / "torch"))
    with pytest.raises(ValueError, match="has no pretrained encoder"):
        load_pretrained(UNet(2, depth=2, base_channels=4), True)
    with pytest.raises(ValueError, match="not a torchvision weights name"):
        load_pretrained(SegNet(2), "NoSuch_Weights.X")


def test_cached_weights_load_into_the_backbone(make_cfg, tmp_path, monkeypatch):
    """A (random) MobileNetV3 ImageNet state dict in torch's cache ends up in the backbone."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    _, path = cache_file("MobileNet_V3_Large_Weights.IMAGENET1K_V1")
    path.parent.mkdir(parents=True)
    source = torchvision.models.mobilenet_v3_large().state_dict()
    torch.save(source, path)
    cfg = make_cfg("train", "model=lraspp_mobilenetv3", "model.pretrained=true")
    backbone = build_module(cfg).net.encoder.state_dict()
    assert len(backbone) > 100
    for key, value in backbone.items():
        assert torch.equal(value, source[f"features.{key}"]), key


def test_vgg_weights_give_torchvision_vgg_features():
    """FCN (VGG16) and SegNet (VGG16-BN, conv bias folded into BatchNorm) compute what
    torchvision's VGG computes with the same weights; fc6 becomes conv6."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 32, 32)
    vgg_bn = torchvision.models.vgg16_bn().eval()
    for m in vgg_bn.modules():  # non-trivial statistics, so the folding is tested
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    segnet = SegNet(3).eval()
    load_pretrained(segnet, False, None)
    segnet.load_encoder_weights(vgg_bn.state_dict())
    with torch.no_grad():
        assert torch.allclose(segnet.encoder.stages[0](x), vgg_bn.features[:6](x), atol=1e-5)

    vgg = torchvision.models.vgg16().eval()
    fcn = FCN(3, variant="32s").eval()
    fcn.load_encoder_weights(vgg.state_dict())
    with torch.no_grad():
        pool5 = fcn.encoder(torch.randn(1, 3, 224, 224))[-1]
        assert pool5.shape[-2:] == (7, 7)
        fc6 = vgg.classifier[0](pool5.flatten(1))
        conv6 = fcn.classifier[0](pool5)[:, :, 3, 3]  # the one fully-inside position
        assert torch.allclose(conv6, fc6, atol=1e-4)
        assert torch.allclose(fcn.encoder.stages[0](x), vgg.features[:5](x))
    with pytest.raises(ValueError, match="conv_type=conv"):
        FCN(3, conv_type="ds").load_encoder_weights(vgg.state_dict())


def test_weights_path_takes_a_net_state_dict_or_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    src = TorchvisionSegmentation("lraspp_mobilenet_v3_large", 4)
    net_file, ckpt_file = tmp_path / "net.pt", tmp_path / "run.ckpt"
    torch.save(src.state_dict(), net_file)
    torch.save({"state_dict": {f"net.{k}": v for k, v in src.state_dict().items()}}, ckpt_file)
    for f in (net_file, ckpt_file):
        dst = TorchvisionSegmentation("lraspp_mobilenet_v3_large", 4)
        assert load_pretrained(dst, False, str(f)).startswith("whole net")
        for k, v in dst.state_dict().items():
            assert torch.equal(v, src.state_dict()[k]), k
    # Weights of another class count do not fit the whole net: a named error, no partial load.
    with pytest.raises(ValueError, match="of another shape"):
        load_pretrained(
            TorchvisionSegmentation("lraspp_mobilenet_v3_large", 3), False, str(ckpt_file)
        )
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_pretrained(src, False, str(tmp_path / "absent.pt"))
