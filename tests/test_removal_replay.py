"""benchmarks/removal_replay.py replays a run's removal stage from its recorded scores: with
the run's own seed it must give back exactly the rewards the run logged."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchscripts import load_benchmark
from clihelpers import make_compress_workspace
from n2n.config import SearchConfig, from_dict, load_yaml

SEARCH = {
    "epochs_per_stage": 3, "rollouts": 3, "stages": ["removal"],
    "proxy": {"epochs": 1, "subset": 64, "batch_size": 32}, "final": {"epochs": 1, "subset": None},
}
pytestmark = pytest.mark.usefixtures("one_thread")


def load_script():
    return load_benchmark("removal_replay")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    return make_compress_workspace(tmp_path_factory.mktemp("replay"), SEARCH)["run"]


def test_the_replay_of_the_runs_own_seed_gives_the_rewards_it_logged(finished_run):
    replay = load_script()
    config = from_dict(SearchConfig, load_yaml(finished_run / "config.yaml")["search"]).validate()
    stage = replay.ReplayedStage(finished_run, config)
    logged = [json.loads(line)["reward_mean"] for line in (finished_run / "metrics.jsonl").read_text().splitlines()
              if json.loads(line).get("kind") == "epoch"]
    assert replay.replay(stage, config.seed) == pytest.approx(logged)
    assert stage.unknown == 0  # the same children were sampled, so every one has its score


def test_main_counts_the_seeds_that_improve(finished_run, capsys):
    result = load_script().main(["--run", str(finished_run), "--seeds", "3", "--set", "removal_policy.lr=0.05"])
    assert result["seeds"] == 3 and 0 <= result["improved"] <= 3 and len(result["gains"]) == 3
    assert f"{result['improved']}/3 seeds improve" in capsys.readouterr().out
