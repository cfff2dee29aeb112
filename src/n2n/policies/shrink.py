"""Stage-2 policy: an autoregressive LSTM that picks a width ratio for each layer in turn."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
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

# The reference ratio set. 0.5 appears five times on purpose: with a near-uniform
# initial policy over the 11 indices, "halve the layer" is drawn with probability
# 5/11, so early children are clearly smaller than their parent (a child that is not
# smaller earns -1) while every other ratio stays reachable. Duplicates are distinct
# actions with their own logits; only the ratio they map to is shared.
DEFAULT_RATIOS: tuple[float, ...] = (0.25, 0.5, 0.5, 0.5, 0.5, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


class ShrinkPolicy(nn.Module):
    """pi_shrink(a_t | a_{t-1}, h_{t-1}, x_t): one ratio index per layer, previous choice fed back.

    The input at step t is ``concat(states[t], one_hot(a_{t-1}))`` (zeros at t = 0).
    Sequence length is free, so a trained policy transfers to deeper networks.
    """

    kind = "shrink"

    def __init__(
        self,
        state_dim: int,
        ratios: Sequence[float] = DEFAULT_RATIOS,
        hidden_size: int = 50,
        num_layers: int = 2,
        value_head: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("state_dim", state_dim), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            require_positive_int(name, value)
        self.ratios = _checked_ratios(ratios)
        self.state_dim = state_dim
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_actions = len(self.ratios)
        self.lstm = nn.LSTM(state_dim + self.num_actions, hidden_size, num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, self.num_actions)
        self.value = nn.Linear(hidden_size, 1) if value_head else None
        # Near-uniform start, so the initial ratio distribution is the one DEFAULT_RATIOS encodes.
        nn.init.uniform_(self.head.weight, -0.01, 0.01)
        nn.init.zeros_(self.head.bias)
        self.register_buffer("_ratio_groups", _ratio_groups(self.ratios), persistent=False)
        self._keep_index = _keep_index(self.ratios)

    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this policy: ``ShrinkPolicy(**policy.config())``."""
        return {
            "state_dim": self.state_dim,
            "ratios": list(self.ratios),
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "value_head": self.value is not None,
        }

    def ratios_for(self, actions: Tensor | Sequence[int]) -> list[float]:
        """Width ratios chosen by one sequence of action indices."""
        if isinstance(actions, Tensor):
            if actions.dim() != 1:
                raise ValueError(f"ratios_for takes one sequence of actions [T], got shape {tuple(actions.shape)}.")
            actions = actions.tolist()
        indices = [int(i) for i in actions]
        bad = [i for i in indices if not 0 <= i < self.num_actions]
        if bad:
            raise ValueError(f"action indices {bad} are outside 0..{self.num_actions - 1}.")
        return [self.ratios[i] for i in indices]

    def act(
        self,
        states: Tensor,
        actions: Tensor | None = None,
        *,
        mask: Tensor | None = None,
        greedy: bool = False,
        generator: torch.Generator | None = None,
    ) -> PolicyOutput:
        """Sample (or, with ``actions``, re-score) one ratio index per layer.

        mask (optional): bool ``[T]`` or ``[B, T]``, True where the layer may shrink.
        Elsewhere the action is forced to the ratio 1.0 index (the layer keeps its
        width), fed back as such, and adds nothing to log_prob or entropy.
        ``greedy`` picks the ratio with the highest total probability (summing its
        duplicate indices), then its most likely index.
        """
        batch, single = as_batch(states, self.state_dim)
        size, steps, _ = batch.shape
        counted = expand_steps(mask, size, steps, "mask", torch.bool)
        if counted is None:
            counted = torch.ones(size, steps, dtype=torch.bool, device=batch.device)
        if self._keep_index is None and not bool(counted.all()):
            raise ValueError("a shrink mask needs the ratio 1.0 among the policy's ratios to keep layers unchanged.")
        if actions is None:
            chosen, logits, value = self._rollout(batch, counted, greedy, generator)
        else:
            chosen = self._forced(expand_steps(actions, size, steps, "actions", torch.long), counted)
            logits, value = self._score(batch, chosen)
        dist = torch.distributions.Categorical(logits=logits)
        log_prob, entropy = masked_step_stats(dist.log_prob(chosen), dist.entropy(), counted)
        return unbatch(PolicyOutput(chosen, log_prob, entropy, value), single)

    def _value(self, h_n: Tensor) -> Tensor | None:
        return None if self.value is None else self.value(h_n[-1]).squeeze(-1)

    def _score(self, states: Tensor, actions: Tensor) -> tuple[Tensor, Tensor | None]:
        """Teacher-forced pass: all previous actions are known, so one LSTM call suffices."""
        fed_back = F.one_hot(actions, self.num_actions).to(states.dtype)
        start = torch.zeros_like(fed_back[:, :1])  # no previous action before the first layer
        previous = torch.cat([start, fed_back[:, :-1]], dim=1)
        out, (h_n, _) = self.lstm(torch.cat([states, previous], dim=-1))
        return self.head(out), self._value(h_n)

    def _rollout(
        self, states: Tensor, counted: Tensor, greedy: bool, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Step-by-step pass: each action is chosen before it is fed to the next step."""
        size, steps, _ = states.shape
        previous = torch.zeros(size, self.num_actions, dtype=states.dtype, device=states.device)
        hidden = None
        chosen, step_logits = [], []
        for t in range(steps):
            out, hidden = self.lstm(torch.cat([states[:, t], previous], dim=-1).unsqueeze(1), hidden)
            logits = self.head(out[:, 0])
            action = self._forced(self._pick(logits, greedy, generator), counted[:, t])
            previous = F.one_hot(action, self.num_actions).to(states.dtype)
            chosen.append(action)
            step_logits.append(logits)
        return torch.stack(chosen, dim=1), torch.stack(step_logits, dim=1), self._value(hidden[0])

    def _pick(self, logits: Tensor, greedy: bool, generator: torch.Generator | None) -> Tensor:
        with torch.no_grad():
            probs = torch.softmax(logits, dim=-1)
            if not greedy:
                return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
            best_ratio = (probs @ self._ratio_groups).argmax(dim=-1)
            allowed = self._ratio_groups[:, best_ratio].T.bool()
            return logits.masked_fill(~allowed, float("-inf")).argmax(dim=-1)

    def _forced(self, actions: Tensor, counted: Tensor) -> Tensor:
        if ((actions < 0) | (actions >= self.num_actions)).any():
            raise ValueError(f"shrink actions must be indices in 0..{self.num_actions - 1}.")
        if self._keep_index is None:
            return actions
        return torch.where(counted, actions, torch.full_like(actions, self._keep_index))


def _checked_ratios(ratios: Sequence[float]) -> tuple[float, ...]:
    try:
        values = tuple(float(r) for r in ratios)
    except (TypeError, ValueError):
        raise ConfigError(f"Shrink ratios must be a list of numbers, got {ratios!r}.") from None
    if not values or any(not 0.0 < r <= 1.0 for r in values):
        raise ConfigError(f"Shrink ratios must be a non-empty list of numbers in (0, 1], got {list(values)}.")
    return values


def _ratio_groups(ratios: tuple[float, ...]) -> Tensor:
    """[K, U] 0/1 matrix mapping each action index to its distinct ratio value."""
    distinct = sorted(set(ratios))
    groups = torch.zeros(len(ratios), len(distinct))
    for index, ratio in enumerate(ratios):
        groups[index, distinct.index(ratio)] = 1.0
    return groups


def _keep_index(ratios: tuple[float, ...]) -> int | None:
    return ratios.index(1.0) if 1.0 in ratios else None
