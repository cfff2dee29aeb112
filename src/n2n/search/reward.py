"""The rewards (N2N-METHOD.md, "Reward"): pure functions of a child's size and accuracy.

``paper``, the N2N reward, trades size against accuracy:

    C   = 1 - params(student) / params(teacher)      relative compression
    R_c = C (2 - C)                                   concave: early compression pays most
    R_a = acc(student) / acc(teacher)
    R   = R_c * R_a

``accuracy`` is R_a alone: the budget mode, where every child was already brought inside
a size budget (n2n.arch.budget), so only its accuracy is left to reward.

A child that breaks a constraint gets ``(eps - 1) + eps * R`` with
``eps = max(0, 1 - epoch / horizon) ** 4``: the constraint is soft at first and
costs the full -1 once the policy has trained for ``horizon`` epochs.

Epoch convention: ``policy_epoch`` is the 0-based index of the policy epoch whose
children are being scored, so eps = 1 during epoch 0 (a violation costs nothing yet)
and eps = 0 from epoch ``horizon`` on (a violation earns exactly -1).
A child that cannot be built or run, or is not smaller than its parent, is given
``INVALID_REWARD`` by the search loop without calling these functions.
Accuracies may be fractions or percentages, as long as student, teacher and
``Constraints.min_accuracy`` use the same unit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from n2n.errors import ConfigError

logger = logging.getLogger(__name__)

INVALID_REWARD = -1.0
DEFAULT_HORIZON = 15
REWARDS = ("paper", "accuracy")


def compression_reward(student_params: int, teacher_params: int) -> float:
    """R_c = C (2 - C) with C = 1 - student_params / teacher_params."""
    if teacher_params <= 0:
        raise ValueError(f"teacher_params must be positive, got {teacher_params}.")
    if student_params < 0:
        raise ValueError(f"student_params must be non-negative, got {student_params}.")
    compression = 1.0 - student_params / teacher_params
    return compression * (2.0 - compression)


def accuracy_reward(student_acc: float, teacher_acc: float) -> float:
    """R_a = student_acc / teacher_acc."""
    if teacher_acc <= 0:
        raise ValueError(f"teacher_acc must be positive to normalise the student's accuracy, got {teacher_acc}.")
    return student_acc / teacher_acc


def annealing_epsilon(policy_epoch: int, horizon: int = DEFAULT_HORIZON) -> float:
    """eps = max(0, 1 - policy_epoch / horizon) ** 4 (0-based epoch; horizon <= 0 means hard from the start)."""
    if policy_epoch < 0:
        raise ValueError(f"policy_epoch counts from 0, got {policy_epoch}.")
    if horizon <= 0:
        return 0.0
    return max(0.0, 1.0 - policy_epoch / horizon) ** 4


@dataclass(frozen=True)
class Constraints:
    """Limits a student must meet; None means no limit."""

    max_params: int | None = None
    max_flops: int | None = None
    min_accuracy: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_params", "max_flops"):
            limit = getattr(self, name)
            if limit is not None and limit <= 0:
                raise ConfigError(f"Constraint {name} must be a positive count, got {limit}.")
        if self.min_accuracy is not None and self.min_accuracy < 0:
            raise ConfigError(f"Constraint min_accuracy must be non-negative, got {self.min_accuracy}.")

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.max_params, self.max_flops, self.min_accuracy))

    def violations(self, params: int, flops: int | None, accuracy: float) -> list[str]:
        """One line per broken limit, e.g. ``"params 1,200 > max_params 1,000"``; empty when all hold."""
        broken = []
        if self.max_params is not None and params > self.max_params:
            broken.append(f"params {params:,} > max_params {self.max_params:,}")
        if self.max_flops is not None:
            if flops is None:
                raise ValueError("max_flops is set, so the student's FLOP count must be given.")
            if flops > self.max_flops:
                broken.append(f"flops {flops:,} > max_flops {self.max_flops:,}")
        if self.min_accuracy is not None and accuracy < self.min_accuracy:
            broken.append(f"accuracy {accuracy:.4g} < min_accuracy {self.min_accuracy:.4g}")
        return broken


def reward(
    *,
    student_params: int,
    teacher_params: int,
    student_acc: float,
    teacher_acc: float,
    student_flops: int | None = None,
    constraints: Constraints | None = None,
    policy_epoch: int = 0,
    horizon: int = DEFAULT_HORIZON,
    kind: str = "paper",
) -> float:
    """R = R_c * R_a (``kind="paper"``) or R_a (``"accuracy"``); a child breaking ``constraints``
    gets (eps - 1) + eps * R instead."""
    if kind not in REWARDS:
        raise ValueError(f"reward kind must be one of {', '.join(REWARDS)}, got {kind!r}.")
    value = accuracy_reward(student_acc, teacher_acc)
    if kind == "paper":
        value *= compression_reward(student_params, teacher_params)
    if constraints is None:
        return value
    broken = constraints.violations(student_params, student_flops, student_acc)
    if not broken:
        return value
    eps = annealing_epsilon(policy_epoch, horizon)
    logger.debug("child breaks %s at policy epoch %d (eps=%.4f)", "; ".join(broken), policy_epoch, eps)
    return (eps - 1.0) + eps * value
