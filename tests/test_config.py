"""Configuration: defaults from the method page, YAML round trip, clear errors."""
from __future__ import annotations

from pathlib import Path

import pytest

from n2n.config import SearchConfig, dump_yaml, from_dict, load_yaml, to_dict
from n2n.errors import ConfigError


def test_defaults_follow_the_method_page_with_the_policy_steps_measured_for_10_epochs():
    config = SearchConfig()
    assert config.rollouts == 5 and config.epochs_per_stage == 10
    assert (config.removal_policy.hidden_size, config.removal_policy.num_layers, config.removal_policy.lr) == (30, 2, 0.02)
    assert (config.shrink_policy.hidden_size, config.shrink_policy.num_layers, config.shrink_policy.lr) == (50, 2, 0.03)
    assert config.ratios.count(0.5) == 5 and config.min_width == 10 and config.annealing_horizon == 15
    assert (config.proxy.loss, config.final.loss, config.final.augment) == ("kd", "kd", True)


def test_the_paper_settings_file_gives_the_method_pages_policies():
    config = from_dict(SearchConfig, load_yaml(Path(__file__).parents[1] / "experiments" / "paper.yaml")).validate()
    assert (config.removal_policy.lr, config.shrink_policy.lr, config.rollouts) == (0.003, 0.1, 5)
    assert config.stage_rollouts("removal") == 5 and config.stage_horizon("removal") == 15
    assert config.proxy.loss == config.final.loss == "l2"


def test_a_stage_samples_its_own_rollouts_or_the_searchs():
    config = from_dict(SearchConfig, {"rollouts": 3, "removal_policy": {"rollouts": 10}}).validate()
    assert config.stage_rollouts("removal") == 10 and config.stage_rollouts("shrinkage") == 3
    assert config.stage_policy("shrinkage") is config.shrink_policy
    hard_removal = from_dict(SearchConfig, {"removal_policy": {"annealing_horizon": 0}})
    assert hard_removal.stage_horizon("removal") == 0 and hard_removal.stage_horizon("shrinkage") == 15


def test_yaml_round_trip(tmp_path):
    config = from_dict(SearchConfig, {"rollouts": 3, "shrink_policy": {"lr": 0.05}, "proxy": {"epochs": 2}})
    path = tmp_path / "c.yaml"
    path.write_text(dump_yaml(to_dict(config)))
    again = from_dict(SearchConfig, load_yaml(path))
    assert again == config
    assert again.shrink_policy.lr == 0.05 and again.shrink_policy.hidden_size == 50 and again.proxy.epochs == 2


def test_unknown_option_is_named():
    with pytest.raises(ConfigError, match="rolouts"):
        from_dict(SearchConfig, {"rolouts": 3})
    with pytest.raises(ConfigError, match="config.proxy: epoch"):
        from_dict(SearchConfig, {"proxy": {"epoch": 3}})


@pytest.mark.parametrize("changes, word", [
    ({"stages": ("pruning",)}, "pruning"), ({"algorithm": "ppo"}, "algorithm"), ({"init": "random"}, "init"),
    ({"keep_channels": "gamma"}, "keep_channels"),
    ({"rollouts": 0}, "rollouts"), ({"min_accuracy": 90}, "fraction"), ({"ratios": (0.5, 1.5)}, "ratios"),
    ({"removal_policy": {"rollouts": 0}}, "removal_policy.rollouts"),
    ({"shrink_policy": {"rollouts": 2.5}}, "shrink_policy.rollouts"),
    ({"removal_policy": {"annealing_horizon": -1}}, "removal_policy.annealing_horizon"),
])
def test_invalid_values(changes, word):
    with pytest.raises(ConfigError, match=word):
        from_dict(SearchConfig, changes).validate()


def test_bad_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("rollouts: [1, 2\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_yaml(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "none.yaml")
