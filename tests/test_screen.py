"""benchmarks/screen.py: each child of a budget-mode run rebuilt as the search made it, screened,
and ranked against the proxy accuracy the run recorded."""
from __future__ import annotations

import argparse
import json

import pytest

from benchscripts import load_benchmark
from clihelpers import make_compress_workspace

SEARCH = {
    "epochs_per_stage": 2, "rollouts": 3, "compression": 2,
    "proxy": {"epochs": 1, "subset": 64, "batch_size": 32}, "final": {"epochs": 1, "subset": None},
}
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_compress_workspace(tmp_path_factory.mktemp("screen"), SEARCH)


def test_every_trained_child_is_rebuilt_at_its_recorded_size_and_screened(workspace, tmp_path, capsys):
    out = tmp_path / "screen.json"
    assert load_benchmark("screen").main([str(workspace["run"]), "--data-dir", str(workspace["mnist"]),
                                          "--screens", "0:0,32:0,32:32", "--proxy-seeds", "0,1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    records = [json.loads(line) for line in (workspace["run"] / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in records if r.get("kind") == "candidate" and r["valid"] and not r["cached"]]
    assert len(result["rows"]) == len(trained) > 0
    for row in result["rows"]:
        for key in ("screen_c0_t0", "screen_c32_t0", "screen_c32_t32", "proxy_seed_plus_0", "proxy_seed_plus_1"):
            assert 0 <= row[key] <= 1 and row[f"{key}_seconds"] > 0
        # the child, its data and its seed as the search had them: the run's own score comes back
        assert row["proxy_seed_plus_0"] == row["proxy_accuracy"]
    stages = {row["stage"] for row in result["rows"]}
    assert len(result["agreement"]) == len(stages) * 7  # 3 screens, the proxy twice, parameters, MACs per stage
    table = capsys.readouterr().out
    assert "| BatchNorm on 32 images, 1 epoch on 32 images |" in table and "| inherited BatchNorm, no training |" in table


def test_final_ranks_the_screens_the_proxy_and_the_size_against_the_final_students_test_accuracy(workspace, tmp_path,
                                                                                                capsys):
    out = tmp_path / "final.json"
    assert load_benchmark("screen").main([str(workspace["run"]), "--data-dir", str(workspace["mnist"]),
                                          "--screens", "0:0", "--final", "--children", "3", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert len(result["rows"]) == 3
    assert all(0 <= row["final_test_accuracy"] <= 1 and row["final_test_accuracy_seconds"] > 0
               for row in result["rows"])
    against_final = [row for row in result["agreement"] if row["against"] == "final test accuracy"]
    screens = {row["screen"] for row in against_final}
    assert screens == {"inherited BatchNorm, no training", "the run's proxy, as recorded", "parameter count",
                       "multiply-accumulates"}
    assert "| final test accuracy |" in capsys.readouterr().out


def test_a_folder_that_is_no_run_is_one_line_and_exit_2(tmp_path, capsys):
    assert load_benchmark("screen").main([str(tmp_path / "absent")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_screens_are_refused_unless_pairs_of_counts():
    screens = load_benchmark("screen").screens
    assert [(s.calibrate, s.train) for s in screens("0:0,256:1000")] == [(0, 0), (256, 1000)]
    for bad in ("256", "1:2:3", "-1:0", "a:b", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="CALIBRATE:TRAIN"):
            screens(bad)
