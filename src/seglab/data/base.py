"""The dataset base class every seglab dataset derives from.

A subclass only says how to read sample ``i`` as a uint8 RGB image (H, W, 3) and an integer
label map (H, W) already in training ids (``ignore_index`` for void). The base class applies
the albumentations pipeline and returns ``{"image", "mask", "index"}``.

Randomness of augmentation is a function of the key the sampler yields: ``(index, seed)``
pairs from ``seglab.data.samplers.SeededSampler`` make every sample's augmentation depend only
on (run seed, epoch, index), never on worker count, process count or what ran before. That is
what makes a resumed run and a DDP run repeat an uninterrupted single-process run exactly.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from seglab.data.readers import to_channels


class SegmentationDataset(Dataset):
    # Channels handed on (``data.in_channels``, set by the datamodule): 1 makes ``load``'s
    # RGB grey by ``readers.to_channels`` (a grey file read as RGB comes back unchanged).
    in_channels: int = 3

    def __init__(self, transform: Any = None) -> None:
        self.transform = transform

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
        """Returns (image uint8 HxWx3, mask integer HxW)."""
        raise NotImplementedError

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        image, mask = self.load(index)
        if self.in_channels != 3:
            image = to_channels(image, self.in_channels)
        if self.transform is not None:
            if seed is not None:
                self.transform.set_random_seed(seed)
                random.seed(seed)
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        if not isinstance(image, torch.Tensor):  # no ToTensorV2 in the pipeline
            image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        mask = torch.as_tensor(np.asarray(mask), dtype=torch.long)
        return {"image": image, "mask": mask, "index": index}
