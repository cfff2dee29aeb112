"""What the search writes down: one record per scored candidate and per policy epoch."""
from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any


@dataclass
class CandidateRecord:
    stage: str
    epoch: int
    rollout: int
    actions: list[Any]
    reward: float
    params: int = 0
    flops: int = 0
    val_accuracy: float = 0.0
    seconds: float = 0.0
    cached: bool = False
    valid: bool = True
    reason: str | None = None
    kind: str = field(default="candidate", init=False)


@dataclass
class EpochRecord:
    stage: str
    epoch: int
    reward_mean: float
    reward_max: float
    baseline: float
    entropy: float
    policy_loss: float
    best_reward: float
    best_params: int
    best_val_accuracy: float
    seconds: float
    kind: str = field(default="epoch", init=False)


@dataclass
class TeacherRecord:
    """First line of a run's metrics: what every candidate is compared with."""

    params: int
    flops: int
    val_accuracy: float
    kind: str = field(default="teacher", init=False)


RECORD_KINDS = {"candidate": CandidateRecord, "epoch": EpochRecord, "teacher": TeacherRecord}
# The JSON values a field of each annotation may hold: a bool is no number here, though
# Python counts it as one.
_JSON_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,),
               "str | None": (str, type(None)), "list[Any]": (list,)}


def well_formed(values: Any) -> bool:
    """Whether a metrics line's JSON is a record of a known kind: every field it needs, no
    field it does not know, each of its type. Anything else is a damaged line."""
    if not isinstance(values, dict) or values.get("kind") not in RECORD_KINDS:
        return False
    known = {f.name: f for f in fields(RECORD_KINDS[values["kind"]])}
    if set(values) - set(known):
        return False
    for name, spec in known.items():
        if name not in values:
            if spec.default is MISSING and spec.default_factory is MISSING:
                return False
            continue
        value, allowed = values[name], _JSON_TYPES.get(spec.type, (object,))
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            return False
    return True
