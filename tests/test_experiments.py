"""Every seed recipe in conf/experiment/ composes and runs a fast dev run end to end on a
tiny fixture of its dataset (pretrained weights off: tests never download)."""

from __future__ import annotations

import pytest

from fixtures import DATASETS
from helpers import CONF
from seglab import pipeline

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_runs_a_fast_dev_run(make_cfg, tmp_path, experiment):
    cfg = make_cfg("train", f"experiment={experiment}", tiny=False)
    name = cfg.data.name
    overrides = [
        f"experiment={experiment}",
        "debug=fdr",
        "model.pretrained=false",
        "data.num_workers=0",
        "data.batch_size=2",
        "++callbacks.rich_progress_bar=null",
    ]
    if name in DATASETS:
        overrides += [f"data.root={DATASETS[name](tmp_path / 'data')}", "data.crop_size=32"]
        if name == "folder":
            overrides.append("data.splits.test=null")
    else:  # the built-in dataset: just smaller
        overrides += ["data.dataset.num_samples={train: 4, val: 2, test: 2}"]
    cfg = make_cfg("train", *overrides, tiny=False, out="fdr")
    metrics = pipeline.train(cfg)
    assert 0.0 <= metrics["val/miou"] <= 1.0, metrics
