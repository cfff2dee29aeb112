"""Policy-gradient updates: REINFORCE with a moving-average baseline, and actor-critic.

REINFORCE (N2N-METHOD.md, "Policy optimisation"): each rollout i is reinforced with
its own advantage A_i = R_i - b, where b is an exponential moving average of past
batch-mean rewards; loss = -mean_i(A_i * log pi(a_i)) - entropy_coef * mean entropy.
Actor-critic replaces b by the policy's value head V(s) and adds an MSE value loss.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from n2n.errors import CheckpointError, ConfigError
from n2n.policies.output import PolicyOutput

logger = logging.getLogger(__name__)

ALGORITHMS = ("reinforce", "actor-critic")


class EMABaseline:
    """b <- decay * b + (1 - decay) * mean(batch rewards).

    The first batch has no history, so it is its own baseline: its advantages are
    R_i - mean(batch), and b starts at that mean.
    """

    def __init__(self, decay: float = 0.9) -> None:
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"baseline decay must lie in [0, 1), got {decay!r}.")
        self.decay = float(decay)
        self.value: float | None = None

    def advantages(self, rewards: Sequence[float]) -> Tensor:
        """R_i - b, with b the baseline before this batch's update."""
        values = _reward_tensor(rewards)
        baseline = float(values.mean()) if self.value is None else self.value
        return values - baseline

    def update(self, rewards: Sequence[float]) -> None:
        batch_mean = float(_reward_tensor(rewards).mean())
        if self.value is None:
            self.value = batch_mean
        else:
            self.value = self.decay * self.value + (1.0 - self.decay) * batch_mean

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay = float(state["decay"])
        self.value = None if state["value"] is None else float(state["value"])


def reinforce_loss(
    log_probs: Tensor, advantages: Tensor, entropies: Tensor | None = None, entropy_coef: float = 0.0
) -> Tensor:
    """-(A_i * log_prob_i).mean() - entropy_coef * entropy.mean(); advantages carry no gradient."""
    loss = -(advantages.detach().to(log_probs) * log_probs).mean()
    return loss - _entropy_bonus(entropies, entropy_coef)


def actor_critic_loss(
    log_probs: Tensor,
    rewards: Tensor,
    values: Tensor,
    entropies: Tensor | None = None,
    entropy_coef: float = 0.0,
    value_coef: float = 0.5,
) -> Tensor:
    """Policy term with A = R - V (V detached) + value_coef * MSE(V, R) - entropy bonus."""
    rewards = torch.as_tensor(rewards).to(values)
    advantages = rewards - values.detach()
    value_loss = ((values - rewards) ** 2).mean()
    return reinforce_loss(log_probs, advantages, entropies, entropy_coef) + value_coef * value_loss


class PolicyTrainer:
    """Owns the Adam optimizer and the baseline of one policy, and performs its updates."""

    def __init__(
        self,
        policy: nn.Module,
        lr: float,
        algorithm: str = "reinforce",
        baseline_decay: float = 0.9,
        entropy_coef: float = 0.0,
        grad_clip: float | None = None,
        value_coef: float = 0.5,
    ) -> None:
        if algorithm not in ALGORITHMS:
            raise ConfigError(f"Unknown policy algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}.")
        if algorithm == "actor-critic" and getattr(policy, "value", None) is None:
            raise ConfigError("The actor-critic algorithm needs a policy built with value_head=True.")
        if not lr > 0:
            raise ConfigError(f"Policy learning rate must be positive, got {lr!r}.")
        if grad_clip is not None and not grad_clip > 0:
            raise ConfigError(f"grad_clip must be positive or None, got {grad_clip!r}.")
        self.policy = policy
        self.algorithm = algorithm
        self.entropy_coef = float(entropy_coef)
        self.value_coef = float(value_coef)
        self.grad_clip = grad_clip
        self.baseline = EMABaseline(baseline_decay)
        self.optimizer = torch.optim.Adam(policy.parameters(), lr=lr)
        self.steps = 0

    def update(self, outputs: PolicyOutput | Sequence[PolicyOutput], rewards: Sequence[float]) -> dict[str, float]:
        """One gradient step from rollouts sampled (with grad enabled) by the current policy."""
        log_probs, entropies, values = _collect(outputs)
        if not log_probs.requires_grad:
            raise ValueError(
                "the policy outputs carry no gradient (sampled under torch.no_grad?); "
                "sample the rollouts with gradients enabled."
            )
        reward_values = _reward_tensor(rewards)
        if reward_values.numel() != log_probs.numel():
            raise ValueError(f"got {reward_values.numel()} rewards for {log_probs.numel()} rollouts.")
        baseline_used = self.baseline.value if self.baseline.value is not None else float(reward_values.mean())
        if self.algorithm == "reinforce":
            advantages = self.baseline.advantages(rewards)
            loss = reinforce_loss(log_probs, advantages, entropies, self.entropy_coef)
        else:
            loss = actor_critic_loss(
                log_probs, reward_values, values, entropies, self.entropy_coef, self.value_coef
            )
        self.baseline.update(rewards)
        grad_norm = self._step(loss)
        metrics = {
            "policy/loss": float(loss.detach()),
            "policy/entropy": float(entropies.detach().mean()),
            "policy/grad_norm": grad_norm,
            "reward/mean": float(reward_values.mean()),
            "reward/max": float(reward_values.max()),
            "baseline/value": baseline_used,
        }
        if values is not None:
            metrics["value/mean"] = float(values.detach().mean())
        logger.debug("policy update %d: %s", self.steps, metrics)
        return metrics

    def _step(self, loss: Tensor) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        max_norm = self.grad_clip if self.grad_clip is not None else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), max_norm)
        self.optimizer.step()
        self.steps += 1
        return float(grad_norm)

    def state_dict(self) -> dict[str, Any]:
        """Optimizer, baseline and step count (the policy's weights are saved with save_policy)."""
        return {
            "algorithm": self.algorithm,
            "steps": self.steps,
            "optimizer": self.optimizer.state_dict(),
            "baseline": self.baseline.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or not {"algorithm", "optimizer", "baseline"} <= state.keys():
            raise CheckpointError("The saved policy-trainer state is incomplete; resume from a checkpoint written by n2n.")
        if state["algorithm"] != self.algorithm:
            raise CheckpointError(
                f"The saved policy trainer used {state['algorithm']!r} but this run uses {self.algorithm!r}; "
                "resume with the same algorithm."
            )
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as error:
            raise CheckpointError(f"The saved optimizer state does not fit this policy ({error}).") from None
        self.baseline.load_state_dict(state["baseline"])
        self.steps = int(state.get("steps", 0))


def _collect(outputs: PolicyOutput | Sequence[PolicyOutput]) -> tuple[Tensor, Tensor, Tensor | None]:
    """Flatten one batched output or a list of (single or batched) outputs to 1-D tensors."""
    items = [outputs] if isinstance(outputs, PolicyOutput) else list(outputs)
    if not items:
        raise ValueError("a policy update needs at least one rollout.")
    log_probs = torch.cat([o.log_prob.reshape(-1) for o in items])
    entropies = torch.cat([o.entropy.reshape(-1) for o in items])
    has_value = [o.value is not None for o in items]
    values = torch.cat([o.value.reshape(-1) for o in items]) if all(has_value) else None
    return log_probs, entropies, values


def _reward_tensor(rewards: Sequence[float]) -> Tensor:
    values = torch.as_tensor(rewards, dtype=torch.float32).reshape(-1)
    if values.numel() == 0:
        raise ValueError("rewards must not be empty.")
    if not bool(torch.isfinite(values).all()):
        raise ValueError(f"rewards must be finite numbers, got {values.tolist()}.")
    return values


def _entropy_bonus(entropies: Tensor | None, entropy_coef: float) -> Tensor | float:
    if entropies is None or entropy_coef == 0.0:
        return 0.0
    return entropy_coef * entropies.mean()
