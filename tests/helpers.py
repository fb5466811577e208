"""What tests share besides fixtures: the repository's paths, the tiny-run overrides and
composing a config as the entry scripts do. Tests import it as ``helpers`` (pytest puts
``tests/`` on the import path); fixtures stay in ``conftest.py``."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

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
