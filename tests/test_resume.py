"""A compression run killed with SIGKILL at any moment continues with --resume to the same result."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def kill_after(paths: dict[str, Path], out: Path, candidates: int) -> list[dict]:
    """Start a run and SIGKILL it once `candidates` candidate lines are written; returns those lines."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(cli_command(compress_args(paths, out)), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if (out / "metrics.jsonl").is_file() and len(candidate_lines(out)) >= candidates:
            break
        time.sleep(0.005)
    assert process.poll() is None, "the run ended before it could be killed"
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
