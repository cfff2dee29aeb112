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
from .checkpoint import check_fits, load_checkpoint, save_checkpoint
from .compress import CompressionResult, compress
from .config import SearchConfig, dump_yaml, to_dict
from .data import load_dataset
from .policies import save_policy
from .report.run_folder import POLICY_FILES, RunFolder
from .runtime import resolve_device
from .search.loop import POLICY_KIND
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
                        limit: int | None = None, force: bool = False, progress: bool = True) -> CompressionResult:
    """Compress the teacher in `teacher_path` on `dataset`, writing everything into run folder `out`."""
    config.validate()
    teacher = load_checkpoint(teacher_path)
    name = dataset or teacher.meta.get("dataset")
    data = load_dataset(name, data_dir, seed=config.seed, limit=limit)
    check_fits(teacher.meta, data.info, teacher_path)
    folder = RunFolder.create(out, force=force)  # only after every input was checked: nothing half-made
    folder.write_text("config.yaml", dump_yaml({
        "teacher": str(teacher_path), "dataset": name, "data_dir": str(data_dir) if data_dir else None,
        "limit": limit, "device": str(resolve_device(device)), "search": to_dict(config),
        "versions": provenance(),
    }))
    cpu = torch.device("cpu")
    result = compress(
        teacher.model, evaluation_tensors(data, "train", cpu), evaluation_tensors(data, "val", cpu),
        test_data=evaluation_tensors(data, "test", cpu), config=config, device=device, progress=progress,
        on_record=lambda record: folder.append_metrics(asdict(record)),
        crop_padding=data.info.crop_padding, hflip=data.info.hflip,
    )
    save_outputs(folder, result, teacher.arch, dataset_meta(data), name)
    return result


def save_outputs(folder: RunFolder, result: CompressionResult, teacher_arch: dict[str, Any],
                 data_meta: dict[str, Any], dataset: str) -> None:
    for stage in result.stages:
        kind = POLICY_KIND[stage.name]
        folder.policies_dir.mkdir(exist_ok=True)
        save_policy(folder.policies_dir / POLICY_FILES[kind], stage.policy)
    arch = {**teacher_arch, "rewrites": list(teacher_arch.get("rewrites", [])) + result.rewrites}
    student = result.summary["student"]
    meta = data_meta | {key: student[key] for key in ("params", "flops", "val_accuracy", "test_accuracy")}
    save_checkpoint(folder.root / "student.pt", result.student, arch=arch, meta=meta)
    folder.write_json("summary.json", {**result.summary, "dataset": dataset})
