"""``src/results.py``: the config composes, run folders are read back (metrics, time split,
parameters without BatchNorm statistics), the page shows every column and section from fake
records, missing data is skipped without training, and the time-to-accuracy PNG is drawn."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from helpers import compose_cfg
from seglab.reproduce.training import compose_train
from seglab.results.command import add_plot, merged, results
from seglab.results.curves import curves_png
from seglab.results.plain_loop import plain_curve
from seglab.results.runs import budget_overrides, read_run, run_recipe
from seglab.results.table import COLUMNS, TIME_PARTS, results_markdown

REFS = [
    {"dataset": "CamVid", "model": "FC-DenseNet103", "params": "9.4M", "miou": 66.9,
     "aacc": 91.5, "source": "Jégou et al. 2017", "compute": "GPU"},
]  # fmt: skip


def _fake_run(run_dir: Path, miou: float, curve: list[list[float]]) -> None:
    """A finished run folder: metrics.json, time_split.json and a best checkpoint."""
    run_dir.mkdir(parents=True)
    ckpt = run_dir / "best.ckpt"
    state = {
        "net.conv.weight": torch.zeros(4, 3, 3, 3),  # 108
        "net.bn.weight": torch.zeros(4),
        "net.bn.running_mean": torch.zeros(4),
        "net.bn.running_var": torch.zeros(4),
        "net.bn.num_batches_tracked": torch.tensor(3),
    }
    run = {"model": {"net": {"_target_": "seglab.models.unet.UNet"}}}
    torch.save({"seglab_config": run, "state_dict": state}, ckpt)
    metrics = {
        "val/miou": miou,
        "val/aacc": 0.95,
        "val/iou/background": 0.97,
        "val/iou/circle": miou - 0.1,
        "best_checkpoint": str(ckpt),
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    parts = {"startup": 5.0, "loading": 10.0, "training": 70.0, "evaluation": 10.0}
    split = {"wall_s": 100.0, "parts": {**parts, "checkpoints": 2.0, "other": 3.0}}
    (run_dir / "time_split.json").write_text(json.dumps({**split, "curve": curve}))


def _records(tmp_path: Path) -> list[dict]:
    variants = {}
    for name, miou, wall in (("recipe", 0.93, 110.0), ("slow_defaults", 0.90, 220.0)):
        _fake_run(tmp_path / name, miou, [[wall / 4, 0.5], [wall / 2, miou]])
        run = read_run(tmp_path / name)
        run.update(wall_s=wall, rc=0, command=f"python src/train.py experiment=cpu_shapes {name}")
        variants[name] = run
    target = {"miou": 0.92, "wall_s": 120}
    missed = {"recipe": variants["recipe"] | {"wall_s": 150.0, "aacc": 0.85}}
    failed = {"recipe": {"error": "exit status 1: boom", "wall_s": 3.0, "command": "python x"}}
    return [
        {"recipe": "cpu_shapes", "dataset": "shapes", "target": target, "variants": variants},
        {"recipe": "cpu_slow", "dataset": "shapes", "target": target | {"aacc": 0.9},
         "variants": missed},
        {"recipe": "cpu_broken", "dataset": "shapes", "target": target, "variants": failed},
        {"recipe": "cpu_msrc", "dataset": "MSRC-21", "target": None, "variants": {},
         "skipped": "data not found at /nowhere"},
        {"recipe": "cpu_camvid", "dataset": "CamVid", "target": None, "variants": {}},
    ]  # fmt: skip


def test_config_composes_and_variant_keys_exist(tmp_path):
    cfg = compose_cfg("results", [], tmp_path)
    assert list(cfg.recipes) == ["cpu_shapes", "cpu_msrc", "cpu_camvid", "cpu_coco_cat"]
    assert list(cfg.variants) == ["recipe", "slow_defaults"]
    assert cfg.budget == 1.0 and str(cfg.out).endswith("docs/results.md")
    assert str(cfg.data_roots.camvid).endswith("shared/data/camvid/CamVid")
    assert set(cfg.recipes) <= set(cfg.recipe_info)
    train = compose_train([*cfg.variant_overrides.slow_defaults])
    assert train.trainer.precision == 32
    assert train.model.channels_last is False and train.model.compile is False


def test_read_run_counts_parameters_without_batchnorm_statistics(tmp_path):
    _fake_run(tmp_path / "r", 0.9, [[10.0, 0.9]])
    run = read_run(tmp_path / "r")
    assert run["params"] == 108 + 4 and run["model"] == "UNet"
    assert run["miou"] == 0.9 and run["iou"] == {"background": 0.97, "circle": 0.9 - 0.1}
    assert run["time_split"]["parts"]["training"] == 70.0
    empty = tmp_path / "empty"
    empty.mkdir()
    assert read_run(empty)["time_split"] is None and read_run(empty)["params"] is None


def test_page_has_every_column_row_and_section(tmp_path):
    records = _records(tmp_path)
    report_only = {"recipe": records[0]["variants"]["recipe"]}
    records.append({"recipe": "cpu_coco", "dataset": "COCO", "target": None,
                    "variants": report_only})  # fmt: skip
    add_plot(records[0], tmp_path / "results")
    meta = {"command": "python src/results.py", "hardware": "Some CPU, 2 cores, no GPU"}
    page = results_markdown(records, REFS, meta | {"budget": 1.0, "written": "today"})
    header = next(line for line in page.splitlines() if line.startswith("| recipe |"))
    assert header == "| " + " | ".join(COLUMNS) + " |"
    row = next(line for line in page.splitlines() if line.startswith("| cpu_shapes |"))
    for cell in ["UNet", "0.00M", "110 s", "Some CPU", "93.0", "95.0", "mIoU >= 92.0", "met"]:
        assert cell in row
    assert "`python src/train.py experiment=cpu_shapes recipe`" in row
    slow = next(line for line in page.splitlines() if line.startswith("| cpu_slow |"))
    assert "missed: aAcc 85.0 < 90.0; 150 s > 120 s" in slow and "aAcc >= 90.0" in slow
    assert "missed: the run failed" in page and "exit status 1: boom" in page
    assert "skipped: data not found at /nowhere" in page
    assert "| cpu_camvid | CamVid | not yet measured |" in page
    assert "| *published* | CamVid | FC-DenseNet103 | 9.4M |" in page and "66.9" in page
    assert "quoted from Jégou et al. 2017" in page
    # per recipe: per-class IoU, time split shares, the plot and the note
    assert "| circle | 83.0 | 80.0 |" in page
    for part in TIME_PARTS:
        assert f"| {part} |" in page
    assert "| training | 70.0 (70 %) | 70.0 (70 %) |" in page
    assert "![time to accuracy: cpu_shapes](results/cpu_shapes.png)" in page
    assert (tmp_path / "results" / "cpu_shapes.png").is_file()
    assert "slow_defaults took 2.00x the wall time of recipe" in page
    # time to the same accuracy from the curves: 0.90 at 55 s (recipe) and 110 s
    assert (
        "To slow_defaults's best val mIoU (90.0): recipe 0.9 min, slow_defaults 1.8 min (2.00x)."
        in page
    )
    assert "What was measured" in page
    assert page.count("No target.") == 1 and "**-**" not in page  # the report-only recipe


def test_unmeasured_page_says_so():
    recs = [{"recipe": "cpu_shapes", "dataset": "shapes", "target": None, "variants": {}}]
    page = results_markdown(recs, REFS, {"command": "x", "hardware": "-"})
    assert "Not yet measured" in page and "| cpu_shapes | shapes | not yet measured |" in page


def test_curves_png_is_small_and_needs_a_point(tmp_path):
    path = tmp_path / "c.png"
    curve = [[20.0 * i, min(0.95, 0.1 * i)] for i in range(1, 12)]
    assert curves_png({"recipe": curve, "slow_defaults": curve[::2]}, "cpu_x", path, 0.92)
    assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size < 60_000
    assert not curves_png({"recipe": []}, "cpu_x", tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_missing_data_or_recipe_is_skipped_without_training(tmp_path):
    cfg = compose_cfg("results", [f"data_roots.msrc={tmp_path / 'nowhere'}"], tmp_path)
    repo = Path(__file__).resolve().parents[1]
    rec = run_recipe(cfg, "cpu_msrc", tmp_path, repo)
    if (repo / "conf/experiment/cpu_msrc.yaml").is_file():
        assert rec["skipped"].startswith("data not found at")
    else:
        assert rec["skipped"] == "no recipe conf/experiment/cpu_msrc.yaml"
    assert rec["variants"] == {} and not (tmp_path / "runs").exists()
    cfg.recipe_info.cpu_msrc.data = None
    fake = tmp_path / "repo"
    (fake / "conf" / "experiment").mkdir(parents=True)
    rec = run_recipe(OmegaConf.create(OmegaConf.to_container(cfg)), "cpu_msrc", tmp_path, fake)
    assert rec["skipped"] == "no recipe conf/experiment/cpu_msrc.yaml"


def test_budget_scales_epochs_and_time_limit():
    assert budget_overrides("cpu_shapes", 1.0) == []
    train = compose_train(["experiment=cpu_shapes"]).trainer
    scaled = budget_overrides("cpu_shapes", 2.0)
    assert f"trainer.max_epochs={2 * train.max_epochs}" in scaled
    if train.get("max_time"):
        assert any(o.startswith("trainer.max_time=") for o in scaled)


def test_a_later_call_keeps_earlier_recipes_and_variants(tmp_path):
    """Rerunning one recipe (or one variant) replaces just that; a recipe skipped now keeps
    its earlier numbers; a new budget starts the recipe afresh."""
    records = _records(tmp_path)
    shapes = records[0]
    for run in shapes["variants"].values():
        run.update(budget=1.0, measured_by="python src/results.py", written="yesterday")
    rerun = {**shapes, "variants": {"recipe": {**shapes["variants"]["recipe"], "miou": 0.95}}}
    both = merged(shapes, rerun)
    assert both["variants"]["recipe"]["miou"] == 0.95
    assert both["variants"]["slow_defaults"] == shapes["variants"]["slow_defaults"]
    assert merged(shapes, {**shapes, "variants": {}, "skipped": "data not found"}) == shapes
    rebudget = {"recipe": {**shapes["variants"]["recipe"], "budget": 2.0}}
    assert list(merged(shapes, {**shapes, "variants": rebudget})["variants"]) == ["recipe"]
    # Through results(): the kept record shows on a page measuring nothing new.
    figures = tmp_path / "docs" / "results"
    figures.mkdir(parents=True)
    (figures / "records.json").write_text(json.dumps([shapes]))
    out = tmp_path / "docs" / "results.md"
    cfg = compose_cfg("results", ["measure=false", f"out={out}"], tmp_path / "run")
    page = results(cfg).read_text()
    row = next(line for line in page.splitlines() if line.startswith("| cpu_shapes |"))
    assert "93.0" in row and "| cpu_msrc | MSRC-21 | not yet measured |" in page
    assert "- `python src/results.py` (budget=1.0), yesterday" in page
    assert json.loads((figures / "records.json").read_text())[0]["recipe"] == "cpu_shapes"


def test_plain_loop_curve_scales_the_training_share(tmp_path):
    records = _records(tmp_path)
    run = records[0]["variants"]["recipe"]  # wall 100 s, training 70 s, curve at 27.5 and 55 s
    curve = plain_curve(run, 0.9)
    assert [miou for _, miou in curve] == [0.5, 0.93]
    assert [t for t, _ in curve] == pytest.approx([27.5 * 0.93, 55.0 * 0.93])
    assert plain_curve({"time_split": None}, 0.9) == []
    plain = {"ratio": 0.9, "seglab_img_per_s": 9.0, "plain_img_per_s": 10.0,
             "command": "python src/benchmark.py experiment=cpu_shapes"}  # fmt: skip
    records[0]["plain_loop"] = plain
    add_plot(records[0], tmp_path / "results")
    page = results_markdown(records, REFS, {"command": "x", "hardware": "-", "budget": 1.0})
    assert "Plain PyTorch loop: derived, not run" in page and "(ratio 0.900)" in page
