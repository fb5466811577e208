"""The memory guard of whole-image inference: estimate what one pass over an image needs
before running it, and run the image in sliding windows (or stop with a message) when the
estimate is over a limit, instead of exhausting the machine's memory without a word.

The estimate is measured, not modelled: the net runs on small crops of the real input (same
dtype, device and autocast) while a ``TorchDispatchMode`` counts the bytes of the live
tensors and records the peak. A line through the peaks of two crop sizes gives fixed bytes
(autocast's weight copies, pooled features) plus bytes per pixel; the estimate for an image
is that line at its pixel count times the batch, raised by ``UNSEEN_MARGIN`` for what the
probe cannot see (a convolution library's scratch space, allocator slack; docs/inference.md
compares estimate and measured peak). It is measured once per kind of input (channels,
dtype, device, autocast), so once per run, in eager mode even for compiled nets, and assumes
memory linear in the pixels (true of seglab's convolutional nets, not of global attention).
Only nets PyTorch runs are probed (an ``nn.Module`` or its bound method); onnxruntime
sessions are not, and run unguarded.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from seglab.errors import InputError

log = logging.getLogger(__name__)

Predictor = Callable[[torch.Tensor], torch.Tensor]

PROBE_SIDE = 128  # the larger probe crop's side (the smaller one has half of it)
AUTO_FRACTION = 0.5  # memory_limit_gb=auto: this fraction of the available memory
# Memory the probe cannot see (a convolution library's scratch space, allocator slack): the
# estimate is raised by this factor. On CPU the probe saw 75-100 % of the measured peak
# (docs/inference.md).
UNSEEN_MARGIN = 1.25
GIB = 2**30


def _storages(tree: Any) -> list[torch.UntypedStorage]:
    out = []
    for t in tree_flatten(tree)[0]:
        if isinstance(t, torch.Tensor):
            try:
                out.append(t.untyped_storage())
            except (RuntimeError, NotImplementedError):  # no storage (e.g. mkldnn, sparse)
                continue
    return out


class LiveBytes(TorchDispatchMode):
    """Counts the bytes of the storages the operators it sees allocate, while they live, and
    keeps the peak. An output sharing an input's storage (a view, an in-place result: of the
    image or of a weight made before) allocates nothing; a storage is uncounted when PyTorch
    frees it (a finalizer on the storage object, which PyTorch keeps alive with it)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = self.peak = 0

    def _freed(self, ptr: int) -> None:
        self.current -= self.live.pop(ptr, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        inputs = {s.data_ptr() for s in _storages((args, kwargs))}
        for storage in _storages(out):
            ptr, size = storage.data_ptr(), storage.nbytes()
            if ptr and size and ptr not in inputs and ptr not in self.live:
                self.live[ptr] = size
                self.current += size
                self.peak = max(self.peak, self.current)
                weakref.finalize(storage, self._freed, ptr)
        return out


def peak_bytes(predict: Predictor, x: torch.Tensor) -> tuple[int, torch.Tensor]:
    """The peak of live tensor bytes that ``predict(x).float()`` creates, and its logits.
    Compiled nets run eagerly here (their compiled code hides its buffers)."""
    with torch.no_grad(), torch.compiler.set_stance("force_eager"), LiveBytes() as mode:
        logits = predict(x).float()
    return mode.peak, logits


@dataclass(frozen=True)
class Footprint:
    """What one pass needs: ``fixed + per_pixel * pixels * batch`` bytes; ``channels``: the
    logits' channels (the sliding-window accumulators hold that many per pixel)."""

    fixed: float
    per_pixel: float
    channels: int

    def bytes(self, n: int, h: int, w: int) -> float:
        return self.fixed + self.per_pixel * n * h * w


def measure(predict: Predictor, x: torch.Tensor, side: int = PROBE_SIDE) -> Footprint:
    """The footprint of ``predict`` on inputs like ``x`` (N, C, H, W), from crops of its first
    image: ``side`` pixels (at most the image) and half that. The half crop runs twice: the
    first pass also makes what is made once per pass and kept (autocast's copies of the
    weights, cached until the autocast context ends), which is then the fixed part."""
    h, w = min(side, x.shape[-2]), min(side, x.shape[-1])
    sh, sw = max(1, h // 2), max(1, w // 2)
    first, logits = peak_bytes(predict, x[:1, :, :sh, :sw])
    small, _ = peak_bytes(predict, x[:1, :, :sh, :sw])
    big, _ = peak_bytes(predict, x[:1, :, :h, :w])
    channels = logits.shape[1]
    if sh * sw == h * w:  # a 1-pixel image: nothing to fit a line to
        return Footprint(0.0, first / (h * w), channels)
    per_pixel = (big - small) / (h * w - sh * sw)
    if per_pixel <= 0:  # no growth with size (noise): all of it per pixel, the safe side
        return Footprint(0.0, max(first, big) / (h * w), channels)
    return Footprint(max(0.0, first - per_pixel * sh * sw), per_pixel, channels)


def probeable(predict: Predictor) -> bool:
    """Whether ``predict`` runs PyTorch operators the probe can see: an ``nn.Module`` or a
    bound method of one (not an onnxruntime session behind a function)."""
    return isinstance(predict, nn.Module) or isinstance(
        getattr(predict, "__self__", None), nn.Module
    )


def available_bytes(device: torch.device) -> int | None:
    """Memory a new allocation can take now: on CUDA the free memory plus what PyTorch's
    caching allocator holds unused; elsewhere the host's MemAvailable (Linux), else its free
    pages; None when unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_limit_setting(limit_gb: Any) -> float | str | None:
    """``inference.memory_limit_gb``: "auto", a positive number of GiB or null."""
    if limit_gb is None or limit_gb == "auto":
        return limit_gb
    if isinstance(limit_gb, (int, float)) and not isinstance(limit_gb, bool) and limit_gb > 0:
        return float(limit_gb)
    raise InputError(
        "inference.memory_limit_gb must be auto (half the available memory), a positive "
        f"number of GiB or null (no memory guard), got {limit_gb!r}"
    )


def gib(n: float) -> str:
    return f"{n / GIB:.3g} GiB"


class MemoryGuard:
    """Decides, image by image, whether a whole-image pass fits under the limit
    (``inference.memory_limit_gb``) and what to do when it does not
    (``inference.on_large_image``: ``slide`` or ``error``)."""

    def __init__(self, limit_gb: Any = "auto", on_large_image: str = "slide") -> None:
        if on_large_image not in ("slide", "error"):
            raise InputError(
                f"inference.on_large_image must be 'slide' or 'error', got {on_large_image!r}"
            )
        self.setting, self.on_large_image = check_limit_setting(limit_gb), on_large_image
        self.footprints: dict[tuple, Footprint] = {}
        self.limits: dict[str, int | None] = {}
        self.warned = False

    def limit(self, device: torch.device) -> int | None:
        """The limit in bytes on ``device`` (auto: read once, at the first image)."""
        if self.setting is None or isinstance(self.setting, float):
            return None if self.setting is None else int(self.setting * GIB)
        key = str(device)
        if key not in self.limits:
            available = available_bytes(device)
            self.limits[key] = None if available is None else int(AUTO_FRACTION * available)
        return self.limits[key]

    def footprint(self, predict: Predictor, x: torch.Tensor) -> Footprint:
        dev = x.device.type
        amp = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None
        key = (x.shape[1], x.dtype, str(x.device), amp)
        if key not in self.footprints:
            self.footprints[key] = measure(predict, x)
            log.debug("inference memory footprint for %s: %s", key, self.footprints[key])
        return self.footprints[key]

    def needs_windows(
        self, predict: Predictor, x: torch.Tensor, window: int | Sequence[int]
    ) -> bool:
        """True when a whole pass over ``x`` would exceed the limit and windows of ``window``
        pixels fit; raises ``InputError`` when the image must not or cannot be run in
        windows (``on_large_image=error``, or one window is already over the limit)."""
        limit = self.limit(x.device) if probeable(predict) else None
        if limit is None:
            return False
        n, _, h, w = x.shape
        fp = self.footprint(predict, x)
        need = UNSEEN_MARGIN * fp.bytes(n, h, w)
        if need <= limit:
            return False
        what = (
            f"a whole-image pass over a {h}x{w} image (batch {n}) needs about {gib(need)}, "
            f"over the memory limit of {gib(limit)} (inference.memory_limit_gb="
            f"{self.setting if self.setting == 'auto' else f'{self.setting:g}'}"
            f"{': half the available memory' if self.setting == 'auto' else ''})"
        )
        if self.on_large_image == "error":
            raise InputError(
                f"{what}; run it in windows with inference.mode=slide, or raise the limit "
                "with inference.memory_limit_gb=<GiB> (null: no limit)"
            )
        self._check_windows(fp, x, window, limit)
        if not self.warned:
            self.warned = True
            log.warning(
                "%s: running it in sliding windows (inference.window=%s, inference.overlap, "
                "inference.blend). Set inference.mode=slide to run every image so, "
                "inference.on_large_image=error to stop instead, or another limit with "
                "inference.memory_limit_gb=<GiB> (null: no guard). Logged once per run.",
                what,
                window,
            )
        return True

    def _check_windows(
        self, fp: Footprint, x: torch.Tensor, window: int | Sequence[int], limit: int
    ) -> None:
        """Raises when the sliding windows of ``x`` would still need more than ``limit``: one
        window's pass plus the float32 logits the windows are blended into."""
        n, _, h, w = x.shape
        wh, ww = (window, window) if isinstance(window, int) else window
        wh, ww = min(int(wh), h), min(int(ww), w)
        blended = 4.0 * (2 * n * fp.channels + 1) * h * w  # sum, weights and the mean
        need = UNSEEN_MARGIN * fp.bytes(n, wh, ww) + 4.0 * n * fp.channels * wh * ww + blended
        if need > limit:
            raise InputError(
                f"sliding windows of {wh}x{ww} pixels over a {h}x{w} image (batch {n}) "
                f"still need about {gib(need)} ({gib(blended)} of it the blended logits of "
                f"the whole image), over the memory limit of {gib(limit)}; lower "
                f"inference.window (now {window}) or raise inference.memory_limit_gb"
            )
