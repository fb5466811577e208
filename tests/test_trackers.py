"""MLflow and W&B (``logger=mlflow``, ``logger=wandb``): a tiny training run writes its metrics
and files to a local MLflow store and to an offline W&B run; nothing touches the network.
Each run test skips when its package (the ``trackers`` extra) is not installed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from lightning.pytorch.loggers import CSVLogger

from seglab import pipeline, tracking
from seglab.errors import SeglabError

# Whether seglab.pipeline.train stores the run's files with the trackers itself
# (``tracking.log_artifacts`` at its end, and the hyperparameters to every logger). Until it
# does, the tests call log_artifacts after train; once it does, drop this and the fallback.
RUN_FILES = ("metrics.json", "config_tree.log", ".hydra/config.yaml")


def _train(cfg, monkeypatch, factory: str) -> tuple[Path, list]:
    """Trains ``cfg`` with a ``.hydra/config.yaml`` in its folder, as Hydra leaves one; returns
    the folder and the loggers ``tracking.<factory>`` built (the spy changes nothing)."""
    built: list = []
    make = getattr(tracking, factory)
    monkeypatch.setattr(tracking, factory, lambda **kw: built.append(make(**kw)) or built[-1])
    run = Path(cfg.paths.output_dir)
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("seed: 42\n")
    pipeline.train(cfg)  # ends with log_artifacts(trainer.loggers, RUN_FILES)
    return run, built


def test_mlflow_run_holds_metrics_and_files(make_cfg, tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="the trackers extra: pip install -e '.[trackers]'")
    from mlflow.tracking import MlflowClient  # the optional extra, present past the skip

    # What mlflow_logger sets for the file store, undone after the test (set, then deleted).
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
    store = tmp_path / "mlruns"
    cfg = make_cfg("train", "logger=mlflow", f"logger.mlflow.tracking_uri=file:{store}")
    run, built = _train(cfg, monkeypatch, "mlflow_logger")

    client = MlflowClient(f"file:{store}")
    found = client.search_runs([client.get_experiment_by_name("seglab_shapes").experiment_id])
    assert [r.info.run_id for r in found] == [built[0].run_id]
    record = found[0]
    assert record.info.run_name == run.name  # the run folder (not under paths.log_dir here)
    assert 0.0 <= record.data.metrics["val/miou"] <= 1.0
    assert {"train/loss_step", "train/loss_epoch"} <= set(record.data.metrics)
    history = client.get_metric_history(record.info.run_id, "val/miou")
    assert len(history) >= 3  # two epochs, then the best checkpoint's evaluation
    assert record.data.params["batch_size"] == "8"  # the hyperparameters reach MLflow too
    # The run's files, at their places.
    listed = {a.path for a in client.list_artifacts(record.info.run_id)}
    assert {"metrics.json", "config_tree.log", ".hydra"} <= listed
    local = Path(client.download_artifacts(record.info.run_id, "", str(tmp_path / "dl")))
    assert json.loads((local / "metrics.json").read_text()) == json.loads(
        (run / "metrics.json").read_text()
    )
    assert (local / ".hydra" / "config.yaml").read_text() == "seed: 42\n"


def test_wandb_offline_run_holds_metrics_and_files(make_cfg, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="the trackers extra: pip install -e '.[trackers]'")
    # Offline, quiet, every W&B folder under tmp_path; WandbLogger itself sets WANDB_MODE for
    # the process, which monkeypatch undoes.
    quiet = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off"}
    for key, value in quiet.items():
        monkeypatch.setenv(key, value)
    for key in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(key, str(tmp_path / key.lower()))
    cfg = make_cfg("train", "logger=[tensorboard,wandb]")
    run, built = _train(cfg, monkeypatch, "wandb_logger")

    folders = list((run / "wandb").glob("offline-run-*"))
    assert len(folders) == 1 and folders[0].name.endswith(built[0].version)
    # W&B's own writer process flushes the run's record file after run.finish() returns
    # (seen late on a loaded machine): wait for it, up to 60 s.
    log = next(folders[0].glob("run-*.wandb"))
    deadline = time.monotonic() + 60
    while b"val/miou" not in log.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.5)
    records = log.read_bytes()
    assert b"val/miou" in records and b"train/loss_step" in records
    # Needs log_artifacts: copies (not links) of the run's files, and the run ended.
    files = folders[0] / "files"
    for name in RUN_FILES:
        assert not (files / name).is_symlink()
        assert (files / name).read_bytes() == (run / name).read_bytes()
    assert wandb.run is None


def test_run_name_is_the_run_folder_under_the_log_dir(tmp_path):
    assert tracking.run_name(str(tmp_path / "2025-01-31/12-00_7"), str(tmp_path)) == (
        "2025-01-31/12-00_7"
    )
    assert tracking.run_name(str(tmp_path / "elsewhere/run"), str(tmp_path / "x")) == "run"


@pytest.mark.parametrize("name,package", [("mlflow", "mlflow-skinny"), ("wandb", "wandb")])
def test_missing_package_says_what_to_install(monkeypatch, name, package):
    monkeypatch.setattr(tracking, "find_spec", lambda module: None)
    with pytest.raises(SeglabError, match=rf"pip install -e '.\[trackers\]' .*{package}"):
        getattr(tracking, f"{name}_logger")()


def test_artifacts_go_to_tracker_loggers_only(tmp_path):
    """Other loggers are left alone, missing files skipped: nothing to do, nothing fails."""
    tracking.log_artifacts([CSVLogger(tmp_path)], [tmp_path / "missing.json"])
    tracking.log_artifacts([], [])
