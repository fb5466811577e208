"""``data.download=true``: fetch a dataset's public archives into ``data.root`` and extract
them there, once (``SegDataModule.prepare_data``, which Lightning runs on one process).

The URLs are data, in each data config (``download_urls``). A finished download is renamed
into place from a ``.part`` file and an archive is extracted into a temporary folder that is
then moved into place, so an interrupted run never leaves a file that looks complete. Without
network (or with ``SEGLAB_OFFLINE=1``) it stops with the URL and the place to put the file.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

from seglab.errors import InputError, MissingFileError

log = logging.getLogger(__name__)


def _archive_name(url: str) -> str:
    return os.path.basename(urlparse(url).path)


def fetch(url: str, dest: Path, timeout: float = 60) -> Path:
    """Downloads ``url`` to ``dest`` unless it is there already."""
    if dest.is_file():
        return dest
    help_text = (
        f"Download {url} on a machine with internet and place it at {dest} (it is extracted "
        "there on the next run), or extract it yourself so that data.root holds the dataset "
        "in its publisher's layout, and run with data.download=false."
    )
    if os.environ.get("SEGLAB_OFFLINE") == "1":
        raise MissingFileError(f"data.download: SEGLAB_OFFLINE=1 forbids downloads. {help_text}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    log.info("downloading %s to %s", url, dest)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as f:
            shutil.copyfileobj(response, f, length=1 << 20)
    except OSError as e:  # URLError, timeouts, refused connections, a full disk
        part.unlink(missing_ok=True)
        raise MissingFileError(f"data.download: could not fetch {url} ({e}). {help_text}") from e
    part.rename(dest)
    return dest


def extract(archive: Path, root: Path) -> None:
    """Extracts a zip or tar archive into ``root`` (marked done by a ``.extracted`` file)."""
    done = root / f".{archive.name}.extracted"
    if done.is_file():
        return
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                tf.extractall(tmp, filter="data")  # no absolute paths, links out, devices
        else:
            raise InputError(f"data.download: {archive} is neither a zip nor a tar archive")
        for item in tmp.iterdir():  # move the top-level entries into place
            target = root / item.name
            if target.exists():
                log.info("%s exists, keeping it", target)
                continue
            item.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    done.touch()


def download(urls: Sequence[str], root: str | Path) -> None:
    """Fetches every archive of ``urls`` into ``root`` and extracts it there."""
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    for url in urls:
        extract(fetch(url, root / _archive_name(url)), root)
