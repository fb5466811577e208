"""The seed project's simple convolutional autoencoder: no skip connections.

Encoder: 4 x [Conv k4 s2 p1, BatchNorm, ReLU] with widths nc, 2nc, 4nc, 8nc; the decoder
mirrors it with transposed convolutions; a 1x1 convolution classifies. Without skips it sees
texture more than outline (texture bias, as the seed reports): that is expected.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seglab.models.base import SegmentationNet


def _stack(conv: type[nn.Module], cin: int, widths: list[int]) -> nn.Sequential:
    """[conv k4 s2 p1, BatchNorm, ReLU] per width: halves (Conv2d) or doubles
    (ConvTranspose2d) the resolution at each step."""
    layers: list[nn.Module] = []
    for w in widths:
        layers += [conv(cin, w, 4, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        cin = w
    return nn.Sequential(*layers)


class ConvAutoencoder(SegmentationNet):
    def __init__(self, num_classes: int, in_channels: int = 3, nc: int = 8) -> None:
        super().__init__()
        self.encoder = _stack(nn.Conv2d, in_channels, [nc, 2 * nc, 4 * nc, 8 * nc])
        self.decoder = _stack(nn.ConvTranspose2d, 8 * nc, [4 * nc, 2 * nc, nc, nc])
        self.head = nn.Conv2d(nc, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        # Stride 16 with no skips: pad up to a multiple of 16 (replicating the border) and
        # crop back, so any input size gives logits of that size.
        if torch.onnx.is_in_onnx_export() or torch.jit.is_tracing():
            # The same padding computed from the runtime shape, so that an exported graph
            # takes any size (Python ints would be frozen at the traced sample's size).
            size = torch._shape_as_tensor(x)
            zero = torch.zeros((), dtype=size.dtype)
            pads = [zero, (16 - size[3] % 16) % 16, zero, (16 - size[2] % 16) % 16]
            x = F.pad(x, pads, mode="replicate")
        elif h % 16 or w % 16:
            x = F.pad(x, (0, (-w) % 16, 0, (-h) % 16), mode="replicate")
        return self.head(self.decoder(self.encoder(x)))[..., :h, :w]
