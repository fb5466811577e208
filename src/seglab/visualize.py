"""Turning label maps into pictures: palettes, overlays, grids, confusion-matrix figures, and
instances drawn one colour each with their class names."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import cv2
import numpy as np
import torch


def colorize(
    mask: np.ndarray, palette: Sequence[Sequence[int]], ignore_index: int = 255
) -> np.ndarray:
    """Label map (H, W) -> RGB uint8 (H, W, 3); ignored or unknown labels are white."""
    table = np.full((256, 3), 255, np.uint8)
    table[: len(palette)] = np.asarray(palette, np.uint8)
    if 0 <= ignore_index < 256:
        table[ignore_index] = 255
    return table[np.clip(mask, 0, 255).astype(np.uint8)]


def overlay(
    image: np.ndarray,
    mask: np.ndarray,
    palette: Sequence[Sequence[int]],
    alpha: float = 0.5,
    ignore_index: int = 255,
) -> np.ndarray:
    """Blends the colourised mask over the image; ignored pixels show the image alone."""
    colours = colorize(mask, palette, ignore_index).astype(np.float32)
    out = image.astype(np.float32)
    blend = (mask != ignore_index)[..., None]
    out = np.where(blend, (1 - alpha) * out + alpha * colours, out)
    return out.round().clip(0, 255).astype(np.uint8)


def hatch_uncertain(rgb: np.ndarray, uncertain: np.ndarray, period: int = 8) -> np.ndarray:
    """Hatches the ``uncertain`` pixels (bool (H, W)) of an RGB uint8 picture with diagonal
    stripes ``period`` pixels apart: half of each period is blended halfway to white, the
    other half halfway to black. A pixel (nearly) at its stripe's colour, which halfway would
    not move, is blended to the other colour instead, so every uncertain pixel changes and
    no other does."""
    ys, xs = np.indices(uncertain.shape)
    light = ((xs + ys) % period) < period // 2
    target = np.where(light, 255, 0).astype(np.float32)[..., None].repeat(3, axis=2)
    near = (np.abs(rgb.astype(np.float32) - target) <= 1).all(axis=2, keepdims=True)
    target = np.where(near, 255 - target, target)
    hatched = ((rgb.astype(np.float32) + target) / 2).round().clip(0, 255).astype(np.uint8)
    return np.where(uncertain[..., None], hatched, rgb)


def denormalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised (C, H, W) tensor -> uint8 (H, W, 3) picture (grayscale repeated)."""
    img = image.detach().float().cpu().numpy().transpose(1, 2, 0)
    img = img * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
    img = (img * 255).round().clip(0, 255).astype(np.uint8)
    return np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img[..., :3]


def grid(rows: list[list[np.ndarray]], gap: int = 2) -> np.ndarray:
    """Tiles equally long rows of RGB images (any sizes) onto one white canvas."""
    ch = max(img.shape[0] for row in rows for img in row)
    cw = max(img.shape[1] for row in rows for img in row)
    ncol = max(len(row) for row in rows)
    canvas = np.full((len(rows) * (ch + gap) - gap, ncol * (cw + gap) - gap, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            y, x = r * (ch + gap), c * (cw + gap)
            canvas[y : y + img.shape[0], x : x + img.shape[1]] = img
    return canvas


def confusion_matrix_figure(confmat: torch.Tensor | np.ndarray, class_names: Sequence[str]):
    """A matplotlib figure of the row-normalised confusion matrix (recall per label)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(confmat, dtype=np.float64)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    n = len(class_names)
    size = min(4 + 0.35 * n, 20)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=90)
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("prediction")
    ax.set_ylabel("label")
    if n <= 25:
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    f"{norm[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    fig.tight_layout()
    return fig


def instance_colours(n: int) -> list[tuple[int, int, int]]:
    """``n`` well-separated colours (golden-ratio hues), one per instance."""
    out = []
    for i in range(n):
        r, g, b = colorsys.hsv_to_rgb((0.1 + i * 0.618034) % 1.0, 0.85, 1.0)
        out.append((int(r * 255), int(g * 255), int(b * 255)))
    return out


def draw_instances(
    image: np.ndarray,
    masks: np.ndarray,
    labels: Sequence[int],
    scores: Sequence[float] | None,
    class_names: Sequence[str],
    alpha: float = 0.5,
) -> np.ndarray:
    """The image with each instance in its own colour, its outline, and its class name (and
    score) at its top-left corner."""
    out = image.astype(np.float32).copy()
    colours = instance_colours(len(masks))
    for m, c in zip(masks, colours, strict=True):
        m = m.astype(bool)
        out[m] = (1 - alpha) * out[m] + alpha * np.asarray(c, np.float32)
    out = out.round().clip(0, 255).astype(np.uint8)
    scale = max(0.3, min(image.shape[:2]) / 400)
    for k, (m, c) in enumerate(zip(masks, colours, strict=True)):
        m8 = m.astype(np.uint8)
        if not m8.any():
            continue
        contours, _ = cv2.findContours(m8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, c, 1)
        ys, xs = np.nonzero(m8)
        name = class_names[int(labels[k])] if int(labels[k]) < len(class_names) else "?"
        text = name if scores is None else f"{name} {float(scores[k]):.2f}"
        org = (int(xs.min()), max(int(ys.min()) - 2, 8))
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 2, cv2.LINE_AA)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, c, 1, cv2.LINE_AA)
    return out
