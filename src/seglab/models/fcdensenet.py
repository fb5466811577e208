"""Fully convolutional DenseNets: the Tiramisu (Jegou et al., 2017) and one on torchvision's
DenseNet-121/169/201.

``FCDenseNet`` is "The One Hundred Layers Tiramisu": a 3x3 convolution (48 filters), then
dense blocks of BN-ReLU-Conv3x3(growth k)-Dropout layers, each followed by a transition down
(BN-ReLU-Conv1x1-Dropout-MaxPool 2); a bottleneck dense block; and an upsampling path where
a transition up (3x3 transposed convolution, stride 2) upsamples only the feature maps that
the previous dense block created (the full concatenation would explode the channel count),
is concatenated with the skip connection and feeds the next dense block. A final 1x1
convolution gives the logits. FC-DenseNet56 / 67 / 103 (1.5M / 3.5M / 9.4M parameters in the
paper) are the configs ``fcdensenet56`` / ``67`` / ``103``. The trunk (``.encoder``) is the
downsampling path: first convolution, down dense blocks and transitions down.

``DenseNetFCN`` is the seed project's variant: its encoder is an ImageNet DenseNet (the
seed's ``n_layers`` is our ``depth``), whose dense-block outputs at strides 4, 8 and 16 and
stem at stride 2 are the skips, with a Tiramisu decoder.

Any input size works without padding the input (padding would show the net borders it never
saw in training crops): pooling uses ceil mode and each upsampled map is cropped to its skip
connection's size.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from seglab.errors import InputError
from seglab.models.base import SegmentationNet, Tensors
from seglab.models.common import replace_first_conv
from seglab.models.state_dicts import load_exact, with_bn_counters

# torchvision's DenseNet configurations: depth -> (growth rate, layers per dense block).
DENSENETS = {121: (32, (6, 12, 24, 16)), 169: (32, (6, 12, 32, 32)), 201: (32, (6, 12, 48, 32))}
# Old torchvision DenseNet checkpoints (the ImageNet files) name "norm1" "norm.1" etc.
_LEGACY_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\..+)$")


class DenseLayer(nn.Sequential):
    """BN-ReLU-Conv3x3-Dropout: produces ``growth`` new feature maps."""

    def __init__(self, cin: int, growth: int, dropout: float) -> None:
        super().__init__(
            nn.BatchNorm2d(cin),
            nn.ReLU(inplace=True),
            nn.Conv2d(cin, growth, 3, padding=1),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
        )


class DenseBlock(nn.Module):
    """``n_layers`` dense layers, each seeing the block input and every earlier layer's maps.

    Returns the input concatenated with all new maps, or only the new maps (what a
    transition up upsamples) with ``new_only=True``."""

    def __init__(self, cin: int, n_layers: int, growth: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DenseLayer(cin + i * growth, growth, dropout) for i in range(n_layers)
        )
        self.out_channels = cin + n_layers * growth
        self.new_channels = n_layers * growth

    def forward(self, x: torch.Tensor, new_only: bool = False) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, dim=1)))
        return torch.cat(features[1:] if new_only else features, dim=1)


class TransitionDown(nn.Sequential):
    """BN-ReLU-Conv1x1-Dropout-MaxPool; ceil mode keeps an odd size's last row/column."""

    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__(
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            nn.MaxPool2d(2, ceil_mode=True),
        )


class TransitionUp(nn.ConvTranspose2d):
    """3x3 transposed convolution, stride 2: exactly twice the input size, never smaller
    than a ceil-pooled skip connection, to which the decoder crops it."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout, 3, stride=2, padding=1, output_padding=1)


class TiramisuDecoder(nn.Module):
    """The upsampling path: transition up on the previous block's new maps, concatenation
    with the skip, dense block. Returns the last block's full concatenation."""

    def __init__(
        self,
        cin: int,
        skip_channels: Sequence[int],
        layers: Sequence[int],
        growth: int,
        dropout: float,
    ) -> None:
        super().__init__()
        if len(layers) != len(skip_channels):
            raise InputError(
                f"the decoder needs one dense block per skip connection: {len(skip_channels)} "
                f"skips, {len(layers)} blocks ({list(layers)})"
            )
        self.ups, self.blocks = nn.ModuleList(), nn.ModuleList()
        for cskip, n in zip(skip_channels, layers, strict=True):
            self.ups.append(TransitionUp(cin, cin))
            self.blocks.append(DenseBlock(cin + cskip, n, growth, dropout))
            cin = self.blocks[-1].new_channels
        self.out_channels = self.blocks[-1].out_channels

    def forward(self, x: torch.Tensor, skips: Sequence[torch.Tensor]) -> torch.Tensor:
        """``skips`` coarsest first."""
        last = len(self.blocks) - 1
        for i, (up, block, skip) in enumerate(zip(self.ups, self.blocks, skips, strict=True)):
            x = torch.cat([up(x)[..., : skip.shape[-2], : skip.shape[-1]], skip], dim=1)
            x = block(x, new_only=i < last)
        return x


def _init_conv_he(module: nn.Module) -> None:
    """He-uniform convolutions and zero biases, as the paper: PyTorch's default scale leaves
    a 100-layer net with vanishing signals at the start."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class TiramisuEncoder(nn.Module):
    """First convolution, then dense block + transition down per level; returns the skips
    (the dense-block outputs, finest first) and the pooled coarsest map."""

    def __init__(
        self,
        in_channels: int,
        first_channels: int,
        layers: Sequence[int],
        growth: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, first_channels, 3, padding=1)
        self.blocks, self.downs = nn.ModuleList(), nn.ModuleList()
        c = first_channels
        self.skip_channels: list[int] = []
        for n in layers:
            self.blocks.append(DenseBlock(c, n, growth, dropout))
            c = self.blocks[-1].out_channels
            self.skip_channels.append(c)
            self.downs.append(TransitionDown(c, dropout))
        self.out_channels = c

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        x = self.stem(x)
        skips = []
        for block, down in zip(self.blocks, self.downs, strict=True):
            x = block(x)
            skips.append(x)
            x = down(x)
        return skips, x


class FCDenseNet(SegmentationNet):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        down_layers: Sequence[int] = (4, 5, 7, 10, 12),
        bottleneck_layers: int = 15,
        up_layers: Sequence[int] | None = None,
        growth_rate: int = 16,
        first_channels: int = 48,
        dropout: float = 0.2,
    ) -> None:
        """Defaults: FC-DenseNet103. ``up_layers`` defaults to ``down_layers`` reversed."""
        super().__init__()
        up_layers = list(reversed(down_layers)) if up_layers is None else list(up_layers)
        self.encoder = TiramisuEncoder(
            in_channels, first_channels, down_layers, growth_rate, dropout
        )
        self.bottleneck = DenseBlock(
            self.encoder.out_channels, bottleneck_layers, growth_rate, dropout
        )
        self.decoder = TiramisuDecoder(
            self.bottleneck.new_channels,
            self.encoder.skip_channels[::-1],
            up_layers,
            growth_rate,
            dropout,
        )
        self.head = nn.Conv2d(self.decoder.out_channels, num_classes, 1)
        _init_conv_he(self)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The skip connections (strides 1, 2, 4, ...) and the bottleneck's new maps."""
        skips, x = self.encoder(x)
        return [*skips, self.bottleneck(x, new_only=True)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *skips, x = self.features(x)
        return self.head(self.decoder(x, skips[::-1]))


class DenseNetFCN(SegmentationNet):
    """An FC-DenseNet whose downsampling path is torchvision's DenseNet-121/169/201.

    Skips: the stem's activation (stride 2) and the outputs of dense blocks 1-3 (strides 4, 8,
    16). With ``use_bottleneck=False`` the DenseNet's own last dense block (stride 32) is the
    bottleneck and, as in the Tiramisu, only the maps it creates go up (512 for DenseNet-121,
    1024 for 169/201); ``use_bottleneck=True`` adds a new, trained-from-scratch dense block of
    ``bottleneck_blocks`` layers (growth ``growth_rate``) on the encoder's output instead, the
    seed project's option. The decoder is the Tiramisu's with ``decoder_layers`` layers per
    block (strides 16, 8, 4, 2), and a last 3x3 transposed convolution, stride 2, gives the
    logits at full resolution.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        depth: int = 121,
        use_bottleneck: bool = False,
        bottleneck_blocks: int = 32,
        decoder_layers: Sequence[int] = (12, 10, 7, 5),
        growth_rate: int = 16,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if depth not in DENSENETS:
            raise InputError(f"DenseNetFCN: depth must be one of {sorted(DENSENETS)}, got {depth}")
        self.default_weights = f"DenseNet{depth}_Weights.IMAGENET1K_V1"
        enc_growth, blocks = DENSENETS[depth]
        self.encoder = getattr(torchvision.models, f"densenet{depth}")(weights=None).features
        if in_channels != 3:
            replace_first_conv(self.encoder, in_channels)
        for i in range(1, 4):  # ceil mode: odd sizes keep their last row/column
            self.encoder.get_submodule(f"transition{i}.pool").ceil_mode = True
        channels = [self.encoder.conv0.out_channels]  # stem, then dense blocks 1-3
        channels += [
            self.encoder.get_submodule(f"denseblock{i}").denselayer1.norm1.num_features
            + blocks[i - 1] * enc_growth
            for i in range(1, 4)
        ]
        c_enc = self.encoder.norm5.num_features
        self.new_from = c_enc - blocks[3] * enc_growth  # denseblock4's first new channel
        self.bottleneck = (
            DenseBlock(c_enc, bottleneck_blocks, growth_rate, dropout) if use_bottleneck else None
        )
        c_up = self.bottleneck.new_channels if self.bottleneck else c_enc - self.new_from
        self.decoder = TiramisuDecoder(c_up, channels[::-1], decoder_layers, growth_rate, dropout)
        self.head = nn.ConvTranspose2d(
            self.decoder.out_channels, num_classes, 3, stride=2, padding=1, output_padding=1
        )
        _init_conv_he(self.decoder)
        if self.bottleneck:
            _init_conv_he(self.bottleneck)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The skips (strides 2, 4, 8, 16) and the maps that go up from stride 32."""
        skips = []
        for name, module in self.encoder.named_children():
            x = module(x)
            if name in ("relu0", "denseblock1", "denseblock2", "denseblock3"):
                skips.append(x)
        x = F.relu(x)  # torchvision's DenseNet applies it after norm5, outside .features
        x = self.bottleneck(x, new_only=True) if self.bottleneck else x[:, self.new_from :]
        return [*skips, x]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *skips, y = self.features(x)
        y = self.decoder(y, skips[::-1])
        return self.head(y)[..., : x.shape[-2], : x.shape[-1]]

    def load_encoder_weights(self, state_dict: Tensors) -> None:
        """Loads a torchvision DenseNet classification state dict (``features.*``; the
        classifier is ignored) into the encoder, old checkpoints' key names included."""
        features = {}
        for key, value in state_dict.items():
            if key.startswith("features."):
                key = key.removeprefix("features.")
                legacy = _LEGACY_KEY.match(key)
                features[legacy.group(1) + legacy.group(2) if legacy else key] = value
        load_exact(self.encoder, with_bn_counters(self.encoder, features), "DenseNet weights")
