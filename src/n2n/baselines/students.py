"""The students each baseline proposes, as rewrites of the teacher (or, for kd, a zoo model)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..arch import NetworkView, Rewrite, count_flops, count_params, shrink_layers
from ..arch.budget import Budget, budget_of, fit_by_global_ranking, fit_to_budget
from ..config import SearchConfig
from ..errors import ConfigError, ModelError
from ..models import create_model, model_spec
from ..models.registry import SPEC_ATTRIBUTE

log = logging.getLogger(__name__)

# --method kd without --student-width: this width when there is no budget to size the student by
DEFAULT_KD_WIDTH = 0.4
# The kd width bisection's narrowest try and stopping step: finer changes no width of a zoo model
# narrower than a thousand channels.
KD_NARROWEST = 1 / 256
KD_WIDTH_TOLERANCE = 1e-3


@dataclass
class Proposal:
    """One student to score: the rewrite that makes it, a label for the log, and, when the
    student is not a rewrite of the teacher, the zoo spec that rebuilds it."""

    label: str
    rewrite: Rewrite
    arch: dict[str, Any] | None = None


def uniform_students(teacher: nn.Module, example_input: torch.Tensor, config: SearchConfig) -> list[Proposal]:
    """The teacher with every layer at the same width ratio, trained from scratch: with a budget, the
    widest such student within it; without, one student per ratio of the grid below 1."""
    view = NetworkView.build(teacher, example_input, **config.view_options)
    if config.has_budget:
        return [uniform_to_budget(teacher, view, example_input, config, "width", init="scratch")]
    grid = sorted({float(r) for r in config.ratios if r < 1})
    return [Proposal(f"width x{ratio:g}", uniform_shrink(teacher, view, ratio, example_input, config, "scratch"))
            for ratio in grid]


def pruned_students(teacher: nn.Module, example_input: torch.Tensor, config: SearchConfig) -> list[Proposal]:
    """The widest uniform L1-norm pruning of the teacher within the budget (max_params, max_flops,
    compression)."""
    view = NetworkView.build(teacher, example_input, **config.view_options)
    return [uniform_to_budget(teacher, view, example_input, config, "pruned", init="inherit", criterion="l1")]


def uniform_to_budget(teacher: nn.Module, view: NetworkView, example_input: torch.Tensor, config: SearchConfig,
                      name: str, **shrink: str) -> Proposal:
    """Every layer group at the one ratio, the largest within the config's budget (`shrink`: how the
    rewrite initialises and picks channels)."""
    budget = budget_of(config, count_params(teacher))
    rewrite = fit_to_budget(teacher, view, [1.0] * len(view.groups), example_input, budget,
                            min_width=config.min_width, **shrink)
    if rewrite.child is None:
        return Proposal(name, rewrite)
    ratio = rewrite.step["ratios"][0]
    log.info("%s: every layer at %.3f of its width gives %s parameters (%s)", name, ratio, f"{rewrite.params:,}",
             budget.describe())
    return Proposal(f"{name} x{ratio:.3f}", rewrite)


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
    """One zoo model, `student_model` (default: the teacher's), at `student_width` of the teacher's
    width; without a width, the widest within the budget, or DEFAULT_KD_WIDTH when there is none."""
    budget = budget_of(config, count_params(teacher))
    spec = student_spec(teacher, example_input, config)
    width = config.student_width
    if width is None:
        width = DEFAULT_KD_WIDTH if budget is None else widest_fitting_width(spec, teacher, example_input, budget)
    if width is None:
        reason = f"{spec['name']} exceeds the budget ({budget.describe()}) even at width x{KD_NARROWEST:g}"
        return [Proposal(spec["name"], Rewrite(None, reason))]
    student, label = kd_student(spec, width, example_input.device)
    params, teacher_params = count_params(student), count_params(teacher)
    if params >= teacher_params:
        reason = f"{label} has {params:,} parameters, not fewer than the teacher's {teacher_params:,}"
        return [Proposal(label, Rewrite(None, reason))]
    rewrite = Rewrite(student, None, params, count_flops(student, example_input))
    if budget is not None and not budget.fits(rewrite.params, rewrite.flops):
        reason = f"{label} has {params:,} parameters and {rewrite.flops:,} flops, over the budget ({budget.describe()})"
        return [Proposal(label, Rewrite(None, reason))]
    return [Proposal(label, rewrite, arch={**model_spec(student), "rewrites": []})]


def kd_student(spec: dict[str, Any], width: float, device: torch.device) -> tuple[nn.Module, str]:
    """The kd student of `spec` (see student_spec) at `width`, on `device`, and its label."""
    kwargs = {**spec["kwargs"], "width_mult": spec["kwargs"]["width_mult"] * width}
    try:
        student = create_model(spec["name"], **kwargs)
    except ModelError as error:
        raise ConfigError(f"--student-model: {error}") from None
    return student.to(device), f"{spec['name']} x{width:.3g}"


def widest_fitting_width(spec: dict[str, Any], teacher: nn.Module, example_input: torch.Tensor,
                         budget: Budget) -> float | None:
    """The largest width multiplier in (0, 1] whose kd student meets `budget` with fewer parameters
    than the teacher, by bisection (a zoo model's size never falls as its width grows); None when
    even the narrowest does not."""
    teacher_params = count_params(teacher)

    def fits(width: float) -> bool:  # within the budget, and smaller than the teacher (a budget may not be)
        student, _ = kd_student(spec, width, example_input.device)
        flops = count_flops(student, example_input) if budget.max_flops is not None else None
        return count_params(student) < teacher_params and budget.fits(count_params(student), flops)

    if fits(1.0):
        return 1.0
    low, high = KD_NARROWEST, 1.0
    if not fits(low):
        return None
    while high - low > KD_WIDTH_TOLERANCE:
        middle = (low + high) / 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def student_spec(teacher: nn.Module, example_input: torch.Tensor, config: SearchConfig) -> dict[str, Any]:
    """Zoo name and keyword arguments of the kd student at width 1 (a `width` multiplies its
    width_mult), sized for the teacher's inputs and classes: of the teacher's width when it is the
    teacher's own model, else the model's own. The teacher runs once here, not per width tried."""
    teacher_spec = getattr(teacher, SPEC_ATTRIBUTE, None)
    name = student_model_name(teacher, config)
    if teacher_spec is not None and teacher_spec["name"] == name:
        kwargs = dict(teacher_spec["kwargs"])
        kwargs["width_mult"] = kwargs.get("width_mult", 1.0)
        return {"name": name, "kwargs": kwargs}
    with torch.no_grad():
        classes = int(teacher.eval()(example_input).shape[1])
    kwargs = {"in_channels": int(example_input.shape[1]), "num_classes": classes, "width_mult": 1.0}
    return {"name": name, "kwargs": kwargs}


def student_model_name(teacher: nn.Module, config: SearchConfig) -> str:
    """The kd student's zoo model: `student_model`, else the teacher's own."""
    name = config.student_model or (getattr(teacher, SPEC_ATTRIBUTE, None) or {}).get("name")
    if name is None:
        raise ConfigError("--method kd needs --student-model NAME: this teacher was not built from the zoo")
    return name
