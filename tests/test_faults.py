"""Faults that reach a run folder from outside: a second owner, damaged metrics lines, bad flags.

The faults that need a real run killed mid-way (a resume on a live run, two resumes at once,
a kill during a resume) are in test_resume.py, next to the run they share.
"""
from __future__ import annotations

import json
import os

import pytest

from n2n.cli import main
from n2n.errors import N2NError, RunInUseError
from n2n.files import atomic_save
from n2n.report.run_folder import DAMAGED_METRICS, LOCK_FILE, RunFolder
from n2n.run import resume_point


def test_a_run_folder_has_one_owner_until_it_is_given_back(tmp_path):
    with RunFolder(tmp_path).claim():
        with pytest.raises(RunInUseError, match=f"in use by process {os.getpid()} "):
            RunFolder(tmp_path).claim()
        with pytest.raises(RunInUseError):
            RunFolder.create(tmp_path, force=True)  # --force does not take a live run's folder
        with pytest.raises(RunInUseError):
            RunFolder.create(tmp_path)  # a live run is named as one, not as a leftover to resume
    with pytest.raises(N2NError, match="already holds a run: continue it with --resume"):
        RunFolder.create(tmp_path)
    assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
    with RunFolder(tmp_path).claim():  # given back on leaving the block
        pass


def candidate(stage: str, epoch: int, rollout: int) -> dict:
    return {"stage": stage, "epoch": epoch, "rollout": rollout, "actions": [1, 0], "reward": 0.5, "params": 10,
            "flops": 20, "val_accuracy": 0.9, "seconds": 1.5, "cached": False, "valid": True, "reason": None,
            "kind": "candidate"}


def epoch_line(stage: str, epoch: int) -> dict:
    return {"stage": stage, "epoch": epoch, "reward_mean": 0.5, "reward_max": 0.5, "baseline": 0.0, "entropy": 1.0,
            "policy_loss": 0.0, "best_reward": 0.5, "best_params": 10, "best_val_accuracy": 0.9, "seconds": 2.0,
            "kind": "epoch"}


def killed_run(folder, lines: list[str]) -> None:
    """A run killed in its second removal epoch: the snapshot after epoch 0 counted 4 records."""
    folder.mkdir(exist_ok=True)
    (folder / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    atomic_save({"stages": [{"name": "removal", "next_epoch": 1}], "records": 4}, folder / "state" / "search.pt")


def test_resume_cuts_at_the_snapshot_by_record_not_by_line_count(tmp_path):
    teacher = json.dumps({"params": 100, "flops": 200, "val_accuracy": 0.95, "kind": "teacher"})
    history = [teacher, json.dumps(candidate("removal", 0, 0)), json.dumps(candidate("removal", 0, 1)),
               json.dumps(epoch_line("removal", 0))]
    after = [json.dumps(candidate("removal", 1, 0)), json.dumps(candidate("removal", 1, 1))]
    damaged = '{"stage": "removal", "epoch": 0, "rollout": 1, "act'
    wrong_type = json.dumps(candidate("removal", 0, 1) | {"val_accuracy": "high"})
    killed_run(tmp_path, [history[0], history[1], damaged, wrong_type, history[3], *after, after[0]])
    point = resume_point(RunFolder(tmp_path))
    # the damaged and ill-typed lines stood where epoch 0's second child was: the cut still falls
    # after epoch 0, so both children of epoch 1 are replayed, none counted as history
    assert sorted(point.replay) == ["removal-e1-r0", "removal-e1-r1"]
    assert [(r.kind, getattr(r, "epoch", None)) for r in point.history] == [("teacher", None), ("candidate", 0),
                                                                              ("epoch", 0)]
    assert ("candidate", "removal", 1, 1) in point.written
    # nothing unreplayed is cut from the file; what it lost is kept beside it, repeat included
    assert (tmp_path / "metrics.jsonl").read_text().splitlines() == [history[0], history[1], history[3], *after]
    assert (tmp_path / DAMAGED_METRICS).read_text().splitlines() == [damaged, wrong_type, after[0]]


def test_a_clean_metrics_file_is_not_rewritten_by_a_resume(tmp_path):
    lines = [json.dumps(candidate("removal", 0, 0)), json.dumps(candidate("removal", 1, 0))]
    killed_run(tmp_path, lines)
    before = os.stat(tmp_path / "metrics.jsonl")
    point = resume_point(RunFolder(tmp_path))
    assert list(point.replay) == ["removal-e1-r0"]
    assert os.stat(tmp_path / "metrics.jsonl").st_ino == before.st_ino  # the same file, never replaced
    assert not (tmp_path / DAMAGED_METRICS).exists()


@pytest.mark.parametrize("argv", [
    ["compress", "--algorithm", "ppo"],
    ["compress", "--rollouts", "many"],
    ["compress", "--no-such-flag"],
    ["export", "student.pt"],
    ["no-such-command"],
    [],
])
def test_argparse_errors_are_one_line_and_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("n2n: error: "), lines
    assert "usage" not in captured.err and captured.out == ""


def test_help_still_shows_the_usage(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["compress", "--help"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith("usage: n2n compress")


@pytest.mark.parametrize("status, recorded", [("", "abc123"), (" M src/n2n/run.py", "abc123+modified")])
def test_the_recorded_commit_says_when_the_code_differs_from_it(monkeypatch, status, recorded):
    import subprocess

    import n2n.run as run

    def git(argv, **kwargs):
        out = "abc123\n" if argv[1] == "rev-parse" else status
        return subprocess.CompletedProcess(argv, 0, stdout=out, stderr="")

    monkeypatch.setattr(run.subprocess, "run", git)
    assert run.git_revision.__wrapped__() == recorded
    assert run.git_revision() != recorded  # read once, when the module loaded: the checkout since does not count
