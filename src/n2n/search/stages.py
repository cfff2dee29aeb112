"""The two N2N stages, seen by the search loop through one small interface.

A stage knows which policy it trains, which states that policy reads, and which
rewrite turns its actions into a child. The loop does the rest.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from ..arch import STATE_DIM, NetworkView, Rewrite, remove_layers, shrink_layers
from ..config import SearchConfig
from ..policies import PolicyOutput, RemovalPolicy, ShrinkPolicy


class Stage(Protocol):
    name: str

    def make_policy(self, value_head: bool) -> nn.Module: ...

    def sample(self, policy: nn.Module, view: NetworkView, generator: torch.Generator) -> PolicyOutput: ...

    def apply(self, parent: nn.Module, view: NetworkView, actions: torch.Tensor,
              example_input: torch.Tensor) -> tuple[Rewrite, dict[str, Any]]: ...


@dataclass
class RemovalStage:
    config: SearchConfig
    name: str = "removal"

    def make_policy(self, value_head: bool) -> nn.Module:
        spec = self.config.removal_policy
        return RemovalPolicy(STATE_DIM, hidden_size=spec.hidden_size, num_layers=spec.num_layers, value_head=value_head)

    def sample(self, policy: nn.Module, view: NetworkView, generator: torch.Generator) -> PolicyOutput:
        return policy.act(view.layer_states(), view.removable_mask(), generator=generator)

    def apply(self, parent, view, actions, example_input):
        rewrite = remove_layers(parent, view, [bool(a) for a in actions.tolist()], example_input,
                                init=self.config.init)
        return rewrite, rewrite.step


@dataclass
class ShrinkStage:
    config: SearchConfig
    name: str = "shrinkage"

    def make_policy(self, value_head: bool) -> nn.Module:
        spec = self.config.shrink_policy
        return ShrinkPolicy(STATE_DIM, ratios=self.config.ratios, hidden_size=spec.hidden_size,
                            num_layers=spec.num_layers, value_head=value_head)

    def sample(self, policy: nn.Module, view: NetworkView, generator: torch.Generator) -> PolicyOutput:
        return policy.act(view.group_states(), generator=generator)

    def apply(self, parent, view, actions, example_input):
        ratios = [float(self.config.ratios[int(a)]) for a in actions.tolist()]
        rewrite = shrink_layers(parent, view, ratios, example_input, init=self.config.init,
                                min_width=self.config.min_width, criterion=self.config.keep_channels)
        return rewrite, rewrite.step


def make_stage(name: str, config: SearchConfig) -> Stage:
    return RemovalStage(config) if name == "removal" else ShrinkStage(config)
