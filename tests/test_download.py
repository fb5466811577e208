"""data.download: fetch + extract once into data.root (tested with file:// URLs, never the
network), and a clear message naming URL and destination when there is no network."""

from __future__ import annotations

import tarfile
import zipfile

import pytest
from hydra.utils import instantiate

from fixtures import make_msrc, make_voc
from seglab.config import build


def test_download_fetches_extracts_once_and_the_data_reads(make_cfg, tmp_path, monkeypatch):
    monkeypatch.delenv("SEGLAB_OFFLINE")
    # "Publisher" archives: the MSRC database zip and a separate zip of the split lists.
    pub = make_msrc(tmp_path / "pub")
    full = tmp_path / "msrc_db.zip"  # the publisher's zip has the database folder on top
    with zipfile.ZipFile(full, "w") as zf:
        for p in sorted((pub / "MSRC_ObjCategImageDatabase_v2").rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(pub).as_posix())
    splits = tmp_path / "TextonBoostSplits.zip"
    with zipfile.ZipFile(splits, "w") as zf:
        for name in ("Train.txt", "Validation.txt", "Test.txt"):
            zf.write(pub / name, f"TextonBoostSplits/{name}")
    root = tmp_path / "data" / "msrc"
    cfg = make_cfg(
        "train",
        "data=msrc",
        f"data.root={root}",
        "data.download=true",
        f"data.download_urls=[{full.as_uri()},{splits.as_uri()}]",
    )
    dm = instantiate(cfg.data)
    dm.prepare_data()
    assert (root / "MSRC_ObjCategImageDatabase_v2" / "Images").is_dir()
    assert (root / "TextonBoostSplits" / "Train.txt").is_file()
    assert not list(root.glob("*.part")) and not list(root.glob(".extract-*"))
    assert len(dm.dataset("train")) == 4
    # Present now: a second prepare_data reads the data and fetches nothing.
    (root / "msrc_db.zip").unlink()
    dm.prepare_data()
    assert not (root / "msrc_db.zip").exists()


def test_tar_archives_extract_like_the_voc_tarball(make_cfg, tmp_path, monkeypatch):
    monkeypatch.delenv("SEGLAB_OFFLINE")
    pub = make_voc(tmp_path / "pub")
    tarball = tmp_path / "VOCtrainval_11-May-2012.tar"
    with tarfile.open(tarball, "w") as tf:
        tf.add(pub / "VOCdevkit", arcname="VOCdevkit")
    root = tmp_path / "voc"
    cfg = make_cfg(
        "train",
        "data=voc",
        f"data.root={root}",
        "data.download=true",
        f"data.download_urls=[{tarball.as_uri()}]",
    )
    dm = instantiate(cfg.data)
    dm.prepare_data()
    assert len(dm.dataset("val")) == 2


def test_without_network_the_error_names_url_and_place(make_cfg, tmp_path, monkeypatch):
    root = tmp_path / "coco"
    cfg = make_cfg("train", "data=coco_cat", f"data.root={root}", "data.download=true")
    dm = instantiate(cfg.data)
    with pytest.raises(FileNotFoundError) as err:  # SEGLAB_OFFLINE=1 (conftest)
        dm.prepare_data()
    msg = str(err.value)
    assert "annotations_trainval2017.zip" in msg and str(root) in msg and "download=false" in msg
    # A failing fetch (no route to the host) leaves no partial file behind.
    monkeypatch.delenv("SEGLAB_OFFLINE")
    cfg.data.download_urls = [(tmp_path / "nowhere.zip").as_uri()]
    with pytest.raises(FileNotFoundError, match="could not fetch .*nowhere.zip"):
        instantiate(cfg.data).prepare_data()
    assert not list(root.glob("*.part"))
    with pytest.raises(ValueError, match="data 'camvid' has no public download"):
        build(make_cfg("train", "data=camvid", "data.download=true").data)
