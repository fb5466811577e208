"""The seed project's simple convolutional autoencoder: no skip connections.

Encoder: 4 x [Conv k4 s2 p1, BatchNorm, ReLU] with widths nc, 2nc, 4nc, 8nc; the decoder
mirrors it with transposed convolutions; a 1x1 convolution classifies. Without skips it sees
texture more than outline (texture bias, as the seed reports): that is expected.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvAutoencoder(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, nc: int = 8) -> None:
        super().__init__()
        widths = [nc, 2 * nc, 4 * nc, 8 * nc]
        enc, cin = [], in_channels
        for w in widths:
            enc += [
                nn.Conv2d(cin, w, 4, 2, 1, bias=False),
                nn.BatchNorm2d(w),
                nn.ReLU(inplace=True),
            ]
            cin = w
        self.encoder = nn.Sequential(*enc)
        dec = []
        for w in [4 * nc, 2 * nc, nc, nc]:
            dec += [
                nn.ConvTranspose2d(cin, w, 4, 2, 1, bias=False),
                nn.BatchNorm2d(w),
                nn.ReLU(inplace=True),
            ]
            cin = w
        self.decoder = nn.Sequential(*dec)
        self.head = nn.Conv2d(nc, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        # Stride 16 with no skips: pad up to a multiple of 16 (replicating the border) and
        # crop back, so any input size gives logits of that size.
        ph, pw = (-h) % 16, (-w) % 16
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        return self.head(self.decoder(self.encoder(x)))[..., :h, :w]
