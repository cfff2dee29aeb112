"""Fetch a data set's public files into the cache, verified by checksum.

Each file is streamed to a temporary file next to its destination and renamed
only once its checksum matches, so an interrupted or corrupted download never
leaves a file that looks complete. Archives (.tar.gz) are unpacked where they
were downloaded and then removed.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from n2n.errors import DataError

logger = logging.getLogger(__name__)

TIMEOUT_S = 60
_CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch: its name under the base address and its published checksum."""

    name: str
    md5: str | None = None
    sha256: str | None = None
    extract: bool = False  # unpack this .tar.gz archive, then delete it


@dataclass(frozen=True)
class DownloadSpec:
    """Where a data set's files are published: base addresses tried in order, and the files."""

    base_urls: tuple[str, ...]
    files: tuple[RemoteFile, ...]


class _NetworkError(Exception):
    """The address could not be read: worth trying the next mirror."""


def fetch(spec: DownloadSpec, destination: Path, *, base_url: str | None = None) -> None:
    """Download (and unpack) every file of ``spec`` into ``destination``.

    ``base_url`` replaces the published addresses (a mirror, or a ``file://``
    folder); the file names are appended to it.
    """
    try:
        destination.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"Cannot create the download folder {destination}: {error.strerror or error}.") from error
    bases = (base_url,) if base_url else spec.base_urls
    for remote in spec.files:
        target = destination / remote.name
        _remove_stale_parts(target)
        if not remote.extract and target.is_file() and _matches(target, remote):
            continue  # fetched by an earlier, interrupted run
        _download_from_any(bases, remote, target)
        if remote.extract:
            extract_tarball(target, destination)
            target.unlink()


def _remove_stale_parts(target: Path) -> None:
    """Temporary files a killed download left behind (ours: only ever created by download_file)."""
    for stale in target.parent.glob(f".{target.name}.*.part"):
        stale.unlink(missing_ok=True)


def _download_from_any(bases: tuple[str, ...], remote: RemoteFile, target: Path) -> None:
    """Try each base address in turn; only network failures move on to the next one."""
    failures = []
    for base in bases:
        url = f"{base.rstrip('/')}/{remote.name}"
        try:
            download_file(url, target, md5=remote.md5, sha256=remote.sha256)
            return
        except _NetworkError as error:
            logger.info("download of %s failed (%s); trying the next address if any", url, error)
            failures.append(f"{url} ({error})")
    raise DataError(f"Could not download {remote.name}: tried {'; '.join(failures)}.")


def download_file(url: str, target: Path, *, md5: str | None = None, sha256: str | None = None) -> Path:
    """Stream ``url`` to ``target`` via a temporary file, verify its checksum, then rename it."""
    if md5 is None and sha256 is None:
        logger.warning("No checksum known for %s: the download cannot be verified.", url)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    temporary = Path(temporary_name)
    try:
        with os.fdopen(handle, "wb") as sink:
            _stream(url, sink, label=target.name)
        _verify(temporary, url, md5=md5, sha256=sha256)
        os.replace(temporary, target)
    except OSError as error:
        raise DataError(f"Cannot write {target}: {error.strerror or error}.") from error
    finally:
        temporary.unlink(missing_ok=True)
    logger.info("Downloaded %s to %s", url, target)
    return target


def _stream(url: str, sink, label: str) -> None:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=label, disable=None) as progress:
                while chunk := response.read(_CHUNK):
                    sink.write(chunk)
                    progress.update(len(chunk))
    except (OSError, http.client.HTTPException) as error:  # URLError, timeouts, resets, a full disk
        raise _NetworkError(getattr(error, "reason", None) or error) from error
    except ValueError as error:  # a malformed address
        raise DataError(f"Cannot download from {url!r}: {error}.") from error


def _verify(path: Path, url: str, *, md5: str | None, sha256: str | None) -> None:
    for algorithm, expected in (("md5", md5), ("sha256", sha256)):
        if expected is None:
            continue
        actual = file_digest(path, algorithm)
        if actual != expected.lower():
            raise DataError(
                f"Checksum mismatch for {url}: {algorithm} {actual}, expected {expected}; "
                "the file was discarded, try again later or fetch it by hand."
            )


def _matches(path: Path, remote: RemoteFile) -> bool:
    checks = (("md5", remote.md5), ("sha256", remote.sha256))
    return all(expected is None or file_digest(path, name) == expected.lower() for name, expected in checks)


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def extract_tarball(archive: Path, destination: Path) -> None:
    """Unpack a (compressed) tar archive, refusing members that would land outside ``destination``."""
    try:
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(destination, filter="data")
            else:
                _check_members(tar, destination)
                tar.extractall(destination)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise DataError(f"Cannot unpack {archive}: {error}; delete it and download again.") from error


def _check_members(tar: tarfile.TarFile, destination: Path) -> None:
    root = destination.resolve()
    for member in tar.getmembers():
        target = (root / member.name).resolve()
        outside = target != root and root not in target.parents
        if outside or member.issym() or member.islnk():
            raise tarfile.TarError(f"unsafe member {member.name!r}")
