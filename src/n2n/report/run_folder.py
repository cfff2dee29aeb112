"""The folder a compression run writes: config, metrics, summary, policies, students.

Every file is written whole to a temporary name and renamed, so a crash leaves either
the old file or the new one, never half of one.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
from pathlib import Path
from typing import IO, Any

import torch

from ..errors import N2NError, RunInUseError
from ..files import atomic_save, atomic_write_text, naming, temporary_sibling

log = logging.getLogger(__name__)

LOCK_FILE = "run.lock"
DAMAGED_METRICS = "metrics.damaged.jsonl"


class RunFolder:
    """A run folder has one owner at a time: the process holding its lock (see `claim`);
    used as a context manager, the folder is given back on leaving it."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._lock: IO[str] | None = None

    @classmethod
    def create(cls, root: str | Path, *, force: bool = False) -> "RunFolder":
        """A new run folder; an existing non-empty one is refused unless `force`."""
        folder = cls(root)
        if folder.root.exists() and not folder.root.is_dir():
            raise N2NError(f"--out {folder.root} is a file, not a run folder")
        if folder.root.is_dir() and any(folder.root.iterdir()) and not force:
            if (folder.root / LOCK_FILE).is_file():
                folder.claim().release()  # a run that lives there now is named as in use, not as a leftover
            raise N2NError(f"{folder.root} already holds a run: continue it with --resume {folder.root}, "
                           "overwrite it with --force, or choose another --out")
        folder.root.mkdir(parents=True, exist_ok=True)
        folder.claim()  # before --force deletes anything a live run may still be writing
        if force:
            folder.metrics_path.unlink(missing_ok=True)
            shutil.rmtree(folder.root / "state", ignore_errors=True)
            (folder.root / "summary.json").unlink(missing_ok=True)
        return folder

    # ---- ownership -----------------------------------------------------------------------
    def claim(self) -> "RunFolder":
        """Take the folder's lock, or refuse naming the process that holds it.

        An flock, not a pid file: the kernel drops it when its process dies however it dies,
        so a killed run never blocks its own resume."""
        stream = open(self.root / LOCK_FILE, "a+")
        try:
            fcntl.flock(stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            stream.seek(0)
            holder = stream.read().strip()
            stream.close()
            who = f"process {holder}" if holder.isdigit() else "another process"
            raise RunInUseError(f"{self.root} is in use by {who} (an n2n run or resume of it): wait for it to "
                                f"end or stop it, then continue with --resume {self.root}") from None
        stream.truncate(0)
        stream.write(f"{os.getpid()}\n")  # for the message above; the lock itself is the flock
        stream.flush()
        self._lock = stream
        return self

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file drops the flock
            self._lock = None

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def policies_dir(self) -> Path:
        return self.root / "policies"

    @property
    def snapshot_path(self) -> Path:
        return self.root / "state" / "search.pt"

    @property
    def best_dir(self) -> Path:
        return self.root / "state" / "best"

    def remove_temporaries(self) -> None:
        """Delete the temporaries (`.NAME.*.tmp`, see files.temporary_sibling) a killed run left
        half-written: each was never renamed, so no file of the run is lost. Only the owner
        may, since a live run's temporaries look the same."""
        assert self._lock is not None, "remove_temporaries needs the folder's lock"
        for folder in (self.root, self.root / "state", self.best_dir, self.policies_dir):
            for stale in folder.glob(".*.tmp"):
                stale.unlink(missing_ok=True)

    # ---- SearchStore: what a killed run needs to continue --------------------------------
    def save_snapshot(self, snapshot: dict[str, Any]) -> None:
        atomic_save(snapshot, self.snapshot_path)
        for stale in self.best_dir.glob("*.pt"):  # the snapshot now holds the best children
            stale.unlink()

    def save_best(self, key: str, state_dict: dict[str, Any]) -> None:
        atomic_save(state_dict, self.best_dir / f"{key}.pt")

    def load_best(self, key: str) -> dict[str, Any] | None:
        """The stored weights of child `key`; None where none are stored or the file is damaged
        (empty, cut short, not weights), so the search trains the child again, as it would
        had the run been killed before storing them."""
        path = self.best_dir / f"{key}.pt"
        if not path.is_file():
            return None
        try:
            weights = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a damaged file: torch raises many types
            log.warning("%s is damaged (%s): the child is trained again", path, type(error).__name__)
            return None
        if not isinstance(weights, dict) or not all(torch.is_tensor(v) for v in weights.values()):
            log.warning("%s holds no weights: the child is trained again", path)
            return None
        return weights

    def load_snapshot(self) -> dict[str, Any] | None:
        if not self.snapshot_path.is_file():
            return None
        try:
            return torch.load(self.snapshot_path, map_location="cpu", weights_only=True)
        except Exception as error:  # a damaged file: torch raises many types
            raise N2NError(f"{self.snapshot_path} is damaged ({type(error).__name__}): "
                           "the run cannot be resumed; start it again with --force") from None

    def metric_lines(self) -> list[bytes]:
        """metrics.jsonl's lines as written, bytes that are no text included; [] before the first."""
        if not self.metrics_path.is_file():
            return []
        return self.metrics_path.read_bytes().split(b"\n")

    def keep_metric_lines(self, kept: list[bytes], aside: list[bytes]) -> None:
        """metrics.jsonl made of the `kept` lines alone; the `aside` ones go to metrics.damaged.jsonl.

        Nothing is ever deleted: the lines set aside are stored before the rewrite, so a kill
        between the two leaves a line in both files, never in neither. A file that ends in a
        whole line and loses none is left as it is."""
        if not self.metrics_path.is_file() or not aside and self.metrics_path.read_bytes().endswith(b"\n"):
            return
        if aside:
            with open(self.root / DAMAGED_METRICS, "ab") as stream:
                stream.write(b"".join(line + b"\n" for line in aside))
                stream.flush()
                os.fsync(stream.fileno())
        with temporary_sibling(self.metrics_path) as tmp:
            tmp.write_bytes(b"".join(line + b"\n" for line in kept))
            os.replace(tmp, self.metrics_path)

    def write_json(self, name: str, payload: Any) -> Path:
        path = self.root / name
        atomic_write_text(path, json.dumps(payload, indent=2, default=str) + "\n")
        return path

    def write_text(self, name: str, text: str) -> Path:
        path = self.root / name
        atomic_write_text(path, text)
        return path

    def append_metrics(self, record: dict[str, Any]) -> None:
        # One short line per write, flushed and synced: a crash loses at most the line being written.
        with naming(self.metrics_path), open(self.metrics_path, "a") as stream:
            stream.write(json.dumps(record, default=str) + "\n")
            stream.flush()
            os.fsync(stream.fileno())
