"""Find the folder that holds a data set's files, downloading them as a last resort.

Search order for data set ``name``:
  1. ``data_dir`` if given: its sub-folder ``data_dir/<name>``, or the files directly inside it;
  2. the system folder ``/usr/share/datasets/<name>``;
  3. the cache ``$N2N_DATA_DIR/<name>`` (default ``~/.cache/n2n/data/<name>``);
  4. if ``download`` is true and the data set is published: download into the cache.
Otherwise DataError says where we looked and which files go where.
``$N2N_DATA_MIRROR`` (a base address, ``file://`` works) replaces the published
download addresses, e.g. for a local mirror.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from n2n.data.download import DownloadSpec, fetch
from n2n.data.structures import DatasetSource
from n2n.errors import DataError

logger = logging.getLogger(__name__)

SYSTEM_ROOT = Path("/usr/share/datasets")
MIRROR_VARIABLE = "N2N_DATA_MIRROR"  # replaces the published download addresses (a local mirror)


def cache_root() -> Path:
    """``$N2N_DATA_DIR`` if set, else ``~/.cache/n2n/data``: one sub-folder per data set."""
    configured = os.environ.get("N2N_DATA_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "n2n" / "data"


def find_data_root(name: str, source: DatasetSource, data_dir: str | Path | None, download: bool) -> Path:
    """The first folder, in search order, that holds every standard file of the data set."""
    looked: list[Path] = []
    if data_dir is not None:
        found = _search_user_folder(name, source, Path(data_dir).expanduser(), looked)
        if found is not None:
            return found
    for root in (SYSTEM_ROOT / name, cache_root() / name):
        looked.append(root)
        if not source.missing_in(root):
            logger.info("Reading %s from %s", name, root)
            return root
    if download and source.download is not None:
        return _download_into_cache(name, source.download, source)
    raise DataError(_not_found_message(name, source, looked))


def _search_user_folder(name: str, source: DatasetSource, folder: Path, looked: list[Path]) -> Path | None:
    if not folder.is_dir():
        raise DataError(f"The data folder {folder} does not exist (or is not a folder); check data_dir.")
    # The sub-folder named after the data set is the more specific match: MNIST and
    # Fashion-MNIST share file names, so a folder holding one must not answer for the other.
    candidates = (folder / name, folder)
    for root in candidates:
        looked.append(root)
        if not source.missing_in(root):
            logger.info("Reading %s from %s", name, root)
            return root
    for root in candidates:
        if source.is_partial(root):
            # The user pointed at this copy: reading another one silently would hide the gap.
            missing = ", ".join(source.missing_in(root))
            raise DataError(f"{root} holds only part of {name}: missing {missing}. {source.info.files_hint}")
    return None


def _download_into_cache(name: str, spec: DownloadSpec, source: DatasetSource) -> Path:
    root = cache_root() / name
    logger.info("Downloading %s into %s", name, root)
    try:
        fetch(spec, root, base_url=os.environ.get(MIRROR_VARIABLE) or None)
    except DataError as error:
        raise DataError(f"{error} {source.info.files_hint}") from error
    missing = source.missing_in(root)
    if missing:
        raise DataError(f"The download of {name} into {root} lacks {', '.join(missing)}; delete {root} and try again.")
    return root


def _not_found_message(name: str, source: DatasetSource, looked: list[Path]) -> str:
    places = ", ".join(str(p) for p in looked)
    if source.download is None:
        how = "This data set is not downloaded automatically."
    else:  # reached only when downloading was not allowed
        how = "Or allow downloading (download=True) to fetch it into the cache."
    return f"Data set {name} not found (looked in {places}). {source.info.files_hint} {how}"
