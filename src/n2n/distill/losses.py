"""Distillation losses on logits.

`l2` is the paper's choice (Ba & Caruana: regress the teacher's logits); `kd` is
Hinton's temperature-softened KL, mixed with cross-entropy on the true labels.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.nn import functional as F

from ..errors import ConfigError

# loss(student_logits, teacher_logits, labels) -> scalar
DistillLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

LOSSES = ("l2", "kd")  # the names make_distill_loss knows


def l2_logit_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared difference of logits (per logit, averaged over the batch)."""
    return F.mse_loss(student, teacher)


def hinton_kd_loss(
    student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, *, temperature: float = 4.0, alpha: float = 0.9
) -> torch.Tensor:
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels)."""
    soft = F.kl_div(
        F.log_softmax(student / temperature, dim=1), F.log_softmax(teacher / temperature, dim=1),
        reduction="batchmean", log_target=True,
    )
    return alpha * temperature**2 * soft + (1 - alpha) * F.cross_entropy(student, labels)


def make_distill_loss(name: str, *, temperature: float = 4.0, alpha: float = 0.9) -> DistillLoss:
    if name == "l2":
        return l2_logit_loss
    if name == "kd":
        return lambda s, t, y: hinton_kd_loss(s, t, y, temperature=temperature, alpha=alpha)
    raise ConfigError(f"unknown distillation loss {name!r}: use one of {', '.join(LOSSES)}")
