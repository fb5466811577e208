"""How evaluation and prediction turn an image into logits: whole image or sliding window,
optionally averaged over scales and horizontal flips (test-time augmentation).

Sliding windows (as mmsegmentation's ``slide`` mode) let a model trained on crops see large
images at the scale it learnt, in bounded memory: windows of ``window`` pixels step by
``window * (1 - overlap)``, the last one flush with the border, and every pixel's logits are
the weighted mean over the windows covering it (``blend="mean"``: equal weights;
``"gaussian"``: weights falling off towards a window's border, where context is missing).
Along a side shorter than the window, the window shrinks to the image (every seglab model
takes any input size), so a window covering the image is exactly the whole-image pass.

Test-time augmentation resizes the image by each of ``scales``, predicts (whole or sliding),
also on the mirrored image when ``flip``, resizes the logits back and averages them. Logits
(not probabilities) are averaged, so one-channel binary nets work the same way.

In ``whole`` mode a memory guard (``seglab.memory_guard``) first estimates what the pass over
each image (or scaled view) needs; above ``memory_limit_gb`` it runs that image in sliding
windows (``on_large_image="slide"``, with a warning once) or stops (``"error"``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F

from seglab.errors import InputError
from seglab.memory_guard import MemoryGuard

Predictor = Callable[[torch.Tensor], torch.Tensor]


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _starts(size: int, window: int, stride: int) -> list[int]:
    """Window origins along one axis: every ``stride``, the last flush with the end."""
    if size <= window:
        return [0]
    starts = list(range(0, size - window, stride))
    return [*starts, size - window]


def _gaussian(h: int, w: int, device: torch.device) -> torch.Tensor:
    """Blending weights, 1 at the window centre and exp(-2) at its border."""
    ys = torch.linspace(-1, 1, h, device=device)
    xs = torch.linspace(-1, 1, w, device=device)
    return torch.exp(-2 * (ys[:, None] ** 2 + xs[None, :] ** 2)).clamp_min(1e-3)


def _check_slide(overlap: float, blend: str) -> None:
    if not 0 <= overlap < 1:
        raise InputError(f"inference.overlap must be in [0, 1), got {overlap}")
    if blend not in ("mean", "gaussian"):
        raise InputError(f"inference.blend must be 'mean' or 'gaussian', got {blend!r}")


def slide(
    predict: Predictor,
    x: torch.Tensor,
    window: int | Sequence[int] = 512,
    overlap: float = 1 / 3,
    blend: str = "mean",
) -> torch.Tensor:
    """Logits of ``x`` (N, C, H, W) from overlapping windows (see the module docstring)."""
    _check_slide(overlap, blend)
    n, _, H, W = x.shape
    wh, ww = _pair(window)
    wh, ww = min(wh, H), min(ww, W)  # a window never exceeds the image: no padding needed
    sh, sw = max(1, round(wh * (1 - overlap))), max(1, round(ww * (1 - overlap)))
    weight = _gaussian(wh, ww, x.device) if blend == "gaussian" else None
    total = norm = None
    for y0 in _starts(H, wh, sh):
        for x0 in _starts(W, ww, sw):
            logits = predict(x[..., y0 : y0 + wh, x0 : x0 + ww]).float()
            if total is None:
                total = logits.new_zeros(n, logits.shape[1], H, W)
                norm = logits.new_zeros(1, 1, H, W)
            wgt = weight if weight is not None else logits.new_ones(wh, ww)
            total[..., y0 : y0 + wh, x0 : x0 + ww] += logits * wgt
            norm[..., y0 : y0 + wh, x0 : x0 + ww] += wgt
    return total / norm


class Inferer:
    """The configured inference (``conf/inference/``); called as ``inferer(predict, x)``
    with ``predict`` mapping an image batch to logits at its resolution."""

    def __init__(
        self,
        mode: str = "whole",
        window: int | Sequence[int] = 512,
        overlap: float = 1 / 3,
        blend: str = "mean",
        scales: Sequence[float] = (1.0,),
        flip: bool = False,
        memory_limit_gb: float | str | None = "auto",
        on_large_image: str = "slide",
    ) -> None:
        if mode not in ("whole", "slide"):
            raise InputError(f"inference.mode must be 'whole' or 'slide', got {mode!r}")
        if not scales or any(s <= 0 for s in scales):
            raise InputError(f"inference.scales must be positive numbers, got {list(scales)}")
        _check_slide(overlap, blend)  # whole mode too: the memory guard may switch to windows
        self.mode, self.window, self.overlap, self.blend = mode, window, overlap, blend
        self.scales, self.flip = [float(s) for s in scales], bool(flip)
        self.guard = MemoryGuard(memory_limit_gb, on_large_image)

    @property
    def is_plain(self) -> bool:
        """One whole-image pass: the net's own output (auxiliary head included) is used."""
        return self.mode == "whole" and self.scales == [1.0] and not self.flip

    def fits_whole(self, predict: Predictor, x: torch.Tensor) -> bool:
        """Whether ``x`` may run in one pass under the memory guard (``is_plain`` callers
        that bypass the inferer ask this first); raises as the guard does."""
        return not self.guard.needs_windows(predict, x, self.window)

    def _once(self, predict: Predictor, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "slide" or not self.fits_whole(predict, x):
            return slide(predict, x, self.window, self.overlap, self.blend)
        return predict(x).float()

    @property
    def num_views(self) -> int:
        """How many views ``views`` yields: one per scale, twice that with ``flip``."""
        return len(self.scales) * (2 if self.flip else 1)

    def views(self, predict: Predictor, x: torch.Tensor) -> Iterator[torch.Tensor]:
        """Each view's logits (a scale, mirrored or not), float, at the size of ``x`` and
        mirrored back: what ``__call__`` averages, and what the spread of test-time
        augmentation (``seglab.uncertainty``) is measured over."""
        size = x.shape[-2:]
        for scale in self.scales:
            xs = x
            if scale != 1.0:
                scaled = [max(1, round(s * scale)) for s in size]
                xs = F.interpolate(x, size=scaled, mode="bilinear", align_corners=False)
            views = [(xs, False), (xs.flip(-1), True)] if self.flip else [(xs, False)]
            for view, flipped in views:
                logits = self._once(predict, view)
                if flipped:
                    logits = logits.flip(-1)
                if logits.shape[-2:] != size:
                    logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
                yield logits

    def __call__(self, predict: Predictor, x: torch.Tensor) -> torch.Tensor:
        return mean_of_views(self.views(predict, x))


def mean_of_views(views: Iterable[torch.Tensor]) -> torch.Tensor:
    """The mean of the views' logits, summed in order (so the same views always give the
    same bits); one view is returned as it is, without a copy."""
    total = None
    count = 0
    for logits in views:
        total = logits if total is None else total + logits
        count += 1
    if total is None:
        raise ValueError("no view to average")
    return total if count == 1 else total / count
