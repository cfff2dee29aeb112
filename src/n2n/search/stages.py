"""The two N2N stages, seen by the search loop through one small interface.

A stage knows which policy it trains, which states that policy reads, and which
rewrite turns its actions into a child. The loop does the rest.

With a budget (budget mode) every child is brought inside it: a shrinkage child's
ratios are scaled until it fits; a removal child (the parent itself when nothing is
removed) is then shrunk uniformly to fit, so that the removal stage ranks layer
removals by what they leave at the budget. The last rewrite of a budget-mode child
is always that fit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from ..arch import STATE_DIM, NetworkView, Rewrite, remove_layers, shrink_layers
from ..arch.budget import Budget, fit_to_budget
from ..config import SearchConfig
from ..policies import PolicyOutput, RemovalPolicy, ShrinkPolicy


class Stage(Protocol):
    name: str

    def make_policy(self, value_head: bool) -> nn.Module: ...

    def sample(self, policy: nn.Module, view: NetworkView, generator: torch.Generator) -> PolicyOutput: ...

    def apply(self, parent: nn.Module, view: NetworkView, actions: torch.Tensor,
              example_input: torch.Tensor) -> tuple[Rewrite, list[dict[str, Any]]]:
        """The child and the rewrites that make it from the parent (none when it is rejected)."""


@dataclass
class RemovalStage:
    config: SearchConfig
    budget: Budget | None = None
    name: str = "removal"

    def make_policy(self, value_head: bool) -> nn.Module:
        spec = self.config.removal_policy
        return RemovalPolicy(STATE_DIM, hidden_size=spec.hidden_size, num_layers=spec.num_layers, value_head=value_head)

    def sample(self, policy: nn.Module, view: NetworkView, generator: torch.Generator) -> PolicyOutput:
        return policy.act(view.layer_states(), view.removable_mask(), generator=generator)

    def apply(self, parent, view, actions, example_input):
        remove = [bool(a) for a in actions.tolist()]
        if self.budget is None:
            rewrite = remove_layers(parent, view, remove, example_input, init=self.config.init)
            return rewrite, steps_of(rewrite)
        return self.fitted_child(parent, view, remove, example_input)

    def fitted_child(self, parent, view, remove, example_input):
        """Budget mode: the parent with those layers removed (or none: the teacher stays a
        candidate), shrunk uniformly to the budget. A removal that leaves the size as it is (a
        pooling layer) makes a child like any other here, since the fit shrinks it."""
        base, base_view, steps = parent, view, []
        if any(flag and plan is not None for flag, plan in zip(remove, view.plans)):
            removed = remove_layers(parent, view, remove, example_input, init=self.config.init, must_shrink=False)
            if removed.child is None or self.budget.fits(removed.params, removed.flops):
                return removed, steps_of(removed)
            base, steps = removed.child, [removed.step]
            base_view = NetworkView.build(base, example_input, **self.config.view_options)
        fitted = fit_to_budget(base, base_view, [1.0] * len(base_view.groups), example_input, self.budget,
                               init=self.config.init, min_width=self.config.min_width,
                               criterion=self.config.keep_channels)
        if fitted.child is None:
            return fitted, []
        return fitted, [*steps, fitted.step]


@dataclass
class ShrinkStage:
    config: SearchConfig
    budget: Budget | None = None
    name: str = "shrinkage"

    def make_policy(self, value_head: bool) -> nn.Module:
        spec = self.config.shrink_policy
        return ShrinkPolicy(STATE_DIM, ratios=self.config.ratios, hidden_size=spec.hidden_size,
                            num_layers=spec.num_layers, value_head=value_head)

    def sample(self, policy: nn.Module, view: NetworkView, generator: torch.Generator) -> PolicyOutput:
        return policy.act(view.group_states(), generator=generator)

    def apply(self, parent, view, actions, example_input):
        ratios = [float(self.config.ratios[int(a)]) for a in actions.tolist()]
        options = dict(init=self.config.init, min_width=self.config.min_width, criterion=self.config.keep_channels)
        if self.budget is None:
            rewrite = shrink_layers(parent, view, ratios, example_input, **options)
        else:
            rewrite = fit_to_budget(parent, view, ratios, example_input, self.budget, **options)
        return rewrite, steps_of(rewrite)


def steps_of(rewrite: Rewrite) -> list[dict[str, Any]]:
    return [rewrite.step] if rewrite.child is not None else []


STAGE_CLASSES = {"removal": RemovalStage, "shrinkage": ShrinkStage}


def make_stage(name: str, config: SearchConfig, budget: Budget | None = None) -> Stage:
    """Stage `name`; with a `budget`, every child it makes is brought inside it."""
    return STAGE_CLASSES[name](config, budget)
