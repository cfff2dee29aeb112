"""Optional TensorBoard scalars of a run, namespaced by stage (`removal/reward/mean`, ...)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import N2NError

EPOCH_SCALARS = {
    "reward/mean": "reward_mean", "reward/max": "reward_max", "reward/best": "best_reward",
    "baseline/value": "baseline", "policy/entropy": "entropy", "policy/loss": "policy_loss",
    "student/best_params": "best_params", "student/best_val_accuracy": "best_val_accuracy",
}
CANDIDATE_SCALARS = {"candidate/reward": "reward", "candidate/params": "params",
                     "candidate/val_accuracy": "val_accuracy"}


def summary_writer_class() -> type:
    """torch's SummaryWriter, or one clear error when the tensorboard package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise N2NError("--tensorboard needs the tensorboard package: pip install 'n2n[tensorboard]'") from None
    return SummaryWriter


class TensorBoardLogger:
    """Takes the run's metric records (as dicts) and writes them as scalars under `log_dir`."""

    def __init__(self, log_dir: str | Path) -> None:
        self.writer = summary_writer_class()(log_dir=str(log_dir))
        self.candidates: dict[str, int] = {}

    def __call__(self, record: dict[str, Any]) -> None:
        kind, stage = record.get("kind"), record.get("stage")
        if kind == "epoch":
            self.write(stage, EPOCH_SCALARS, record, record["epoch"])
        elif kind == "candidate" and record.get("valid"):
            step = self.candidates[stage] = self.candidates.get(stage, -1) + 1
            self.write(stage, CANDIDATE_SCALARS, record, step)

    def write(self, stage: str, names: dict[str, str], record: dict[str, Any], step: int) -> None:
        for tag, key in names.items():
            if record.get(key) is not None:
                self.writer.add_scalar(f"{stage}/{tag}", record[key], step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
