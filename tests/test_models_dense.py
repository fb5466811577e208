"""FC-DenseNet (Tiramisu, DenseNet encoder) and MobileNetV2-UNet: published sizes, skips at
the documented strides, any input size, and ImageNet weights going into the encoder."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from seglab.models.fcdensenet import DENSENETS, DenseNetFCN, FCDenseNet
from seglab.models.mobilenet_unet import MobileNetV2UNet
from seglab.models.pretrained import load_pretrained

TIRAMISU = {
    "56": dict(down_layers=[4] * 5, bottleneck_layers=4, growth_rate=12),
    "67": dict(down_layers=[5] * 5, bottleneck_layers=5, growth_rate=16),
    "103": dict(down_layers=[4, 5, 7, 10, 12], bottleneck_layers=15, growth_rate=16),
}


def _params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _bn_channels(net: nn.Module) -> int:
    return sum(m.num_features for m in net.modules() if isinstance(m, nn.BatchNorm2d))


def _convs(net: nn.Module) -> int:
    return sum(isinstance(m, nn.Conv2d | nn.ConvTranspose2d) for m in net.modules())


def _dense_block(cin: int, n: int, k: int) -> int:
    """BN (2 per input channel) + 3x3 conv with bias, for each layer."""
    return sum(2 * (cin + i * k) + 9 * (cin + i * k) * k + k for i in range(n))


def _tiramisu_decoder(c_up: int, skips: list[int], layers: list[int], k: int) -> tuple[int, int]:
    """Parameters of the upsampling path (coarsest skip first) and its output channels."""
    total = 0
    for cskip, n in zip(skips, layers, strict=True):
        total += 9 * c_up * c_up + c_up  # transition up
        total += _dense_block(c_up + cskip, n, k)
        c_out, c_up = c_up + cskip + n * k, n * k
    return total, c_out


def tiramisu_params(down: list[int], bottleneck: int, k: int, classes: int) -> int:
    """The paper's architecture, counted by hand (first conv 48 filters, 3 input channels)."""
    c, total, skips = 48, 3 * 48 * 9 + 48, []
    for n in down:
        total += _dense_block(c, n, k)
        c += n * k
        skips.append(c)
        total += 2 * c + c * c + c  # transition down: BN + 1x1 conv
    total += _dense_block(c, bottleneck, k)
    dec, c_out = _tiramisu_decoder(bottleneck * k, skips[::-1], down[::-1], k)
    return total + dec + c_out * classes + classes


@pytest.mark.parametrize(
    "name,published",
    # Jegou et al. 2017, Table 2. Their code counts every Lasagne parameter, BatchNorm mean and
    # inv_std included. FC-DenseNet56: the paper says 1.5M, but its architecture (56 layers,
    # checked below) has 1.40M counted that way, as others found (SimJeg/FC-DenseNet#31).
    [("56", 1.40e6), ("67", 3.5e6), ("103", 9.4e6)],
)
def test_tiramisu_matches_the_paper(name, published):
    kw = TIRAMISU[name]
    net = FCDenseNet(11, **kw)  # CamVid's 11 classes
    n = _params(net)
    assert n == tiramisu_params(kw["down_layers"], kw["bottleneck_layers"], kw["growth_rate"], 11)
    assert abs(n + 2 * _bn_channels(net) - published) <= 0.02 * published, n
    if name != "56":  # trainable parameters alone are within 2% too
        assert abs(n - published) <= 0.02 * published, n
    assert _convs(net) == int(name)  # the name is the number of convolution layers


def test_mobilenetv2_unet_matches_the_tensorflow_tutorial():
    net = MobileNetV2UNet(3)
    encoder = sum(p.numel() for p in torchvision.models.mobilenet_v2().features[:18].parameters())
    decoder = 0
    for cin, cout in [(320, 512), (512 + 576, 256), (256 + 192, 128), (128 + 144, 64)]:
        decoder += 9 * cin * cout + 2 * cout  # transposed conv without bias + BatchNorm
    decoder += 9 * (64 + 96) * 3 + 3
    assert decoder == 4_660_323  # the tutorial's model.summary(): trainable (decoder) params
    assert _params(net) == encoder + decoder == 6_472_035
    # Keras counts BatchNorm statistics too: 6,504,227 in the tutorial, whose stride-32 tap
    # (block_16_project) comes before that block's BatchNorm of 320 channels, which we keep.
    assert _params(net) + 2 * _bn_channels(net) == 6_504_227 + 4 * 320


@pytest.mark.parametrize(
    "depth,kwargs", [(121, {}), (169, dict(use_bottleneck=True, bottleneck_blocks=4))]
)
def test_densenet_fcn_parameters(depth, kwargs):
    net = DenseNetFCN(5, depth=depth, **kwargs)
    encoder = torchvision.models.get_model(f"densenet{depth}").features
    assert _params(net.encoder) == _params(encoder)
    growth, blocks = DENSENETS[depth]
    skips, c = [64], 64
    for n in blocks[:3]:
        c += n * growth
        skips.append(c)
        c //= 2
    c_enc, k = c + blocks[3] * growth, 16
    if kwargs.get("use_bottleneck"):
        bottleneck = _dense_block(c_enc, kwargs["bottleneck_blocks"], k)
        c_up = kwargs["bottleneck_blocks"] * k
    else:
        bottleneck, c_up = 0, blocks[3] * growth
    dec, c_out = _tiramisu_decoder(c_up, skips[::-1], [12, 10, 7, 5], k)
    head = 9 * c_out * 5 + 5
    assert _params(net) == _params(encoder) + bottleneck + dec + head
    if depth == 121 and not kwargs:
        assert _params(net) == 14_605_525  # the figure in conf/model/fcdensenet.yaml


@pytest.mark.parametrize(
    "make,strides,channels",
    [
        (
            lambda: FCDenseNet(3, **TIRAMISU["56"]),
            [1, 2, 4, 8, 16, 32],
            [96, 144, 192, 240, 288, 48],
        ),
        (lambda: DenseNetFCN(3), [2, 4, 8, 16, 32], [64, 256, 512, 1024, 512]),
        (lambda: MobileNetV2UNet(3), [2, 4, 8, 16, 32], [96, 144, 192, 576, 320]),
    ],
    ids=["tiramisu56", "densenet121", "mobilenetv2"],
)
def test_skips_at_documented_strides_and_any_size(make, strides, channels):
    torch.manual_seed(0)
    net = make().eval()
    with torch.no_grad():
        feats = net.features(torch.randn(2, 3, 64, 64))
        assert [f.shape[1] for f in feats] == channels
        assert [64 // f.shape[-1] for f in feats] == strides
        assert [64 // f.shape[-2] for f in feats] == strides
        assert net(torch.randn(2, 3, 37, 45)).shape == (2, 3, 37, 45)


def test_mobilenet_skips_are_the_tutorials_expand_activations():
    """block_{1,3,6,13}_expand_relu = the first layer of features[2], [4], [7], [14]."""
    net = MobileNetV2UNet(3).eval()
    seen = {}
    for i in (2, 4, 7, 14):
        net.encoder[i].conv[0].register_forward_hook(
            lambda m, inp, out, i=i: seen.setdefault(i, out.clone())
        )
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reference = net.encoder(x)  # the plain trunk fills ``seen``
        *skips, top = net.features(x)
    assert torch.equal(top, reference)
    for skip, i in zip(skips, (2, 4, 7, 14), strict=True):
        assert torch.equal(skip, seen[i])


def _random_like(model: nn.Module) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return {
        k: torch.randn_like(v, dtype=torch.float) if v.is_floating_point() else v + 7
        for k, v in model.state_dict().items()
    }


@pytest.mark.parametrize(
    "make,classifier",
    [
        (lambda: MobileNetV2UNet(3), torchvision.models.mobilenet_v2),
        (lambda: DenseNetFCN(3), torchvision.models.densenet121),
    ],
    ids=["mobilenetv2", "densenet121"],
)
def test_load_encoder_weights(make, classifier):
    net = make()
    torchvision.models.get_weight(net.default_weights)  # a name torchvision knows
    sd = _random_like(classifier())
    net.load_encoder_weights(sd)
    for key, value in net.encoder.state_dict().items():
        assert torch.equal(value, sd[f"features.{key}"]), key
    missing = dict(sd)
    key = next(k for k in missing if k.endswith("running_var"))
    del missing[key]
    with pytest.raises(ValueError, match="missing"):
        make().load_encoder_weights(missing)
    with pytest.raises(ValueError, match="shape"):  # 4-channel input, RGB weights
        type(net)(3, in_channels=4).load_encoder_weights(sd)


def test_densenet_loads_old_checkpoint_key_names():
    """torchvision's ImageNet DenseNet files predate its key names ("norm.1" for "norm1")
    and BatchNorm's num_batches_tracked; both load as torchvision itself loads them."""
    sd = _random_like(torchvision.models.densenet121())
    old = {}
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            continue
        for name in ("norm", "relu", "conv"):
            k = k.replace(f".{name}1.", f".{name}.1.").replace(f".{name}2.", f".{name}.2.")
        old[k] = v
    assert "features.denseblock1.denselayer1.norm.1.weight" in old
    net = DenseNetFCN(3)
    net.load_encoder_weights(old)
    for key, value in net.encoder.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, sd[f"features.{key}"]), key


def test_tiramisu_has_no_pretrained_weights():
    net = FCDenseNet(3, **TIRAMISU["56"])
    assert net.default_weights is None
    with pytest.raises(ValueError, match="has no pretrained encoder"):
        load_pretrained(net, True)
