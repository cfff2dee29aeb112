"""Removal and shrink policies: shapes, masks, re-scoring, save/load, and learning direction."""

import math

import pytest
import torch

from n2n.errors import CheckpointError, ConfigError
from n2n.policies import DEFAULT_RATIOS, PolicyOutput, RemovalPolicy, ShrinkPolicy, load_policy, save_policy
from n2n.search.reinforce import PolicyTrainer

STATE_DIM = 7


pytestmark = pytest.mark.usefixtures("one_thread")


def make_policy(kind: str, **kwargs):
    torch.manual_seed(0)
    cls = RemovalPolicy if kind == "removal" else ShrinkPolicy
    return cls(state_dim=STATE_DIM, **kwargs)


# --- shapes --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["removal", "shrink"])
def test_single_sequence_shapes(kind):
    policy = make_policy(kind, value_head=True)
    out = policy.act(torch.randn(5, STATE_DIM))
    assert isinstance(out, PolicyOutput)
    assert out.actions.shape == (5,) and out.actions.dtype == torch.long
    assert out.log_prob.shape == () and out.entropy.shape == () and out.value.shape == ()


@pytest.mark.parametrize("kind", ["removal", "shrink"])
def test_batched_shapes_and_no_value_without_head(kind):
    policy = make_policy(kind)
    out = policy.act(torch.randn(4, 6, STATE_DIM))
    assert out.actions.shape == (4, 6)
    assert out.log_prob.shape == (4,) and out.entropy.shape == (4,)
    assert out.value is None


@pytest.mark.parametrize("kind", ["removal", "shrink"])
@pytest.mark.parametrize("length", [1, 3, 20])
def test_any_sequence_length_runs_with_the_same_weights(kind, length):
    # Transfer: one set of weights serves a 3-layer and a 20-layer network alike.
    policy = make_policy(kind, value_head=True)
    out = policy.act(torch.randn(length, STATE_DIM))
    assert out.actions.shape == (length,)
    assert torch.isfinite(out.log_prob) and torch.isfinite(out.value)


def test_wrong_state_width_is_refused():
    with pytest.raises(ValueError, match="state_dim=7"):
        make_policy("removal").act(torch.randn(5, 4))
    with pytest.raises(ValueError, match=r"\[T, D\]"):
        make_policy("shrink").act(torch.randn(5))


def test_bad_construction_raises_config_error():
    with pytest.raises(ConfigError, match="hidden_size"):
        RemovalPolicy(3, hidden_size=0)
    with pytest.raises(ConfigError, match="init_remove_prob"):
        RemovalPolicy(3, init_remove_prob=1.0)
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        ShrinkPolicy(3, ratios=[0.5, 1.5])
    with pytest.raises(ConfigError, match="ratios"):
        ShrinkPolicy(3, ratios=[])


# --- initial distribution ------------------------------------------------------------


def test_removal_starts_with_moderate_remove_probability():
    policy = make_policy("removal")
    states = torch.randn(8, STATE_DIM)
    logits, _ = policy(states.unsqueeze(0))
    probs = torch.sigmoid(logits)
    assert torch.allclose(probs, torch.full_like(probs, 0.4), atol=0.02)
    # Greedy at start keeps everything (p < 0.5); entropy is that of Bernoulli(0.4).
    assert policy.act(states, greedy=True).actions.sum() == 0
    bernoulli_entropy = -(0.4 * math.log(0.4) + 0.6 * math.log(0.6))
    assert policy.act(states).entropy.item() == pytest.approx(bernoulli_entropy, abs=0.01)


def test_removal_reads_each_layer_relative_to_the_network():
    policy = make_policy("removal")
    with torch.no_grad():
        for parameter in policy.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))  # weights that tell layers apart
    states = torch.rand(1, 6, STATE_DIM)
    states[..., 0] = 1.0  # a feature every layer shares adds nothing
    logits, _ = policy(states)
    # the same network measured in other units (feature scaled and shifted) looks the same
    assert torch.allclose(policy(3.0 * states + 0.5)[0], logits, atol=1e-4)
    raw = make_policy("removal", standardise=False)
    raw.load_state_dict(policy.state_dict())
    assert not torch.allclose(raw(3.0 * states + 0.5)[0], raw(states)[0], atol=1e-4)
    one_layer, _ = policy(states[:, :1])
    assert torch.isfinite(one_layer).all()


def test_shrink_starts_near_uniform_and_favours_halving():
    policy = make_policy("shrink")
    assert policy.ratios == DEFAULT_RATIOS and DEFAULT_RATIOS.count(0.5) == 5
    out = policy.act(torch.randn(6, STATE_DIM))
    assert out.entropy.item() == pytest.approx(math.log(11), abs=0.01)
    # Greedy picks the ratio with the most total probability: 0.5 (5 of 11 indices).
    greedy = policy.act(torch.randn(6, STATE_DIM), greedy=True)
    assert policy.ratios_for(greedy.actions) == [0.5] * 6


# --- masks ---------------------------------------------------------------------------


def test_removal_mask_forces_keep_and_counts_only_removable_layers():
    policy = make_policy("removal")
    states = torch.randn(6, STATE_DIM)
    mask = torch.tensor([False, True, True, False, True, False])
    out = policy.act(states, mask, actions=torch.ones(6, dtype=torch.long))
    assert out.actions.tolist() == [0, 1, 1, 0, 1, 0]
    logits, _ = policy(states.unsqueeze(0))
    expected = torch.nn.functional.logsigmoid(logits[0, mask]).sum()
    assert out.log_prob.item() == pytest.approx(expected.item(), abs=1e-6)
    for _ in range(20):
        sampled = policy.act(states, mask)
        assert sampled.actions[~mask].eq(0).all()


def test_removal_with_nothing_removable_has_zero_log_prob_and_entropy():
    policy = make_policy("removal")
    out = policy.act(torch.randn(4, STATE_DIM), torch.zeros(4, dtype=torch.bool))
    assert out.actions.tolist() == [0, 0, 0, 0]
    assert out.log_prob.item() == 0.0 and out.entropy.item() == 0.0


def test_shrink_mask_keeps_full_width_and_adds_no_log_prob():
    policy = make_policy("shrink")
    states = torch.randn(5, STATE_DIM)
    mask = torch.tensor([True, False, True, True, False])
    out = policy.act(states, mask=mask)
    assert policy.ratios_for(out.actions[~mask]) == [1.0, 1.0]
    unmasked = policy.act(states, out.actions)  # same actions, every step counted
    logits, _ = policy._score(states.unsqueeze(0), out.actions.unsqueeze(0))
    step_log_probs = torch.log_softmax(logits[0], -1).gather(1, out.actions[:, None])[:, 0]
    assert out.log_prob.item() == pytest.approx(step_log_probs[mask].sum().item(), abs=1e-5)
    assert unmasked.log_prob.item() == pytest.approx(step_log_probs.sum().item(), abs=1e-5)


def test_shrink_mask_needs_a_keep_ratio():
    policy = ShrinkPolicy(3, ratios=[0.25, 0.5])
    with pytest.raises(ValueError, match="ratio 1.0"):
        policy.act(torch.randn(3, 3), mask=torch.tensor([True, False, True]))


# --- re-scoring, entropy, greedy ------------------------------------------------------


@pytest.mark.parametrize("kind", ["removal", "shrink"])
def test_rescoring_sampled_actions_gives_same_log_prob(kind):
    policy = make_policy(kind, value_head=True)
    states = torch.randn(3, 9, STATE_DIM)
    mask = torch.rand(3, 9) > 0.3
    sampled = policy.act(states, mask=mask)
    again = policy.act(states, mask=mask, actions=sampled.actions)
    assert torch.equal(again.actions, sampled.actions)
    assert torch.allclose(again.log_prob, sampled.log_prob, atol=1e-5)
    assert torch.allclose(again.entropy, sampled.entropy, atol=1e-5)
    assert torch.allclose(again.value, sampled.value, atol=1e-5)
    assert again.log_prob.requires_grad


@pytest.mark.parametrize("kind", ["removal", "shrink"])
def test_entropy_positive_and_greedy_deterministic(kind):
    policy = make_policy(kind)
    states = torch.randn(10, STATE_DIM)
    assert policy.act(states).entropy.item() > 0
    first = policy.act(states, greedy=True).actions
    for _ in range(3):
        assert torch.equal(policy.act(states, greedy=True).actions, first)


@pytest.mark.parametrize("kind", ["removal", "shrink"])
def test_generator_makes_sampling_reproducible(kind):
    policy = make_policy(kind)
    states = torch.randn(12, STATE_DIM)
    first = policy.act(states, generator=torch.Generator().manual_seed(3)).actions
    second = policy.act(states, generator=torch.Generator().manual_seed(3)).actions
    assert torch.equal(first, second)


def test_ratios_for_maps_indices():
    policy = make_policy("shrink")
    assert policy.ratios_for(torch.tensor([0, 1, 10, 8])) == [0.25, 0.5, 1.0, 0.8]
    assert policy.ratios_for([6, 7]) == [0.6, 0.7]
    with pytest.raises(ValueError, match="outside"):
        policy.ratios_for([11])


def test_bad_actions_are_refused():
    with pytest.raises(ValueError, match="0 \\(keep\\) or 1"):
        make_policy("removal").act(torch.randn(3, STATE_DIM), actions=torch.tensor([0, 2, 1]))
    with pytest.raises(ValueError, match="indices"):
        make_policy("shrink").act(torch.randn(3, STATE_DIM), torch.tensor([0, 11, 1]))


# --- save / load ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["removal", "shrink"])
def test_save_load_round_trip(tmp_path, kind):
    policy = make_policy(kind, hidden_size=12, value_head=True)
    with torch.no_grad():
        for parameter in policy.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))  # not the initial weights
    path = tmp_path / "policy.pt"
    save_policy(path, policy)
    loaded = load_policy(path, kind=kind)
    assert type(loaded) is type(policy) and loaded.config() == policy.config()
    assert type(policy)(**policy.config()).config() == policy.config()
    states = torch.randn(2, 11, STATE_DIM)
    actions = policy.act(states).actions
    expected, got = policy.act(states, actions=actions), loaded.act(states, actions=actions)
    assert torch.equal(expected.log_prob, got.log_prob) and torch.equal(expected.value, got.value)
    assert torch.equal(policy.act(states, greedy=True).actions, loaded.act(states, greedy=True).actions)


def test_load_junk_raises_checkpoint_error(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a policy\x00\x01\x02")
    with pytest.raises(CheckpointError, match="not a policy file"):
        load_policy(junk)


def test_load_foreign_torch_file_raises_checkpoint_error(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="not a policy file"):
        load_policy(path)


def test_load_missing_file_raises_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_policy(tmp_path / "nowhere.pt")


def test_load_checks_kind_and_weights(tmp_path):
    path = tmp_path / "removal.pt"
    save_policy(path, make_policy("removal"))
    with pytest.raises(CheckpointError, match="removal policy but a shrink"):
        load_policy(path, kind="shrink")
    payload = torch.load(path, weights_only=True)
    payload["config"]["hidden_size"] = 99  # weights no longer fit the config
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="damaged"):
        load_policy(path)


# --- learning direction --------------------------------------------------------------


def test_reinforce_teaches_removal_policy_to_remove():
    torch.manual_seed(0)
    policy = RemovalPolicy(state_dim=4, hidden_size=16)
    trainer = PolicyTrainer(policy, lr=0.02)
    states = torch.randn(6, 4)
    mask = torch.tensor([False, True, True, False, True, True])
    batch = states.expand(5, -1, -1)  # five rollouts of the same network, sampled at once
    for _ in range(100):
        outputs = policy.act(batch, mask)
        rewards = outputs.actions[:, mask].float().mean(dim=1).tolist()  # fraction removed
        trainer.update(outputs, rewards)
    all_removed = policy.act(states, mask, actions=mask.long())
    assert math.exp(all_removed.log_prob.item() / int(mask.sum())) > 0.9  # mean p(remove) per layer
    assert policy.act(states, mask, greedy=True).actions.tolist() == mask.long().tolist()


@pytest.mark.parametrize("algorithm", ["reinforce", "actor-critic"])
def test_policy_gradient_teaches_shrink_policy_the_rewarded_ratio(algorithm):
    torch.manual_seed(0)
    target = DEFAULT_RATIOS.index(0.8)
    policy = ShrinkPolicy(state_dim=4, hidden_size=16, value_head=algorithm == "actor-critic")
    trainer = PolicyTrainer(policy, lr=0.02, algorithm=algorithm)
    states = torch.randn(5, 5, 4)
    for _ in range(100):
        outputs = policy.act(states)
        rewards = [a.eq(target).float().mean().item() for a in outputs.actions]
        trainer.update(outputs, rewards)
    greedy = policy.act(states, greedy=True).actions
    assert greedy.eq(target).all()
