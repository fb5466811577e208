"""Every option of every config group composes, and its objects instantiate."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fixtures import DATASETS
from helpers import CONF, compose_cfg
from seglab import config
from seglab.config import check_config, plain
from seglab.instantiators import build_module, instantiate_all
from seglab.task_module import EVALUATION_DEFAULTS


def _options(group: str) -> list[str]:
    """A group's options; files starting with "_" hold keys its options share (defaults)."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_"))


GROUPS = [
    "data",
    "model",
    "loss",
    "optimizer",
    "scheduler",
    "trainer",
    "callbacks",
    "logger",
    "debug",
    "experiment",
]


@pytest.mark.parametrize(
    "group,option",
    [(g, o) for g in GROUPS for o in _options(g)]
    + [("hparams_search", o) for o in _options("hparams_search")],
)
def test_option_composes_and_instantiates(make_cfg, tmp_path, group, option):
    task = ["task=instance"] if option.startswith("maskrcnn_") else []  # Mask R-CNN
    cfg = make_cfg("train", *task, f"{group}={option}")
    check_config(cfg)  # no missing values, data and model agree
    plain(cfg)  # every interpolation resolves
    if group in ("data", "experiment", "debug"):
        if cfg.data.name in DATASETS:  # a fixture in the publisher's layout
            cfg.data.root = str(DATASETS[cfg.data.name](tmp_path / "data"))
        dm = instantiate(cfg.data)
        assert len(dm.dataset("val")) > 0
    if group in ("model", "loss", "optimizer", "scheduler", "experiment"):
        # Offline, torchvision weights give the clear error, then train from scratch (weights
        # inside a pip package just load: tests/test_efficientnet.py).
        if cfg.model.get("pretrained") and cfg.model.get("encoder") != "efficientnet_lite0":
            with pytest.raises(FileNotFoundError, match="not in torch's cache"):
                build_module(cfg)
            cfg.model.pretrained = False
        module = build_module(cfg)
        assert module.num_classes == cfg.data.num_classes
    if group in ("callbacks", "logger", "trainer", "debug"):
        if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
            cfg.trainer.accelerator = "cpu"  # the GPU config itself is checked on GPU machines
        trainer = instantiate(
            cfg.trainer,
            callbacks=instantiate_all(cfg.get("callbacks")),
            logger=instantiate_all(cfg.get("logger")) or False,
        )
        assert trainer.max_epochs >= 1 or cfg.trainer.get("fast_dev_run")
    if group == "hparams_search":
        assert cfg.hydra.sweeper.params and cfg.hydra.mode.name == "MULTIRUN"


def test_callbacks_combine_as_a_list(make_cfg):
    cfg = make_cfg("train", "callbacks=[default,early_stopping]")
    assert {"model_checkpoint", "early_stopping", "visualizer"} <= set(cfg.callbacks)


def test_eval_and_predict_configs_compose(make_cfg):
    ev = make_cfg("eval", "ckpt_path=x.ckpt", "+data.root=/somewhere", "+trainer.devices=1")
    assert ev.split == "val" and ev.data.root == "/somewhere"
    pr = make_cfg("predict", "ckpt_path=x.ckpt", "input=in")
    assert pr.output.endswith("predictions")
    # A checkpoint saved before the evaluation group existed gets the group's own defaults.
    assert plain(ev)["evaluation"] == EVALUATION_DEFAULTS == plain(make_cfg())["evaluation"]


def test_mismatched_classes_and_missing_values_are_clear_errors(make_cfg):
    with pytest.raises(
        ValueError, match="model.net.num_classes=3 but data 'shapes' has num_classes=5"
    ):
        check_config(make_cfg("train", "model.net.num_classes=3"))
    with pytest.raises(ValueError, match="model.net.in_channels=1"):
        check_config(make_cfg("train", "model.net.in_channels=1"))
    with pytest.raises(ValueError, match="instance-segmentation model: run it with task=instance"):
        check_config(make_cfg("train", "model=maskrcnn_resnet18_fpn"))
    cfg = make_cfg("train")
    OmegaConf.update(cfg, "data.batch_size", "???")
    with pytest.raises(ValueError, match=r"config values missing: \['data.batch_size'\]"):
        check_config(cfg)


def test_default_workers_fit_the_usable_cpus(tmp_path, monkeypatch):
    """data.num_workers defaults to 4, or the CPUs this process may use when fewer: no
    PyTorch warning about more workers than cores on a small machine."""

    for cpus, want in ((2, 2), (16, 4)):
        monkeypatch.setattr(config, "usable_cpus", lambda cpus=cpus: cpus)
        cfg = compose_cfg("train", ["data=folder"], tmp_path / str(cpus))
        assert cfg.data.num_workers == want
    cfg = compose_cfg("train", ["data=folder", "data.num_workers=6"], tmp_path / "own")
    assert cfg.data.num_workers == 6  # a value the user sets is kept
