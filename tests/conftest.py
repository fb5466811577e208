"""Shared fixtures: configs composed exactly as the entry scripts compose them, made tiny."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
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

# A few seconds per run on 2 CPU cores: 32 train / 8 val / 8 test images, a 2-level U-Net.
TINY = [
    "data.dataset.num_samples={train: 32, val: 7, test: 5}",
    "data.batch_size=8",
    "data.num_workers=0",
    "model.net.base_channels=4",
    "model.net.depth=2",
    "trainer.max_epochs=2",
    "trainer.log_every_n_steps=1",
    "trainer.num_sanity_val_steps=0",
    "++callbacks.rich_progress_bar=null",
    "++callbacks.model_summary=null",
]


def compose_cfg(config_name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """Composes a config like @hydra.main does and points the run folder at ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig().set_config(cfg)
    return cfg


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
