"""Reward cache: the same child architecture is never trained twice in a run.

It stores what scoring measured (accuracy, size), not the reward, because the
reward of a constraint-violating child changes with the policy epoch.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Score:
    val_accuracy: float
    params: int
    flops: int
    seconds: float


class ScoreCache:
    def __init__(self) -> None:
        self._scores: dict[str, Score] = {}

    def __contains__(self, key: str) -> bool:
        return key in self._scores

    def __len__(self) -> int:
        return len(self._scores)

    def get(self, key: str) -> Score | None:
        return self._scores.get(key)

    def put(self, key: str, score: Score) -> None:
        self._scores[key] = score

    def state_dict(self) -> dict[str, Any]:
        return {key: asdict(score) for key, score in self._scores.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._scores = {key: Score(**value) for key, value in state.items()}
