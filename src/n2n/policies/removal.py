"""Stage-1 policy: a bidirectional LSTM that marks every layer keep (0) or remove (1)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from n2n.errors import ConfigError
from n2n.policies.output import (
    PolicyOutput,
    as_batch,
    expand_steps,
    masked_step_stats,
    require_positive_int,
    unbatch,
)

KEEP, REMOVE = 0, 1

# Initial remove-probability. 0.5 would strip half of a deep teacher in the first
# rollouts, and most such children score near -1 or near zero accuracy, which gives
# the policy little to compare; a lower but still exploratory value (0.4) samples
# children that differ from the teacher by a few layers to many.
DEFAULT_INIT_REMOVE_PROB = 0.4

# Guards the division when a feature has the same value on every layer.
_SPREAD_FLOOR = 1e-3


class RemovalPolicy(nn.Module):
    """pi_remove(a_t | h_{t-1}, h_{t+1}, x_t): reads the whole sequence, decides each layer at once.

    Sequence length is free: the same weights run on a 4-layer or a 40-layer network,
    which is what lets a policy trained on a small teacher start a search on a large one.
    """

    kind = "removal"

    def __init__(
        self,
        state_dim: int,
        hidden_size: int = 30,
        num_layers: int = 2,
        value_head: bool = False,
        init_remove_prob: float = DEFAULT_INIT_REMOVE_PROB,
        standardise: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("state_dim", state_dim), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            require_positive_int(name, value)
        if not 0.0 < init_remove_prob < 1.0:
            raise ConfigError(f"init_remove_prob must lie strictly between 0 and 1, got {init_remove_prob!r}.")
        self.state_dim = state_dim
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.init_remove_prob = float(init_remove_prob)
        self.standardise = bool(standardise)
        self.lstm = nn.LSTM(state_dim, hidden_size, num_layers, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden_size, 1)
        self.value = nn.Linear(2 * hidden_size, 1) if value_head else None
        self._init_head()

    def _init_head(self) -> None:
        # Near-zero weights make the initial remove-probability about init_remove_prob
        # for every layer whatever the states; the bias sets that level.
        nn.init.uniform_(self.head.weight, -0.01, 0.01)
        nn.init.constant_(self.head.bias, math.log(self.init_remove_prob / (1.0 - self.init_remove_prob)))

    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this policy: ``RemovalPolicy(**policy.config())``."""
        return {
            "state_dim": self.state_dim,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "value_head": self.value is not None,
            "init_remove_prob": self.init_remove_prob,
            "standardise": self.standardise,
        }

    def forward(self, states: Tensor) -> tuple[Tensor, Tensor | None]:
        """Remove-logits ``[B, T]`` and values ``[B]`` (or None) for states ``[B, T, D]``."""
        out, (h_n, _) = self.lstm(self.relative(states) if self.standardise else states)
        logits = self.head(out).squeeze(-1)
        if self.value is None:
            return logits, None
        # Top layer's final forward state (after the last layer) and final backward
        # state (after the first layer): together they have read the whole network.
        summary = torch.cat([h_n[-2], h_n[-1]], dim=-1)
        return logits, self.value(summary).squeeze(-1)

    @staticmethod
    def relative(states: Tensor) -> Tensor:
        """Each feature centred and scaled over the network's own layers.

        Most layers of a CNN share kernel, stride and padding, so their raw state vectors
        differ little, and the remove-probabilities of all layers rise and fall together.
        Seen relative to the rest of the network, what sets a layer apart (its kind, its
        width, its place in a block) dominates the input. Replaying the removal stage of
        two demo runs (benchmarks/removal_replay.py, demo settings, 20 seeds each), the
        mean reward of the last 5 policy epochs beat that of the first 5 in 20 and 19
        seeds this way, in 18 and 11 on raw states.
        """
        centred = states - states.mean(dim=1, keepdim=True)
        return centred / (states.std(dim=1, keepdim=True, correction=0) + _SPREAD_FLOOR)

    def act(
        self,
        states: Tensor,
        mask: Tensor | None = None,
        actions: Tensor | None = None,
        *,
        greedy: bool = False,
        generator: torch.Generator | None = None,
    ) -> PolicyOutput:
        """Sample (or, with ``actions``, re-score) keep/remove for every layer.

        mask: bool ``[T]`` or ``[B, T]``, True where the action counts (removable layers).
        Elsewhere the action is forced to keep (also in given ``actions``) and adds
        nothing to log_prob or entropy. ``greedy`` removes a layer when p(remove) > 0.5.
        """
        batch, single = as_batch(states, self.state_dim)
        size, steps, _ = batch.shape
        counted = expand_steps(mask, size, steps, "mask", torch.bool)
        if counted is None:
            counted = torch.ones(size, steps, dtype=torch.bool, device=batch.device)
        logits, value = self(batch)
        chosen = self._choose(logits, actions, greedy, generator, size, steps)
        chosen = torch.where(counted.to(chosen.device), chosen, torch.zeros_like(chosen))
        dist = torch.distributions.Bernoulli(logits=logits)
        log_prob, entropy = masked_step_stats(dist.log_prob(chosen.float()), dist.entropy(), counted)
        return unbatch(PolicyOutput(chosen, log_prob, entropy, value), single)

    def _choose(
        self,
        logits: Tensor,
        actions: Tensor | None,
        greedy: bool,
        generator: torch.Generator | None,
        size: int,
        steps: int,
    ) -> Tensor:
        if actions is not None:
            given = expand_steps(actions, size, steps, "actions", torch.long)
            if ((given != KEEP) & (given != REMOVE)).any():
                raise ValueError("removal actions must be 0 (keep) or 1 (remove).")
            return given.to(logits.device)
        if greedy:
            return (logits > 0).long()
        with torch.no_grad():
            return torch.bernoulli(torch.sigmoid(logits), generator=generator).long()
