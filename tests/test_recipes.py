"""The CPU recipes (conf/experiment/cpu_*.yaml: the fastest way to accuracy per dataset on a
2-core CPU) compose with their key choices, and each trains a few steps, validates, saves
its checkpoints and evaluates the best one on a tiny fixture of its dataset (pretrained
weights off: the architecture and everything else as the recipe has it)."""

from __future__ import annotations

import pytest

from fixtures import DATASETS
from helpers import CONF
from seglab import pipeline

RECIPES = sorted(p.stem for p in (CONF / "experiment").glob("cpu_*.yaml"))
DATA = {
    "cpu_shapes": "shapes",
    "cpu_msrc": "msrc",
    "cpu_camvid": "camvid",
    "cpu_coco_cat": "coco_cat",
}


def test_every_dataset_has_a_recipe():
    assert sorted(DATA) == RECIPES


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_composes(make_cfg, recipe):
    cfg = make_cfg("train", f"experiment={recipe}", tiny=False)
    assert cfg.data.name == DATA[recipe]
    assert cfg.task_name == recipe
    assert cfg.seed is not None  # a fixed seed
    # A time budget: the run stops in time on a slower machine, whatever the epochs.
    h, m, s = (int(x) for x in cfg.trainer.max_time.split(":")[1:])
    assert h * 3600 + m * 60 + s > 0
    assert cfg.trainer.max_epochs >= 1
    if cfg.model.get("encoder") == "efficientnet_lite0" and cfg.model.pretrained:
        # The EfficientNet-Lite0 weights were trained on inputs normalised with 0.5 / 0.5.
        assert list(cfg.data.mean) == [0.5] * 3 and list(cfg.data.std) == [0.5] * 3
    if recipe == "cpu_shapes":  # the dataset itself stays the default one
        default = make_cfg("train", tiny=False, out="default")
        assert cfg.data.dataset == default.data.dataset


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_trains_and_evaluates(make_cfg, tmp_path, recipe):
    overrides = [
        f"experiment={recipe}",
        "model.pretrained=false",
        "data.num_workers=0",
        "data.batch_size=2",
        "trainer.max_epochs=1",
        "trainer.check_val_every_n_epoch=1",
        "++trainer.limit_train_batches=2",
        "++trainer.limit_val_batches=1",
        "trainer.num_sanity_val_steps=0",
        "++callbacks.rich_progress_bar=null",
        "++callbacks.model_summary=null",
    ]
    name = DATA[recipe]
    if name in DATASETS:
        overrides += [f"data.root={DATASETS[name](tmp_path / 'data')}", "data.crop_size=32"]
    else:  # the built-in dataset: fewer samples
        overrides += ["data.dataset.num_samples={train: 8, val: 2, test: 2}"]
    cfg = make_cfg("train", *overrides, tiny=False, out="run")
    metrics = pipeline.train(cfg)
    assert 0.0 <= metrics["val/miou"] <= 1.0, metrics
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
