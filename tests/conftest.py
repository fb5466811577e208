"""Shared fixtures: configs composed exactly as the entry scripts compose them, made tiny."""

from __future__ import annotations

import os
import tempfile

import pytest

from helpers import ROOT, TINY, compose_cfg

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
def _reset_determinism():
    """Lightning's trainer.deterministic=true switches torch to deterministic algorithms for
    the whole process; undo it so that one test's setting does not leak into the next."""
    yield
    import torch

    torch.use_deterministic_algorithms(False)


@pytest.fixture
def make_cfg(tmp_path):
    """``make_cfg(name, *overrides, tiny=True, out="run")`` -> composed config."""

    def _make(name: str = "train", *overrides: str, tiny: bool = True, out: str = "run"):
        extra = TINY if tiny and name in ("train", "benchmark") else []
        recipe = any(o.startswith("experiment=") for o in overrides)
        if recipe or any(o.startswith("model=") for o in overrides):  # U-Net's tiny sizes
            extra = [o for o in extra if not o.startswith("model.net.")]
        if recipe or any(o.startswith("data=") for o in overrides):  # shapes' tiny sizes
            extra = [o for o in extra if not o.startswith("data.dataset.")]
        return compose_cfg(name, [*extra, *overrides], tmp_path / out)

    return _make
