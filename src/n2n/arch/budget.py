"""Bringing a child inside a size budget, as AMC bounds its action space.

A policy's width ratios say how the layers share the budget; one scale, the largest
that keeps the child within the budget, multiplies them all (a width never exceeds
its parent's and never goes below the minimum width). Every child then sits at the
budget, so children compare by accuracy at the same size, and ratios all alike give
uniform pruning at the budget.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Sequence

from torch import Tensor, nn

from n2n.arch.groups import filter_l1, prune_groups
from n2n.arch.measure import count_params, forward_with_macs
from n2n.arch.rewrite import DEFAULT_MIN_WIDTH, Rewrite, shrink_layers, target_width
from n2n.arch.view import NetworkView

# A scale this small gives every group its minimum width.
NARROWEST = 1e-9
# Bisection stops when the scale is known to this fraction: a finer scale changes no width
# of a group narrower than ten thousand channels.
SCALE_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Budget:
    """The most parameters and multiply-accumulates a child may have; None: no limit."""

    max_params: int | None = None
    max_flops: int | None = None

    def fits(self, params: int, flops: int | None) -> bool:
        return ((self.max_params is None or params <= self.max_params)
                and (self.max_flops is None or (flops is not None and flops <= self.max_flops)))

    def describe(self) -> str:
        limits = [f"{name} {value:,}" for name, value in
                  (("max params", self.max_params), ("max flops", self.max_flops)) if value is not None]
        return ", ".join(limits)


def budget_for(teacher_params: int, *, max_params: int | None = None, max_flops: int | None = None,
               compression: float | None = None) -> Budget | None:
    """The budget the limits set (a compression factor is a parameter limit); None without any."""
    if compression is not None:
        by_factor = math.floor(teacher_params / compression)
        max_params = by_factor if max_params is None else min(max_params, by_factor)
    if max_params is None and max_flops is None:
        return None
    return Budget(max_params, max_flops)


def budget_of(config: Any, teacher_params: int) -> Budget | None:
    """The budget a search configuration (its max_params, max_flops, compression) sets."""
    return budget_for(teacher_params, max_params=config.max_params, max_flops=config.max_flops,
                      compression=config.compression)


def fitting_budget(config: Any, teacher_params: int) -> Budget | None:
    """The budget a search fits every child to: its limits in budget mode (reward "accuracy"); None
    under the paper's reward, which penalises a child over the limits instead of fitting it."""
    return budget_of(config, teacher_params) if config.reward_kind == "accuracy" else None


def fit_to_budget(parent: nn.Module, view: NetworkView, ratios: Sequence[float], example_input: Tensor,
                  budget: Budget, *, init: str = "inherit", min_width: int = DEFAULT_MIN_WIDTH,
                  criterion: str = "contribution") -> Rewrite:
    """``shrink_layers`` with ``ratios`` scaled by the largest factor whose child meets ``budget``.

    A parent that already meets the budget is shrunk by ``ratios`` as given. The child is
    rejected, with the reason, when even the narrowest widths exceed the budget.
    """
    sizer = _Sizer(parent, view, example_input, budget, min_width, criterion)
    if sizer.fits(sizer.widths(ratios, sizer.widest_scale(ratios))):
        scale = 1.0
    else:
        scale = sizer.largest_scale(ratios)
        if scale is None:
            return Rewrite(None, f"even at the narrowest widths the child exceeds the budget ({budget.describe()}): "
                                 f"{sizer.narrowest_size(ratios)}")
    scaled = [min(1.0, float(ratio) * scale) for ratio in ratios]
    return shrink_layers(parent, view, scaled, example_input, init=init, min_width=min_width, criterion=criterion)


def fit_by_global_ranking(parent: nn.Module, view: NetworkView, example_input: Tensor, budget: Budget, *,
                          init: str = "inherit", min_width: int = DEFAULT_MIN_WIDTH) -> Rewrite:
    """Global filter pruning to ``budget``: every group's filters ranked together by their L1 norm over
    the group's mean (so that layers of different sizes compare, as Torch-Pruning's global pruning
    normalises them), the network's weakest cut until the parent fits. Each group keeps its
    L1-strongest filters; a width never goes below ``min_width`` (a group whose filters are all
    zero goes straight to it). Rejected, with the reason, when even the narrowest widths exceed
    the budget."""
    if not view.groups:
        return Rewrite(None, "the parent has no channel group to prune")
    sizer = _Sizer(parent, view, example_input, budget, min_width, "l1")
    modules = dict(parent.named_modules())
    scores = [relative(filter_l1(plan, modules)) for plan in view.group_plans]
    thresholds = sorted({float(value) for group_scores in scores for value in group_scores})

    def widths(threshold: float) -> tuple[int, ...]:
        return tuple(target_width(group.channels, max(1, int((kept >= threshold).sum())) / group.channels, min_width,
                                  group.multiple) for group, kept in zip(view.groups, scores))

    if not sizer.fits(widths(thresholds[-1])):
        return Rewrite(None, f"even at the narrowest widths the child exceeds the budget ({budget.describe()}): "
                             f"{sizer.described(widths(thresholds[-1]))}")
    low, high = 0, len(thresholds) - 1  # widths(thresholds[high]) fit; the lowest threshold that fits keeps most
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if sizer.fits(widths(thresholds[middle])) else (middle + 1, high)
    ratios = [width / group.channels for width, group in zip(widths(thresholds[low]), view.groups)]
    return shrink_layers(parent, view, ratios, example_input, init=init, min_width=min_width, criterion="l1")


def relative(scores: Tensor) -> Tensor:
    mean = scores.mean()
    return scores / mean if mean > 0 else scores


class _Sizer:
    """The size of the parent shrunk to given widths, measured on a pruned copy (remembered per widths)."""

    def __init__(self, parent: nn.Module, view: NetworkView, example_input: Tensor, budget: Budget,
                 min_width: int, criterion: str) -> None:
        self.parent, self.view, self.example_input = parent, view, example_input
        self.budget, self.min_width, self.criterion = budget, min_width, criterion
        self.sizes: dict[tuple[int, ...], tuple[int, int | None]] = {}

    def widths(self, ratios: Sequence[float], scale: float) -> tuple[int, ...]:
        return tuple(target_width(group.channels, min(1.0, float(ratio) * scale), self.min_width, group.multiple)
                     for group, ratio in zip(self.view.groups, ratios))

    def size(self, widths: tuple[int, ...]) -> tuple[int, int | None]:
        if widths not in self.sizes:
            child = copy.deepcopy(self.parent)
            prune_groups(child, self.view.group_plans, widths, self.criterion)
            flops = None
            if self.budget.max_flops is not None:
                _, flops = forward_with_macs(child, self.example_input)
            self.sizes[widths] = (count_params(child), flops)
        return self.sizes[widths]

    def fits(self, widths: tuple[int, ...]) -> bool:
        return self.budget.fits(*self.size(widths))

    def largest_scale(self, ratios: Sequence[float]) -> float | None:
        """The largest scale whose widths fit, by bisection; None when the narrowest do not."""
        low, high = NARROWEST, self.widest_scale(ratios)
        if not self.fits(self.widths(ratios, low)):
            return None
        while high - low > SCALE_TOLERANCE * high:
            middle = (low + high) / 2
            low, high = (middle, high) if self.fits(self.widths(ratios, middle)) else (low, middle)
        return low

    @staticmethod
    def widest_scale(ratios: Sequence[float]) -> float:
        """The scale that gives every group its parent's width."""
        return 1.0 / max(min((float(r) for r in ratios), default=1.0), NARROWEST)  # no groups: all fixed

    def narrowest_size(self, ratios: Sequence[float]) -> str:
        return self.described(self.widths(ratios, NARROWEST))

    def described(self, widths: tuple[int, ...]) -> str:
        params, flops = self.size(widths)
        return f"{params:,} params" + (f", {flops:,} flops" if flops is not None else "")
