"""What tests share besides fixtures: the repository's paths, the tiny-run overrides and
composing a config as the entry scripts do. Tests import it as ``helpers`` (pytest puts
``tests/`` on the import path); fixtures stay in ``conftest.py``."""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
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
        # Nothing a test builds writes into the repository's outputs/ (e.g. MLflow's store).
        cfg.paths.log_dir = str(Path(output_dir).parent / "outputs")
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig().set_config(cfg)
    return cfg


def tiny_cfg(
    name: str, overrides: Sequence[str], output_dir: Path, tiny: bool = True
) -> DictConfig:
    """``compose_cfg`` with ``TINY`` first for train and benchmark, less the tiny sizes that a
    chosen model, data config or experiment recipe would not accept."""
    extra = TINY if tiny and name in ("train", "benchmark") else []
    recipe = any(o.startswith("experiment=") for o in overrides)
    if recipe or any(o.startswith("model=") for o in overrides):  # U-Net's tiny sizes
        extra = [o for o in extra if not o.startswith("model.net.")]
    if recipe or any(o.startswith("data=") for o in overrides):  # shapes' tiny sizes
        extra = [o for o in extra if not o.startswith("data.dataset.")]
    return compose_cfg(name, [*extra, *overrides], output_dir)


def assert_frozen_encoder(
    net: torch.nn.Module, loss: Callable[[], torch.Tensor], steps: int = 1
) -> None:
    """The frozen-trunk check (``model.train_trunk=false``, ``net.freeze_encoder()``): the
    encoder's parameters take no gradient and all others do; ``net.train()`` leaves the
    encoder in eval mode; after ``steps`` SGD steps on ``loss()`` the encoder's weights and
    BatchNorm statistics are bit-identical while the rest has trained."""
    encoder = net.encoder
    frozen = {id(p) for p in encoder.parameters()}
    rest = {n: p for n, p in net.named_parameters() if id(p) not in frozen}
    assert frozen and not any(p.requires_grad for p in encoder.parameters())
    assert rest and all(p.requires_grad for p in rest.values())
    net.train()
    assert not any(m.training for m in encoder.modules())
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    rest_before = {n: p.detach().clone() for n, p in rest.items()}
    opt = torch.optim.SGD(list(rest.values()), lr=0.1)
    for _ in range(steps):
        opt.zero_grad()
        loss().backward()
        opt.step()
    for key, value in encoder.state_dict().items():  # weights and BatchNorm buffers
        assert torch.equal(before[key], value), key
    assert any(not torch.equal(rest_before[n], p) for n, p in rest.items()), "nothing trained"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(
        f"seglab_script_{name}", ROOT / "src" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def run_script_main(
    script: str, args: list[str], capsys, monkeypatch, run_dir: Path | None = None
) -> tuple[int, str]:
    """Runs ``src/<script>.py``'s ``main`` in this process with ``args`` as its command line
    (into ``run_dir`` when given); returns the exit status and what it printed (stdout and
    stderr). Hydra's logging set-up for the run is undone afterwards."""
    main = _script(script)
    folder = [f"hydra.run.dir={run_dir}"] if run_dir is not None else []
    monkeypatch.setattr(sys, "argv", [f"src/{script}.py", *args, *folder])
    GlobalHydra.instance().clear()
    capsys.readouterr()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        GlobalHydra.instance().clear()
        # Hydra configured logging for the run (a file in its folder): undo it, so that later
        # tests in this process do not log into a folder that will be gone.
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
    out = capsys.readouterr()
    return code, out.out + out.err
