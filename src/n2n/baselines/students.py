"""The students each baseline proposes, as rewrites of the teacher (or, for kd, a zoo model)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..arch import NetworkView, Rewrite, count_flops, count_params, shrink_layers
from ..arch.budget import budget_of, fit_by_global_ranking, fit_to_budget
from ..config import SearchConfig
from ..errors import ConfigError, ModelError
from ..models import create_model, model_spec
from ..models.registry import SPEC_ATTRIBUTE

log = logging.getLogger(__name__)


@dataclass
class Proposal:
    """One student to score: the rewrite that makes it, a label for the log, and, when the
    student is not a rewrite of the teacher, the zoo spec that rebuilds it."""

    label: str
    rewrite: Rewrite
    arch: dict[str, Any] | None = None


def uniform_students(teacher: nn.Module, example_input: torch.Tensor, config: SearchConfig) -> list[Proposal]:
    """The teacher with every layer at the same width ratio, one student per ratio below 1, from scratch."""
    view = NetworkView.build(teacher, example_input, **config.view_options)
    grid = sorted({float(r) for r in config.ratios if r < 1})
    return [Proposal(f"width x{ratio:g}", uniform_shrink(teacher, view, ratio, example_input, config, "scratch"))
            for ratio in grid]


def pruned_students(teacher: nn.Module, example_input: torch.Tensor, config: SearchConfig) -> list[Proposal]:
    """The widest uniform L1-norm pruning of the teacher within the budget (max_params, compression)."""
    view = NetworkView.build(teacher, example_input, **config.view_options)
    budget = budget_of(config, count_params(teacher))
    rewrite = fit_to_budget(teacher, view, [1.0] * len(view.groups), example_input, budget, init="inherit",
                            min_width=config.min_width, criterion="l1")
    if rewrite.child is None:
        return [Proposal("pruned", rewrite)]
    ratio = rewrite.step["ratios"][0]
    log.info("pruning every layer to %.3f of its filters gives %s parameters (%s)",
             ratio, f"{rewrite.params:,}", budget.describe())
    return [Proposal(f"pruned x{ratio:.3f}", rewrite)]


def globally_pruned_students(teacher: nn.Module, example_input: torch.Tensor, config: SearchConfig) -> list[Proposal]:
    """Global L1 filter pruning of the teacher to the budget: the weakest filters of the whole
    network cut, each layer's width what the ranking leaves it (see fit_by_global_ranking)."""
    view = NetworkView.build(teacher, example_input, **config.view_options)
    budget = budget_of(config, count_params(teacher))
    rewrite = fit_by_global_ranking(teacher, view, example_input, budget, min_width=config.min_width)
    if rewrite.child is not None:
        log.info("global pruning keeps %s of the teacher's filters per layer group: %s parameters (%s)",
                 ", ".join(f"{ratio:.2f}" for ratio in rewrite.step["ratios"]), f"{rewrite.params:,}",
                 budget.describe())
    return [Proposal("globally pruned", rewrite)]


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
