"""Reward formulas, annealed constraints, baseline and policy-gradient losses, checked by hand."""

import math

import pytest
import torch

from n2n.errors import CheckpointError, ConfigError
from n2n.policies import RemovalPolicy, ShrinkPolicy
from n2n.search.reinforce import EMABaseline, PolicyTrainer, actor_critic_loss, reinforce_loss
from n2n.search.reward import (
    INVALID_REWARD,
    Constraints,
    accuracy_reward,
    annealing_epsilon,
    compression_reward,
    reward,
)


pytestmark = pytest.mark.usefixtures("one_thread")


# --- reward formulas ---------------------------------------------------------------


def test_compression_reward_tenfold_smaller_student():
    # s/t = 0.1 -> C = 0.9 -> R_c = 0.9 * 1.1 = 0.99
    assert compression_reward(10, 100) == pytest.approx(0.99)


@pytest.mark.parametrize(
    ("student", "expected"),
    [(100, 0.0), (50, 0.75), (0, 1.0), (200, -3.0)],  # C = 0, 0.5, 1, -1
)
def test_compression_reward_values(student, expected):
    assert compression_reward(student, 100) == pytest.approx(expected)


def test_compression_reward_is_concave_in_compression():
    # Equal steps of compression pay less as the student gets smaller.
    gains = [compression_reward(s, 100) for s in (100, 75, 50, 25)]
    assert gains[1] - gains[0] > gains[2] - gains[1] > gains[3] - gains[2] > 0


def test_accuracy_reward_is_ratio():
    assert accuracy_reward(0.9, 0.95) == pytest.approx(0.9 / 0.95)
    assert accuracy_reward(95.0, 95.0) == pytest.approx(1.0)


def test_reward_is_product():
    assert reward(student_params=10, teacher_params=100, student_acc=0.45, teacher_acc=0.9) == pytest.approx(0.495)


def test_bad_denominators_raise():
    with pytest.raises(ValueError, match="teacher_params"):
        compression_reward(1, 0)
    with pytest.raises(ValueError, match="teacher_acc"):
        accuracy_reward(0.5, 0.0)


# --- annealed constraints ------------------------------------------------------------


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [(0, 1.0), (5, (2 / 3) ** 4), (15, 0.0), (20, 0.0)],
)
def test_annealing_epsilon(epoch, expected):
    assert annealing_epsilon(epoch) == pytest.approx(expected)


def test_annealing_epsilon_decimal_value():
    assert annealing_epsilon(5) == pytest.approx(0.19753086, abs=1e-8)


def test_annealing_epsilon_other_horizon_and_bad_epoch():
    assert annealing_epsilon(5, horizon=10) == pytest.approx(0.0625)
    assert annealing_epsilon(0, horizon=0) == 0.0
    with pytest.raises(ValueError, match="from 0"):
        annealing_epsilon(-1)


def test_violations_messages():
    limits = Constraints(max_params=1000, max_flops=5000, min_accuracy=0.9)
    assert limits.violations(1200, 6000, 0.85) == [
        "params 1,200 > max_params 1,000",
        "flops 6,000 > max_flops 5,000",
        "accuracy 0.85 < min_accuracy 0.9",
    ]
    assert limits.violations(1000, 5000, 0.9) == []


def test_violations_need_flops_when_limited():
    with pytest.raises(ValueError, match="FLOP"):
        Constraints(max_flops=10).violations(5, None, 1.0)


def test_constraints_reject_nonsense_limits():
    with pytest.raises(ConfigError, match="max_params"):
        Constraints(max_params=0)
    with pytest.raises(ConfigError, match="min_accuracy"):
        Constraints(min_accuracy=-0.1)


def _violating_reward(epoch: int) -> float:
    return reward(
        student_params=10,
        teacher_params=100,
        student_acc=0.45,
        teacher_acc=0.9,
        constraints=Constraints(max_params=5),
        policy_epoch=epoch,
    )


def test_violating_child_is_soft_at_first_and_hard_later():
    plain = 0.99 * 0.5
    assert _violating_reward(0) == pytest.approx(plain)
    eps = (2 / 3) ** 4
    assert _violating_reward(5) == pytest.approx((eps - 1) + eps * plain)
    assert _violating_reward(15) == pytest.approx(INVALID_REWARD)
    assert _violating_reward(20) == pytest.approx(-1.0)


def test_child_within_constraints_keeps_plain_reward_late():
    value = reward(
        student_params=10,
        teacher_params=100,
        student_acc=0.9,
        teacher_acc=0.9,
        constraints=Constraints(max_params=50, min_accuracy=0.8),
        policy_epoch=30,
    )
    assert value == pytest.approx(0.99)


# --- baseline ------------------------------------------------------------------------


def test_ema_baseline_by_hand():
    baseline = EMABaseline(decay=0.9)
    assert baseline.value is None
    # Batch 1: no history, b = its own mean 2.
    assert baseline.advantages([1.0, 3.0]).tolist() == pytest.approx([-1.0, 1.0])
    baseline.update([1.0, 3.0])
    assert baseline.value == pytest.approx(2.0)
    # Batch 2 (mean 1): advantages use b = 2, then b = 0.9 * 2 + 0.1 * 1 = 1.9.
    assert baseline.advantages([0.0, 2.0]).tolist() == pytest.approx([-2.0, 0.0])
    baseline.update([0.0, 2.0])
    assert baseline.value == pytest.approx(1.9)
    # Batch 3 (mean 4): advantages use b = 1.9, then b = 0.9 * 1.9 + 0.1 * 4 = 2.11.
    assert baseline.advantages([4.0, 4.0, 4.0]).tolist() == pytest.approx([2.1, 2.1, 2.1])
    baseline.update([4.0, 4.0, 4.0])
    assert baseline.value == pytest.approx(2.11)


def test_ema_baseline_rejects_bad_input():
    with pytest.raises(ConfigError, match="decay"):
        EMABaseline(decay=1.0)
    with pytest.raises(ValueError, match="finite"):
        EMABaseline().advantages([1.0, float("nan")])


# --- losses --------------------------------------------------------------------------


def test_reinforce_loss_by_hand():
    log_probs = torch.tensor([-0.5, -2.0], requires_grad=True)
    advantages = torch.tensor([2.0, -1.0], requires_grad=True)
    # -(2 * -0.5 + -1 * -2) / 2 = -0.5 ; entropy bonus 0.1 * mean(0.4, 0.6) = 0.05
    loss = reinforce_loss(log_probs, advantages, torch.tensor([0.4, 0.6]), entropy_coef=0.1)
    assert loss.item() == pytest.approx(-0.55)
    loss.backward()
    assert log_probs.grad.tolist() == pytest.approx([-1.0, 0.5])  # -A_i / N
    assert advantages.grad is None  # the advantage is a constant weight


def test_reinforce_loss_without_entropy():
    loss = reinforce_loss(torch.tensor([-1.0, -3.0]), torch.tensor([1.0, 1.0]))
    assert loss.item() == pytest.approx(2.0)


def test_actor_critic_loss_by_hand():
    log_probs = torch.tensor([-1.0, -2.0], requires_grad=True)
    values = torch.tensor([0.5, 0.5], requires_grad=True)
    rewards = torch.tensor([1.0, 0.0])
    # A = [0.5, -0.5]; policy term -(0.5 * -1 + -0.5 * -2) / 2 = -0.25;
    # value term 0.5 * mean(0.25, 0.25) = 0.125 -> total -0.125
    loss = actor_critic_loss(log_probs, rewards, values, value_coef=0.5)
    assert loss.item() == pytest.approx(-0.125)
    loss.backward()
    assert log_probs.grad.tolist() == pytest.approx([-0.25, 0.25])
    # Only the MSE reaches V: 0.5 * 2 * (V - R) / 2
    assert values.grad.tolist() == pytest.approx([-0.25, 0.25])


# --- trainer -------------------------------------------------------------------------


def _rollouts(policy, count=4, steps=5):
    torch.manual_seed(0)
    states = [torch.randn(steps, policy.state_dim) for _ in range(count)]
    masks = [torch.tensor([False, True, True, True, False])] * count
    outputs = [policy.act(s, m) for s, m in zip(states, masks)]
    return states, masks, outputs


def test_trainer_update_metrics_and_parameters_move():
    policy = RemovalPolicy(state_dim=3)
    trainer = PolicyTrainer(policy, lr=0.01)
    states, masks, outputs = _rollouts(policy)
    before = [p.detach().clone() for p in policy.parameters()]
    metrics = trainer.update(outputs, [0.1, 0.5, 0.3, 0.9])
    assert set(metrics) >= {"policy/loss", "policy/entropy", "reward/mean", "reward/max", "baseline/value"}
    assert metrics["reward/mean"] == pytest.approx(0.45)
    assert metrics["reward/max"] == pytest.approx(0.9)
    assert metrics["baseline/value"] == pytest.approx(0.45)  # first batch: its own mean
    assert trainer.baseline.value == pytest.approx(0.45)
    assert metrics["policy/entropy"] > 0
    assert any(not torch.equal(b, p) for b, p in zip(before, policy.parameters()))


def test_trainer_rejects_bad_setup():
    with pytest.raises(ConfigError, match="value_head=True"):
        PolicyTrainer(RemovalPolicy(3), lr=0.01, algorithm="actor-critic")
    with pytest.raises(ConfigError, match="Unknown policy algorithm"):
        PolicyTrainer(RemovalPolicy(3), lr=0.01, algorithm="ppo")
    with pytest.raises(ConfigError, match="learning rate"):
        PolicyTrainer(RemovalPolicy(3), lr=0.0)
    trainer = PolicyTrainer(RemovalPolicy(3), lr=0.01)
    outputs = [trainer.policy.act(torch.randn(4, 3)) for _ in range(2)]
    with pytest.raises(ValueError, match="3 rewards for 2 rollouts"):
        trainer.update(outputs, [1.0, 2.0, 3.0])
    with torch.no_grad():
        detached = [trainer.policy.act(torch.randn(4, 3)) for _ in range(2)]
    with pytest.raises(ValueError, match="gradients enabled"):
        trainer.update(detached, [1.0, 2.0])


def test_actor_critic_update_reports_value():
    policy = ShrinkPolicy(state_dim=2, value_head=True)
    trainer = PolicyTrainer(policy, lr=0.01, algorithm="actor-critic", grad_clip=1.0)
    batch = policy.act(torch.randn(4, 5, 2))
    metrics = trainer.update(batch, [0.2, 0.4, 0.6, 0.8])
    assert "value/mean" in metrics
    assert metrics["policy/grad_norm"] >= 0


def test_trainer_state_round_trip_and_algorithm_check():
    policy = RemovalPolicy(state_dim=3)
    trainer = PolicyTrainer(policy, lr=0.01)
    states, masks, outputs = _rollouts(policy)
    trainer.update(outputs, [0.1, 0.5, 0.3, 0.9])
    state = trainer.state_dict()

    resumed = PolicyTrainer(policy, lr=0.01)
    resumed.load_state_dict(state)
    assert resumed.baseline.value == pytest.approx(0.45)
    assert resumed.steps == 1
    assert resumed.optimizer.state_dict()["state"].keys() == trainer.optimizer.state_dict()["state"].keys()

    other = PolicyTrainer(RemovalPolicy(3, value_head=True), lr=0.01, algorithm="actor-critic")
    with pytest.raises(CheckpointError, match="same algorithm"):
        other.load_state_dict(state)
    with pytest.raises(CheckpointError, match="incomplete"):
        resumed.load_state_dict({"steps": 3})


def test_invalid_reward_constant():
    assert INVALID_REWARD == -1.0
    assert math.isfinite(INVALID_REWARD)
