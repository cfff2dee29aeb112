"""Where a search keeps what it needs to continue after a crash.

At every policy-epoch boundary the loop hands a snapshot (policies, optimiser and
baseline state, sampling generator, reward cache, best children) to a store; a child
that becomes the best of its stage between two boundaries is stored at once, so
that a resumed run never trains again a candidate it already scored.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

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
    the records written up to that snapshot, and the candidates it scored after it."""

    snapshot: dict[str, Any] | None
    history: list[Any] = field(default_factory=list)
    replay: dict[str, dict[str, Any]] = field(default_factory=dict)
