"""Export a trained net to ONNX with dynamic batch, height and width, and check it.

The exported graph returns the main logits only (an auxiliary head is a training device).
After export the ONNX model runs under onnxruntime on a sample and its output is compared
with PyTorch's: the largest absolute difference is reported, and a large one is an error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from seglab.module import split_output


class LogitsOnly(nn.Module):
    """The net's main logits as one tensor, whatever the net returns."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return split_output(self.net(x))[0]


def export_onnx(net: nn.Module, sample: torch.Tensor, path: str | Path) -> Path:
    """Writes ``net`` (in eval mode, fp32) as ONNX; height, width and batch stay dynamic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapped = LogitsOnly(net).eval().float()
    with torch.no_grad():
        torch.onnx.export(
            wrapped,
            (sample.float(),),
            str(path),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={
                "image": {0: "batch", 2: "height", 3: "width"},
                "logits": {0: "batch", 2: "height", 3: "width"},
            },
            opset_version=17,
            dynamo=False,
        )
    return path


def check_onnx(net: nn.Module, path: str | Path, sample: torch.Tensor) -> float:
    """Max absolute difference between onnxruntime's and PyTorch's logits on ``sample``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {"image": sample.float().numpy()})
    with torch.no_grad():
        torch_out = LogitsOnly(net).eval().float()(sample.float()).numpy()
    return float(np.abs(onnx_out - torch_out).max())
