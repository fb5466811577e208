"""Fixtures and the test environment. What tests import (paths, tiny-run overrides, config
composition) lives in ``helpers.py``; no test imports this file."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from omegaconf import DictConfig

from helpers import ROOT, tiny_cfg

os.environ.setdefault("SEGLAB_ROOT", str(ROOT))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ["SEGLAB_OFFLINE"] = "1"  # tests never download weights
# ... nor read the user's weight cache: every test sees the same empty one.
os.environ["TORCH_HOME"] = tempfile.mkdtemp(prefix="seglab-test-torch-home-")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two pytest workers on the 2 cores: one thread each, and the same for
    # the processes tests start, instead of 2 x 2 threads fighting over 2 cores.
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _reset_determinism() -> Iterator[None]:
    """Lightning's trainer.deterministic=true switches torch to deterministic algorithms for
    the whole process; undo it so that one test's setting does not leak into the next."""
    yield
    torch = sys.modules.get("torch")  # a test that never imported torch changed nothing
    if torch is not None:
        torch.use_deterministic_algorithms(False)


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """``make_cfg(name, *overrides, tiny=True, out="run")`` -> the config composed as the
    entry script ``name`` composes it, its run folder ``tmp_path / out``."""

    def _make(name: str = "train", *overrides: str, tiny: bool = True, out: str = "run"):
        return tiny_cfg(name, overrides, tmp_path / out, tiny=tiny)

    return _make
