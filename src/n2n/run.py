"""A compression run from files: teacher checkpoint + data set name -> run folder."""
from __future__ import annotations

import functools
import json
import logging
import platform
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from .version import __version__
from .arch.ignored import resolve_ignored
from .checkpoint import Checkpoint, check_fits, load_checkpoint, save_checkpoint
from .checks import check_output_path
from .compress import CompressionResult, compress
from .config import SearchConfig, dump_yaml, from_dict, load_yaml, to_dict
from .data import DataSplits, as_tensors, augmentation_options, load_dataset
from .errors import N2NError
from .policies import save_policy
from .models import get_model_builder
from .policies.io import POLICY_FILES, policy_for_stage
from .report.run_folder import DAMAGED_METRICS, RunFolder
from .report.rebuild import rebuild_report
from .report.tensorboard import TensorBoardLogger, summary_writer_class
from .runtime import resolve_device
from .search.loop import POLICY_KIND, record_of
from .search.records import well_formed
from .search.state import ResumePoint, record_identity, split_at_snapshot
from .student import student_arch
from .teacher import dataset_meta

log = logging.getLogger(__name__)


@functools.cache
def git_revision() -> str | None:
    """The commit of the n2n code this process runs, "+modified" where the package's tracked files
    differ from it; None outside a git checkout. Read once, when this module loads: a long-lived
    process (an experiment) keeps the code it loaded however the checkout moves on meanwhile."""
    head = git_output("rev-parse", "HEAD")
    if not head:
        return None
    return head + ("+modified" if git_output("status", "--porcelain", "--untracked-files=no", ".") else "")


def git_output(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


git_revision()


def provenance() -> dict[str, Any]:
    return {"n2n": __version__, "torch": str(torch.__version__), "python": platform.python_version(),
            "git_revision": git_revision(), "machine": platform.machine()}


def compress_checkpoint(teacher_path: str | Path, out: str | Path, config: SearchConfig, *,
                        dataset: str | None = None, data_dir: str | Path | None = None, device: str | None = None,
                        limit: int | None = None, force: bool = False, progress: bool = True,
                        tensorboard: bool = False) -> CompressionResult:
    """Compress the teacher in `teacher_path` on `dataset`, writing everything into run folder `out`."""
    config.validate()
    check_output_path(out, "--out run folder")
    resolved_device = str(resolve_device(device))
    check_named_inputs(config)
    teacher = load_checkpoint(teacher_path)
    name = dataset or teacher.meta.get("dataset")
    data = load_dataset(name, data_dir, seed=config.seed, limit=limit)
    check_split_sizes(data, limit)
    check_fits(teacher.meta, data.info, teacher_path)
    resolve_ignored(teacher.model, config.ignored_layers)
    if tensorboard:
        summary_writer_class()
    # only after every input was checked: nothing half-made; owned by this process until it returns
    with RunFolder.create(out, force=force) as folder:
        folder.write_text("config.yaml", dump_yaml({
            "teacher": str(Path(teacher_path).resolve()), "dataset": name,
            "data_dir": str(Path(data_dir).resolve()) if data_dir else None, "limit": limit,
            "device": resolved_device, "search": to_dict(config), "versions": provenance(),
        }))
        return execute(folder, teacher, data, config, device, progress, resume=None, tensorboard=tensorboard)


def check_named_inputs(config: SearchConfig) -> None:
    """The zoo model and policy files the options name exist and load, before any folder does."""
    if config.student_model is not None:
        get_model_builder(config.student_model)
    if config.policy_from is not None:
        for kind in POLICY_FILES:
            policy_for_stage(config.policy_from, kind)


def check_split_sizes(data: DataSplits, limit: int | None) -> None:
    """Training and validation images both, or the search has nothing to train or score on."""
    if len(data.train) == 0 or len(data.val) == 0:
        because = f" with --limit {limit}" if limit is not None else ""
        raise N2NError(f"{data.info.name}{because} leaves {len(data.train)} training and {len(data.val)} "
                       "validation images: a search needs some of both (use --limit 20 or more)")


# A run whose config.yaml does not name keep_channels began before the setting existed, when
# shrunk layers kept their filters of largest L1 norm: resumed, it goes on as it began.
BEFORE_KEEP_CHANNELS = {"keep_channels": "l1"}


def resume_run(out: str | Path, *, placement: dict[str, Any] | None = None, progress: bool = True,
               tensorboard: bool = False) -> CompressionResult:
    """Continue the run in folder `out` after it was killed: nothing already scored is trained again.

    `placement` (executor, workers, ray_address) moves the children's training elsewhere, which
    changes no score; config.yaml keeps what the run started with."""
    check_resumable(RunFolder(out))  # a folder with no run, or a finished one, gets no lock file
    resumed_config(RunFolder(out), placement)  # nor one whose config.yaml cannot be resumed from
    with RunFolder(out).claim() as folder:  # before anything in it changes: one owner at a time
        check_resumable(folder)  # the run that held the lock may have finished meanwhile
        return resume_owned(folder, placement, progress, tensorboard)


def check_resumable(folder: RunFolder) -> None:
    if not (folder.root / "config.yaml").is_file():
        raise N2NError(f"{folder.root} holds no run to resume (no config.yaml): start one without --resume")
    if (folder.root / "summary.json").is_file():
        raise N2NError(f"the run in {folder.root} has finished already (see its summary.json)")


def resume_owned(folder: RunFolder, placement: dict[str, Any] | None, progress: bool,
                 tensorboard: bool) -> CompressionResult:
    settings, config = resumed_config(folder, placement)
    folder.remove_temporaries()  # a run killed while writing a file leaves its temporary behind
    teacher = load_checkpoint(settings["teacher"])
    data = load_dataset(settings["dataset"], settings["data_dir"], seed=config.seed, limit=settings["limit"])
    return execute(folder, teacher, data, config, settings["device"], progress, resume=resume_point(folder),
                   tensorboard=tensorboard)


# What config.yaml must hold for its run to be resumed, and the type of each.
SETTINGS = {"search": dict, "teacher": str, "dataset": str, "data_dir": (str, type(None)),
            "limit": (int, type(None)), "device": str}


def run_settings(folder: RunFolder) -> dict[str, Any]:
    path = folder.root / "config.yaml"
    settings = load_yaml(path)
    for key, kind in SETTINGS.items():
        if key not in settings:
            raise N2NError(f"{path} has no '{key}' entry: it was not written by n2n compress, or was edited; "
                           "start the run again with --force")
        if not isinstance(settings[key], kind) or isinstance(settings[key], bool):
            raise N2NError(f"{path}: '{key}' holds {settings[key]!r}, not what n2n compress wrote there")
    return settings


def resumed_config(folder: RunFolder, placement: dict[str, Any] | None) -> tuple[dict[str, Any], SearchConfig]:
    """The run's settings from its config.yaml, and its search config with `placement` applied."""
    settings = run_settings(folder)
    config = from_dict(SearchConfig, {**BEFORE_KEEP_CHANNELS, **settings["search"]}, f"{folder.root}/config.yaml")
    return settings, from_dict(SearchConfig, placement or {}, "options", base=config).validate()


def resume_point(folder: RunFolder) -> ResumePoint:
    """Read what the killed run left, deleting nothing it scored.

    The records after the last snapshot stay in metrics.jsonl: their candidates are replayed,
    not trained again, and no record is written twice; so a resume killed at any moment
    leaves the next one all it had. Damaged and repeated lines move to metrics.damaged.jsonl."""
    lines = folder.metric_lines()
    kept, aside = sort_metric_lines(lines)
    if aside:
        log.warning("moved damaged or repeated line(s) %s of %s to %s", ", ".join(map(str, aside)),
                    folder.metrics_path, DAMAGED_METRICS)
    folder.keep_metric_lines([lines[number - 1] for number in kept], [lines[number - 1] for number in aside])
    snapshot = folder.load_snapshot()
    records = list(kept.values())
    history, replay = split_at_snapshot(records, snapshot)
    log.info("resuming %s: %d records from before the last snapshot, %d scored candidates after it replayed",
             folder.root, len(history), len(replay))
    if snapshot and snapshot.get("records", len(history)) != len(history):
        log.warning("%d record(s) from before the last snapshot were lost to damaged lines",
                    snapshot["records"] - len(history))
    return ResumePoint(snapshot, [record_of(r) for r in history], replay,
                       written={record_identity(r) for r in records})


def sort_metric_lines(lines: list[bytes]) -> tuple[dict[int, dict[str, Any]], list[int]]:
    """The usable records by their 1-based line numbers, and the numbers of the lines to set
    aside: damaged ones and repeats of a record already read (two processes once wrote one run)."""
    kept: dict[int, dict[str, Any]] = {}
    aside, seen = [], set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        record = usable_record(line)
        identity = record_identity(record) if record is not None else None
        if identity is None or identity in seen:
            aside.append(number)
            continue
        seen.add(identity)
        kept[number] = record
    return kept, aside


def usable_record(line: bytes) -> dict[str, Any] | None:
    """The record a metrics line holds, or None where it is damaged (cut short, not JSON, not
    a record of a known kind with every field of its type)."""
    try:
        record = json.loads(line)
    except ValueError:  # bytes that are no text, too
        return None
    return record if well_formed(record) and record_identity(record) is not None else None


def execute(folder: RunFolder, teacher: Checkpoint, data: DataSplits, config: SearchConfig, device: str | None,
            progress: bool, resume: ResumePoint | None, tensorboard: bool = False) -> CompressionResult:
    board = TensorBoardLogger(folder.root / "tensorboard") if tensorboard else None
    written = resume.written if resume is not None else set()

    def on_record(record: Any) -> None:
        line = asdict(record)
        if record_identity(line) in written:  # the killed run wrote it already: replayed, not repeated
            return
        folder.append_metrics(line)
        if board is not None:
            board(line)

    try:
        result = compress(
            teacher.model, as_tensors(data, "train"), as_tensors(data, "val"),
            test_data=as_tensors(data, "test"), config=config, device=device, progress=progress,
            on_record=on_record, **augmentation_options(data), store=folder,
            resume=resume,
        )
    finally:
        if board is not None:
            board.close()
    save_outputs(folder, result, teacher.arch, dataset_meta(data), data.info.name)
    return result


def save_outputs(folder: RunFolder, result: CompressionResult, teacher_arch: dict[str, Any],
                 data_meta: dict[str, Any], dataset: str) -> None:
    for stage in result.stages:
        if stage.policy is not None:
            folder.policies_dir.mkdir(exist_ok=True)
            save_policy(folder.policies_dir / POLICY_FILES[POLICY_KIND[stage.name]], stage.policy)
    base_rewrites = list(teacher_arch.get("rewrites", []))
    for number, stage in enumerate(result.stages, start=1):
        if stage.best_child is not None:  # the best child of each stage, as the search scored it
            best = stage.best
            save_checkpoint(folder.root / f"stage{number}-{stage.name}.pt", stage.best_child,
                            arch=stage.arch or {**teacher_arch, "rewrites": base_rewrites + stage.rewrites},
                            meta=data_meta | {"params": best.params, "flops": best.flops,
                                              "val_accuracy": best.val_accuracy, "test_accuracy": None})
    student = result.summary["student"]
    meta = data_meta | {key: student[key] for key in ("params", "flops", "val_accuracy", "test_accuracy")}
    save_checkpoint(folder.root / "student.pt", result.student,
                    arch=student_arch(result, teacher_arch),
                    meta=meta)
    folder.write_json("summary.json", {**result.summary, "dataset": dataset})
    rebuild_report(folder.root)
