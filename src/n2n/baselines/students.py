"""The students each baseline proposes, as rewrites of the teacher (or, for kd, a zoo model)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..arch import NetworkView, Rewrite, count_flops, count_params, shrink_layers
from ..config import SearchConfig
from ..errors import ConfigError, ModelError
from ..models import create_model, model_spec
from ..models.registry import SPEC_ATTRIBUTE

log = logging.getLogger(__name__)
# a ratio this close to the best one changes no layer's width by a whole channel
BISECTION_STEPS = 14


@dataclass
class Proposal:
    """One student to score: the rewrite that makes it, a label for the log, and, when the
    student is not a rewrite of the teacher, the zoo spec that rebuilds it."""

    label: str
    rewrite: Rewrite
    arch: dict[str, Any] | None = None


def uniform_students(teacher: nn.Module, example_input: torch.Tensor, config: SearchConfig) -> list[Proposal]:
    """The teacher with every layer at the same width ratio, one student per ratio below 1, from scratch."""
    view = NetworkView.build(teacher, example_input)
    grid = sorted({float(r) for r in config.ratios if r < 1})
    return [Proposal(f"width x{ratio:g}", uniform_shrink(teacher, view, ratio, example_input, config, "scratch"))
            for ratio in grid]


def pruned_students(teacher: nn.Module, example_input: torch.Tensor, config: SearchConfig) -> list[Proposal]:
    """The widest uniform L1-norm pruning of the teacher with at most `max_params` parameters."""
    view = NetworkView.build(teacher, example_input)
    budget = config.max_params
    best, low, high = None, 0.0, 1.0
    for _ in range(BISECTION_STEPS):
        ratio = (low + high) / 2
        rewrite = uniform_shrink(teacher, view, ratio, example_input, config, "inherit", criterion="l1")
        if rewrite.child is not None and rewrite.params <= budget:
            best, low = (ratio, rewrite), ratio
        else:
            high = ratio
    if best is None:
        smallest = uniform_shrink(teacher, view, 1e-6, example_input, config, "inherit")
        reason = (f"no uniform pruning reaches {budget:,} parameters (the narrowest, at min width "
                  f"{config.min_width}, has {smallest.params:,})")
        return [Proposal("pruned", Rewrite(None, reason))]
    ratio, rewrite = best
    log.info("pruning every layer to %.3f of its filters gives %s parameters (budget %s)",
             ratio, f"{rewrite.params:,}", f"{budget:,}")
    return [Proposal(f"pruned x{ratio:.3f}", rewrite)]


def uniform_shrink(teacher: nn.Module, view: NetworkView, ratio: float, example_input: torch.Tensor,
                   config: SearchConfig, init: str, criterion: str = "contribution") -> Rewrite:
    ratios = [ratio] * len(view.groups)
    return shrink_layers(teacher, view, ratios, example_input, init=init, min_width=config.min_width,
                         criterion=criterion)


def kd_students(teacher: nn.Module, example_input: torch.Tensor, config: SearchConfig) -> list[Proposal]:
    """One zoo model, `student_model` (default: the teacher's) at `student_width` of the teacher's width."""
    spec = student_spec(teacher, example_input, config)
    try:
        student = create_model(spec["name"], **spec["kwargs"])
    except ModelError as error:
        raise ConfigError(f"--student-model: {error}") from None
    student = student.to(example_input.device)
    params, teacher_params = count_params(student), count_params(teacher)
    label = f"{spec['name']} x{config.student_width:g}"
    if params >= teacher_params:
        reason = f"{label} has {params:,} parameters, not fewer than the teacher's {teacher_params:,}"
        return [Proposal(label, Rewrite(None, reason))]
    rewrite = Rewrite(student, None, params, count_flops(student, example_input))
    return [Proposal(label, rewrite, arch={**model_spec(student), "rewrites": []})]


def student_spec(teacher: nn.Module, example_input: torch.Tensor, config: SearchConfig) -> dict[str, Any]:
    """Zoo name and keyword arguments of the kd student, sized for the teacher's inputs and classes."""
    teacher_spec = getattr(teacher, SPEC_ATTRIBUTE, None)
    name = config.student_model or (teacher_spec or {}).get("name")
    if name is None:
        raise ConfigError("--method kd needs --student-model NAME: this teacher was not built from the zoo")
    if teacher_spec is not None and teacher_spec["name"] == name:
        kwargs = dict(teacher_spec["kwargs"])
        kwargs["width_mult"] = kwargs.get("width_mult", 1.0) * config.student_width
        return {"name": name, "kwargs": kwargs}
    with torch.no_grad():
        classes = int(teacher.eval()(example_input).shape[1])
    kwargs = {"in_channels": int(example_input.shape[1]), "num_classes": classes, "width_mult": config.student_width}
    return {"name": name, "kwargs": kwargs}
