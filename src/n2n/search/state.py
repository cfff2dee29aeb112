"""Where a search keeps what it needs to continue after a crash.

At every policy-epoch boundary the loop hands a snapshot (policies, optimiser and
baseline state, sampling generator, reward cache, best children) to a store; a child
that becomes the best of its stage between two boundaries is stored at once, so
that a resumed run never trains again a candidate it already scored.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable, Protocol

import torch


class SearchStore(Protocol):
    def save_snapshot(self, snapshot: dict[str, Any]) -> None: ...

    def save_best(self, key: str, state_dict: dict[str, torch.Tensor]) -> None: ...

    def load_best(self, key: str) -> dict[str, torch.Tensor] | None: ...


def candidate_key(stage: str, epoch: int, rollout: int) -> str:
    return f"{stage}-e{epoch}-r{rollout}"


def weights_of(module: torch.nn.Module | None) -> dict[str, torch.Tensor] | None:
    if module is None:
        return None
    return {name: tensor.detach().cpu().clone() for name, tensor in module.state_dict().items()}


@dataclass
class ResumePoint:
    """What a killed run left: its last snapshot (None if it died in its first policy epoch),
    the records written up to that snapshot, the candidates it scored after it, and the
    identities of every record already in its metrics file (not to be written twice)."""

    snapshot: dict[str, Any] | None
    history: list[Any] = field(default_factory=list)
    replay: dict[str, dict[str, Any]] = field(default_factory=dict)
    written: set[Hashable] = field(default_factory=set)


# The fields that name a record: a run writes one record per identity, in a fixed order.
IDENTITY_FIELDS = {"teacher": (), "epoch": (("stage", str), ("epoch", int)),
                   "candidate": (("stage", str), ("epoch", int), ("rollout", int))}


def record_identity(record: dict[str, Any]) -> tuple | None:
    """("candidate", stage, epoch, rollout), ("epoch", stage, epoch) or ("teacher",); None for a
    line that names no record of a known kind (a damaged one)."""
    kind = record.get("kind")
    if kind not in IDENTITY_FIELDS:
        return None
    values = [record.get(name) for name, _ in IDENTITY_FIELDS[kind]]
    if any(type(value) is not kind_of for value, (_, kind_of) in zip(values, IDENTITY_FIELDS[kind])):
        return None  # bool is no epoch number, a float no rollout
    return (kind, *values)


def split_at_snapshot(records: list[dict[str, Any]], snapshot: dict[str, Any] | None
                      ) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The records from before the snapshot, and the candidates scored after it by key.

    Cut by what each record is (its stage and epoch against the epoch the snapshot's stage
    goes on from), not by counting lines: a damaged line then moves no record across."""
    next_epoch = {state["name"]: state["next_epoch"] for state in (snapshot or {}).get("stages", [])}
    history, replay = [], {}
    for record in records:
        kind, *where = record_identity(record) or (None,)
        if kind == "teacher" or (where and where[1] < next_epoch.get(where[0], 0)):
            history.append(record)
        elif kind == "candidate":
            replay[candidate_key(*where)] = record
    return history, replay
