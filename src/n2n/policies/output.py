"""What a policy returns, and the input handling both policies share."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from n2n.errors import ConfigError


@dataclass
class PolicyOutput:
    """One decision over a whole layer sequence (or a batch of them).

    For an unbatched call (states ``[T, D]``) ``actions`` is ``[T]`` and the other
    fields are 0-dim tensors; for a batched call (``[B, T, D]``) they gain a leading
    ``B``.

    actions:  long; the chosen action index at every step.
    log_prob: log-probability of the whole sequence of actions, summed over the
              counted steps (differentiable when computed with grad enabled).
    entropy:  policy entropy averaged over the counted steps (0 when no step counts).
    value:    state-value estimate from the value head, or None without one.
    """

    actions: Tensor
    log_prob: Tensor
    entropy: Tensor
    value: Tensor | None = None


def require_positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"Policy option {name} must be a positive integer, got {value!r}.")


def as_batch(states: Tensor, state_dim: int) -> tuple[Tensor, bool]:
    """Return states as ``[B, T, D]`` float and whether the caller passed one sequence."""
    if not isinstance(states, Tensor) or states.dim() not in (2, 3):
        shape = tuple(states.shape) if isinstance(states, Tensor) else type(states).__name__
        raise ValueError(f"states must be a [T, D] or [B, T, D] tensor, got {shape}.")
    single = states.dim() == 2
    batch = states.unsqueeze(0) if single else states
    if batch.shape[-1] != state_dim:
        raise ValueError(
            f"states have {batch.shape[-1]} features per layer but the policy was built "
            f"for state_dim={state_dim}."
        )
    if batch.shape[1] == 0:
        raise ValueError("states must describe at least one layer (T >= 1).")
    return batch.float(), single


def expand_steps(values: Tensor | None, batch: int, steps: int, name: str, dtype: torch.dtype) -> Tensor | None:
    """Broadcast an optional per-step tensor (``[T]`` or ``[B, T]``) to ``[B, T]``."""
    if values is None:
        return None
    values = torch.as_tensor(values)
    if values.dim() == 1:
        values = values.unsqueeze(0).expand(batch, -1)
    if tuple(values.shape) != (batch, steps):
        raise ValueError(f"{name} must have shape [T] or [B, T] = [{batch}, {steps}], got {tuple(values.shape)}.")
    return values.to(dtype)


def masked_step_stats(step_log_probs: Tensor, step_entropies: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Sum log-probs and average entropies over the counted steps of each sample."""
    weight = mask.to(step_log_probs.dtype)
    log_prob = (step_log_probs * weight).sum(dim=1)
    counted = weight.sum(dim=1).clamp(min=1.0)  # no counted step -> entropy 0, not NaN
    entropy = (step_entropies * weight).sum(dim=1) / counted
    return log_prob, entropy


def unbatch(output: PolicyOutput, single: bool) -> PolicyOutput:
    if not single:
        return output
    value = None if output.value is None else output.value[0]
    return PolicyOutput(output.actions[0], output.log_prob[0], output.entropy[0], value)
