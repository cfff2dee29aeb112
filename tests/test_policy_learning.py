"""benchmarks/policy_learning.py: what a search's policies learned, read from a run folder."""
from __future__ import annotations

import json
from pathlib import Path

from benchscripts import load_benchmark


def child(stage: str, epoch: int, rollout: int, actions: list[int], accuracy: float, valid: bool = True) -> dict:
    return {"stage": stage, "epoch": epoch, "rollout": rollout, "actions": actions, "reward": accuracy,
            "params": 1000, "flops": 9000, "val_accuracy": accuracy if valid else 0.0, "seconds": 1.0,
            "cached": False, "valid": valid, "reason": None if valid else "fails", "kind": "candidate"}


def epoch_record(stage: str, epoch: int) -> dict:
    return {"stage": stage, "epoch": epoch, "reward_mean": 0.5, "reward_max": 0.6, "baseline": 0.4,
            "entropy": 0.6, "policy_loss": -0.1, "best_reward": 0.6, "best_params": 1000,
            "best_val_accuracy": 0.9, "seconds": 1.0, "kind": "epoch"}


def write_run(root: Path) -> Path:
    lines = [{"kind": "teacher", "params": 10_000, "flops": 90_000, "val_accuracy": 0.92},
             child("removal", 0, 0, [1, 1, 0], 0.80), child("removal", 0, 1, [1, 0, 0], 0.86),
             epoch_record("removal", 0),
             child("removal", 1, 0, [0, 0, 0], 0.88), child("removal", 1, 1, [1, 1, 1], 0.0, valid=False),
             epoch_record("removal", 1),
             child("shrinkage", 0, 0, [2, 4, 6], 0.84), child("shrinkage", 0, 1, [10, 10, 10], 0.89),
             epoch_record("shrinkage", 0)]
    root.mkdir()
    (root / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (root / "config.yaml").write_text("teacher: teacher.pt\ndataset: fashion-mnist\n")
    return root


def test_each_epoch_and_each_number_of_removed_layers_is_tabled(tmp_path, capsys):
    run = write_run(tmp_path / "run")
    assert load_benchmark("policy_learning").main([str(run)]) == 0
    text = capsys.readouterr().out
    # removal, epoch 0: 2 and 1 layers removed, proxy 80 % and 86 %
    assert "| 0 | 2 | 1.50 | 83.00 | 86.00 | 86.00 |" in text
    # epoch 1: the invalid child's actions count, its accuracy does not
    assert "| 1 | 2 | 1.50 | 88.00 | 88.00 | 88.00 |" in text
    for line in ("| 0 | 1 | 88.00 | 88.00 |", "| 1 | 1 | 86.00 | 86.00 |", "| 2 | 1 | 80.00 | 80.00 |"):
        assert line in text
    assert "| 3 |" not in text.split("### shrinkage")[0].split("layers removed |")[1]
    # shrinkage: mean width indices 4 and 10
    assert "| 0 | 2 | 7.00 | 86.50 | 89.00 | 89.00 |" in text


def test_a_missing_run_folder_is_one_line_and_exit_2(tmp_path, capsys):
    assert load_benchmark("policy_learning").main([str(tmp_path / "absent")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_a_baseline_run_has_no_policy_to_table(tmp_path, capsys):
    root = tmp_path / "prune"
    root.mkdir()
    lines = [{"kind": "teacher", "params": 10_000, "flops": 90_000, "val_accuracy": 0.92},
             child("prune", 0, 0, [], 0.85), epoch_record("prune", 0)]
    (root / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (root / "config.yaml").write_text("teacher: teacher.pt\ndataset: fashion-mnist\n")
    assert load_benchmark("policy_learning").main([str(root)]) == 0
    assert "No policy: the students of a baseline." in capsys.readouterr().out
