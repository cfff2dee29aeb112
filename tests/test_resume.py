"""A compression run killed with SIGKILL at any moment continues with --resume to the same result."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
import torch
import yaml

from fakedata import write_learnable_mnist
import n2n.run
from n2n.cli import main

BUDGET = {
    "epochs_per_stage": 3,
    "rollouts": 3,
    "proxy": {"epochs": 1, "subset": 96, "batch_size": 32},
    "final": {"epochs": 1, "subset": None},
}
CANDIDATES = 2 * 3 * 3


@pytest.fixture(scope="module")
def setting(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("resume")
    paths = {"mnist": root / "mnist", "teacher": root / "teacher.pt", "config": root / "budget.yaml"}
    write_learnable_mnist(paths["mnist"])
    assert main(["--quiet", "train-teacher", "--model", "conv4", "--dataset", "mnist", "--data-dir",
                 str(paths["mnist"]), "--epochs", "2", "--batch-size", "32", "--out", str(paths["teacher"])]) == 0
    paths["config"].write_text(yaml.safe_dump(BUDGET))
    paths["reference"] = root / "reference"
    assert run_cli(compress_args(paths, paths["reference"])).returncode == 0
    return paths


def compress_args(paths: dict[str, Path], out: Path) -> list[str]:
    return ["compress", "--quiet", "--teacher", str(paths["teacher"]), "--data-dir", str(paths["mnist"]),
            "--config", str(paths["config"]), "--out", str(out)]


def cli_command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "n2n", *args]


def run_cli(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same arithmetic in every process
    return subprocess.run(cli_command(args), capture_output=True, text=True, timeout=600, env=env)


def candidate_lines(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return [r for r in records if r["kind"] == "candidate"]


def start_cli(args: list[str], **streams) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cli_command(args), env=env, **({"stdout": subprocess.DEVNULL,
                                                            "stderr": subprocess.DEVNULL} | streams))


def wait_until(process: subprocess.Popen, condition: Callable[[], bool]) -> None:
    """Poll `condition` while `process` runs; fails if it ends first."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None and not condition():
        time.sleep(0.005)
    assert process.poll() is None, "the run ended before the moment the test waits for"


def has_candidates(out: Path, candidates: int) -> Callable[[], bool]:
    return lambda: (out / "metrics.jsonl").is_file() and len(candidate_lines(out)) >= candidates


def kill_after(paths: dict[str, Path], out: Path, candidates: int) -> list[dict]:
    """Start a run and SIGKILL it once `candidates` candidate lines are written; returns those lines."""
    process = start_cli(compress_args(paths, out))
    wait_until(process, has_candidates(out, candidates))
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "summary.json").exists()
    return candidate_lines(out)


PLACEMENT = {"executor", "workers", "ray_address"}  # where children trained: no part of the result


def comparable(summary: dict) -> dict:
    config = {key: value for key, value in summary["config"].items() if key not in PLACEMENT}
    return {key: value for key, value in summary.items() if key != "search_seconds"} | {"config": config}


def assert_same_result(run: Path, reference: Path) -> None:
    summary = json.loads((run / "summary.json").read_text())
    expected = json.loads((reference / "summary.json").read_text())
    assert comparable(summary) == comparable(expected)
    student = torch.load(run / "student.pt", weights_only=True)["state_dict"]
    reference_student = torch.load(reference / "student.pt", weights_only=True)["state_dict"]
    assert student.keys() == reference_student.keys()
    assert all(torch.equal(student[k], reference_student[k]) for k in student)


def trained(lines: list[dict]) -> list[dict]:
    return [line for line in lines if line["valid"] and not line["cached"]]


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", [1, 5, 11])
def test_killed_run_resumes_to_the_same_result_without_rescoring(setting, tmp_path, kill_at):
    out = tmp_path / "run"
    before_kill = kill_after(setting, out, kill_at)
    result = run_cli(["compress", "--quiet", "--resume", str(out)])
    assert result.returncode == 0, result.stderr
    assert_same_result(out, setting["reference"])
    after = {(r["stage"], r["epoch"], r["rollout"]): r for r in candidate_lines(out)}
    assert len(after) == CANDIDATES
    # a candidate trained before the kill keeps its recorded training time: it was not trained again
    for line in trained(before_kill):
        assert after[(line["stage"], line["epoch"], line["rollout"])]["seconds"] == line["seconds"]


@pytest.mark.slow
def test_resume_after_a_torn_metrics_line_says_what_it_dropped(setting, tmp_path):
    out = tmp_path / "run"
    kill_after(setting, out, 7)
    metrics = out / "metrics.jsonl"
    text = metrics.read_text()
    metrics.write_text(text + '{"stage": "shrinkage", "epoch": 0, "roll')  # a write cut short by the crash
    torn_line = len(text.splitlines()) + 1
    result = run_cli(["compress", "--resume", str(out)])
    assert result.returncode == 0, result.stderr
    assert f"damaged or repeated line(s) {torn_line} of" in result.stderr
    assert_same_result(out, setting["reference"])


def test_resume_refuses_a_folder_without_a_run_and_a_finished_run(setting, tmp_path, capsys):
    assert main(["compress", "--resume", str(tmp_path)]) == 2
    assert "no run to resume" in capsys.readouterr().err
    assert main(["compress", "--resume", str(setting["reference"])]) == 2
    assert "finished already" in capsys.readouterr().err


@pytest.mark.slow
def test_a_resumed_run_may_train_its_children_elsewhere(setting, tmp_path):
    out = tmp_path / "run"
    kill_after(setting, out, 5)
    started_with = (out / "config.yaml").read_text()
    result = run_cli(["compress", "--resume", str(out), "--executor", "process", "--workers", "2"])
    assert result.returncode == 0, result.stderr
    assert "children train on the process executor" in result.stderr
    assert_same_result(out, setting["reference"])
    assert (out / "config.yaml").read_text() == started_with  # what the run started with stays on record
    config = json.loads((out / "summary.json").read_text())["config"]
    assert (config["executor"], config["workers"]) == ("process", 2)  # what it finished with, in the summary


@pytest.mark.parametrize("saved, resumed_with", [("contribution", "contribution"), ("l1", "l1"), (None, "l1")])
def test_a_resumed_run_keeps_the_channels_it_began_keeping(setting, tmp_path, monkeypatch, saved, resumed_with):
    settings = yaml.safe_load((setting["reference"] / "config.yaml").read_text())
    settings["search"].pop("keep_channels", None)  # None: a run begun before the setting existed kept L1 filters
    if saved is not None:
        settings["search"]["keep_channels"] = saved
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(settings))
    resumed = []
    monkeypatch.setattr(n2n.run, "execute", lambda folder, teacher, data, config, *rest, **options: resumed.append(config))
    n2n.run.resume_run(tmp_path, progress=False)
    assert [config.keep_channels for config in resumed] == [resumed_with]


def test_resume_refuses_options_that_would_change_the_search(setting, capsys):
    finished = setting["reference"] / "summary.json"
    before = finished.read_bytes()
    assert main(["compress", "--resume", str(setting["reference"]), "--epochs-per-stage", "5",
                 "--teacher", str(setting["teacher"])]) == 2
    err = capsys.readouterr().err
    assert "--epochs-per-stage, --teacher cannot change" in err and "only --executor" in err
    assert len(err.strip().splitlines()) == 1
    assert finished.read_bytes() == before


# ---- faults around a resume: a second owner, a kill at its start, a damaged line -------------
# The CLI in a subprocess that writes the name of every child it trains to the file argv[1].
WATCHED_CLI = """
import sys
import n2n.search.executors.inline as inline
from n2n.cli import main

train = inline.run_job
def watched(job, *args, **kwargs):
    with open(sys.argv[1], "a") as names:
        names.write(job.name + "\\n")
    return train(job, *args, **kwargs)
inline.run_job = watched
sys.exit(main(sys.argv[2:]))
"""


def resume_watched(out: Path, names: Path) -> set[str]:
    """Resume `out` to its end; the names of the children it trained."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", WATCHED_CLI, str(names), "compress", "--resume", str(out)],
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr
    return set(names.read_text().split()) if names.is_file() else set()


def names_of(lines: list[dict]) -> set[str]:
    return {f"{line['stage']}-e{line['epoch']}-r{line['rollout']}" for line in lines}


def metric_records(run: Path) -> list[dict]:
    """Every record of a run's metrics, less the time it took (no two runs take the same)."""
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(run: Path, reference: Path) -> None:
    """The same result as the reference run, and the same metrics: every record in it once."""
    assert metric_records(run) == metric_records(reference)
    assert_same_result(run, reference)


def assert_refused_by(args: list[str], holder: int) -> None:
    refused = run_cli(args)
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("n2n: error: ") and f"process {holder} " in lines[0], lines


def refused_while_stopped(process: subprocess.Popen, attempts: list[list[str]]) -> None:
    """Each of `attempts` refused while `process` owns the run; stopped meanwhile, so it cannot
    finish first; then let it go on to its end."""
    process.send_signal(signal.SIGSTOP)
    try:
        for args in attempts:
            assert_refused_by(args, process.pid)
    finally:
        process.send_signal(signal.SIGCONT)
    assert process.wait(timeout=600) == 0


@pytest.mark.slow
def test_a_run_that_is_still_going_is_neither_resumed_nor_overwritten(setting, tmp_path):
    out = tmp_path / "run"
    live = start_cli(compress_args(setting, out))
    wait_until(live, has_candidates(out, 2))
    refused_while_stopped(live, [["compress", "--quiet", "--resume", str(out)],
                                 compress_args(setting, out) + ["--force"]])
    assert_same_run(out, setting["reference"])


@pytest.mark.slow
def test_two_resumes_at_once_the_second_is_refused(setting, tmp_path):
    out = tmp_path / "run"
    kill_after(setting, out, 5)
    first = start_cli(["compress", "--quiet", "--resume", str(out)])
    wait_until(first, lambda: (out / "run.lock").read_text().strip() == str(first.pid))
    refused_while_stopped(first, [["compress", "--quiet", "--resume", str(out)]])
    assert_same_run(out, setting["reference"])


@pytest.mark.slow
def test_a_resume_killed_at_its_start_loses_no_scored_child(setting, tmp_path):
    out = tmp_path / "run"
    before_kill = kill_after(setting, out, 5)
    resume = start_cli(["compress", "--resume", str(out)], stderr=subprocess.PIPE, text=True)
    # killed once it has read what the run left and is about to replay it
    while "children train on" not in resume.stderr.readline():
        assert resume.poll() is None, "the resume ended before it could be killed"
    resume.send_signal(signal.SIGKILL)
    resume.wait()
    assert all(line in candidate_lines(out) for line in before_kill)
    retrained = resume_watched(out, tmp_path / "trained.txt")
    assert not retrained & names_of(trained(before_kill))
    assert_same_run(out, setting["reference"])


@pytest.mark.slow
def test_a_damaged_line_before_the_snapshot_makes_no_child_train_twice(setting, tmp_path):
    out = tmp_path / "run"
    before_kill = kill_after(setting, out, 5)
    metrics = out / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    assert json.loads(lines[1])["kind"] == "candidate" and json.loads(lines[1])["epoch"] == 0
    damaged = lines[1][:40] + "\x00garbage"
    metrics.write_text("\n".join([lines[0], damaged, *lines[2:]]) + "\n")
    retrained = resume_watched(out, tmp_path / "trained.txt")
    assert not retrained & names_of(trained(before_kill))
    assert (out / "metrics.damaged.jsonl").read_text() == damaged + "\n"
    reference = metric_records(setting["reference"])
    assert metric_records(out) == reference[:1] + reference[2:]  # the damaged record alone is missing
    student = torch.load(out / "student.pt", weights_only=True)["state_dict"]
    expected = torch.load(setting["reference"] / "student.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(student[k], expected[k]) for k in expected)


@pytest.fixture(scope="module")
def budget_mode(setting, tmp_path_factory) -> dict[str, Path]:
    """The same teacher and data, searched in budget mode (a third of the teacher's parameters)."""
    root = tmp_path_factory.mktemp("resume-budget-mode")
    paths = {**setting, "config": root / "budget-mode.yaml", "reference": root / "reference"}
    paths["config"].write_text(yaml.safe_dump({**BUDGET, "compression": 3}))
    assert run_cli(compress_args(paths, paths["reference"])).returncode == 0
    return paths


@pytest.mark.slow
def test_a_killed_budget_mode_run_resumes_to_the_same_result(budget_mode, tmp_path):
    out = tmp_path / "run"
    kill_after(budget_mode, out, 11)  # in the shrinking stage, whose parent a resume rebuilds
    result = run_cli(["compress", "--quiet", "--resume", str(out)])
    assert result.returncode == 0, result.stderr
    assert_same_result(out, budget_mode["reference"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["student"]["params"] <= summary["teacher"]["params"] // 3
