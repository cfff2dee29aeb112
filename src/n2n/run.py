"""A compression run from files: teacher checkpoint + data set name -> run folder."""
from __future__ import annotations

import logging
import platform
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .checkpoint import Checkpoint, check_fits, load_checkpoint, save_checkpoint
from .compress import CompressionResult, compress
from .config import SearchConfig, dump_yaml, from_dict, load_yaml, to_dict
from .data import DataSplits, load_dataset
from .data.loader import black_pixel
from .errors import N2NError
from .policies import save_policy
from .report.run_folder import POLICY_FILES, RunFolder
from .report.summary import read_metrics, rebuild_report
from .report.tensorboard import TensorBoardLogger, summary_writer_class
from .runtime import resolve_device
from .search.loop import POLICY_KIND, record_of
from .search.state import ResumePoint, candidate_key
from .teacher import dataset_meta, evaluation_tensors

log = logging.getLogger(__name__)


def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def provenance() -> dict[str, Any]:
    return {"n2n": __version__, "torch": str(torch.__version__), "python": platform.python_version(),
            "git_revision": git_revision(), "machine": platform.machine()}


def compress_checkpoint(teacher_path: str | Path, out: str | Path, config: SearchConfig, *,
                        dataset: str | None = None, data_dir: str | Path | None = None, device: str | None = None,
                        limit: int | None = None, force: bool = False, progress: bool = True,
                        tensorboard: bool = False) -> CompressionResult:
    """Compress the teacher in `teacher_path` on `dataset`, writing everything into run folder `out`."""
    config.validate()
    teacher = load_checkpoint(teacher_path)
    name = dataset or teacher.meta.get("dataset")
    data = load_dataset(name, data_dir, seed=config.seed, limit=limit)
    check_fits(teacher.meta, data.info, teacher_path)
    if tensorboard:
        summary_writer_class()
    folder = RunFolder.create(out, force=force)  # only after every input was checked: nothing half-made
    folder.write_text("config.yaml", dump_yaml({
        "teacher": str(Path(teacher_path).resolve()), "dataset": name,
        "data_dir": str(Path(data_dir).resolve()) if data_dir else None, "limit": limit,
        "device": str(resolve_device(device)), "search": to_dict(config), "versions": provenance(),
    }))
    return execute(folder, teacher, data, config, device, progress, resume=None, tensorboard=tensorboard)


# A run whose config.yaml does not name keep_channels began before the setting existed, when
# shrunk layers kept their filters of largest L1 norm: resumed, it goes on as it began.
BEFORE_KEEP_CHANNELS = {"keep_channels": "l1"}


def resume_run(out: str | Path, *, placement: dict[str, Any] | None = None, progress: bool = True,
               tensorboard: bool = False) -> CompressionResult:
    """Continue the run in folder `out` after it was killed: nothing already scored is trained again.

    `placement` (executor, workers, ray_address) moves the children's training elsewhere, which
    changes no score; config.yaml keeps what the run started with."""
    folder = RunFolder(out)
    if not (folder.root / "config.yaml").is_file():
        raise N2NError(f"{folder.root} holds no run to resume (no config.yaml): start one without --resume")
    if (folder.root / "summary.json").is_file():
        raise N2NError(f"the run in {folder.root} has finished already (see its summary.json)")
    settings = load_yaml(folder.root / "config.yaml")
    config = from_dict(SearchConfig, {**BEFORE_KEEP_CHANNELS, **settings["search"]}, f"{folder.root}/config.yaml")
    config = from_dict(SearchConfig, placement or {}, "options", base=config).validate()
    teacher = load_checkpoint(settings["teacher"])
    data = load_dataset(settings["dataset"], settings["data_dir"], seed=config.seed, limit=settings["limit"])
    return execute(folder, teacher, data, config, settings["device"], progress, resume=resume_point(folder),
                   tensorboard=tensorboard)


def resume_point(folder: RunFolder) -> ResumePoint:
    """Read what the killed run left; metrics.jsonl is cut back to the last snapshot."""
    records, dropped = read_metrics(folder.metrics_path) if folder.metrics_path.is_file() else ([], [])
    if dropped:
        log.warning("dropped damaged line(s) %s of %s", ", ".join(map(str, dropped)), folder.metrics_path)
    snapshot = folder.load_snapshot()
    keep = snapshot["records"] if snapshot else 0
    replay = {candidate_key(r["stage"], r["epoch"], r["rollout"]): r
              for r in records[keep:] if r.get("kind") == "candidate"}
    log.info("resuming %s: %d records kept, %d scored candidates reused", folder.root, keep, len(replay))
    folder.rewrite_metrics(records[:keep])
    return ResumePoint(snapshot, [record_of(r) for r in records[:keep]], replay)


def execute(folder: RunFolder, teacher: Checkpoint, data: DataSplits, config: SearchConfig, device: str | None,
            progress: bool, resume: ResumePoint | None, tensorboard: bool = False) -> CompressionResult:
    cpu = torch.device("cpu")
    board = TensorBoardLogger(folder.root / "tensorboard") if tensorboard else None

    def on_record(record: Any) -> None:
        line = asdict(record)
        folder.append_metrics(line)
        if board is not None:
            board(line)

    try:
        result = compress(
            teacher.model, evaluation_tensors(data, "train", cpu), evaluation_tensors(data, "val", cpu),
            test_data=evaluation_tensors(data, "test", cpu), config=config, device=device, progress=progress,
            on_record=on_record, crop_padding=data.info.crop_padding, hflip=data.info.hflip,
            crop_fill=black_pixel(data.info), store=folder,
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
                    arch=result.student_arch or {**teacher_arch, "rewrites": base_rewrites + result.rewrites},
                    meta=meta)
    folder.write_json("summary.json", {**result.summary, "dataset": dataset})
    rebuild_report(folder.root)
