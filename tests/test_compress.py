"""`n2n.compress` from Python and `n2n compress` from the command line, on tiny teachers and fake data."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn
from torch.utils.data import IterableDataset, TensorDataset

from fakedata import write_cifar10
from n2n import compress, evaluate_checkpoint, load_checkpoint
from n2n.arch import count_params, rebuild
from clihelpers import compress_args, make_compress_workspace, run_error
from n2n.cli import main
from n2n.config import SearchConfig, from_dict, to_dict
from n2n.distill.trainer import DistillConfig
from n2n.errors import ConfigError, N2NError
from n2n.models import create_model
from n2n.policies import RemovalPolicy, ShrinkPolicy, load_policy
from n2n.training import accuracy

IMAGE = 12
FAST = {
    "epochs_per_stage": 2,
    "rollouts": 2,
    "proxy": {"epochs": 1, "subset": 64, "batch_size": 32},
    "final": {"epochs": 1, "subset": None},
}
ROW_KEYS = {"params", "flops", "val_accuracy", "test_accuracy"}
STAGE_KEYS = {"name", "epochs", "candidates", "best_reward", "best_params", "best_val_accuracy", "rescored"}
SUMMARY_KEYS = {"teacher", "student", "compression", "stages", "config", "search_seconds"}

Pair = tuple[torch.Tensor, torch.Tensor]


pytestmark = pytest.mark.usefixtures("one_thread")


def small_teacher() -> nn.Module:
    torch.manual_seed(0)
    return create_model("conv4", in_channels=1, num_classes=10, width_mult=0.5).eval()


def labelled_by(teacher: nn.Module, sizes: tuple[int, ...] = (128, 64, 32)) -> list[Pair]:
    """Random images labelled by the teacher itself (its accuracy is 1): train, val, test."""
    images = torch.randn(sum(sizes), 1, IMAGE, IMAGE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        labels = teacher.eval()(images).argmax(dim=1)
    bounds = np.cumsum((0, *sizes))
    return [(images[a:b], labels[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def quiet_compress(teacher: nn.Module, train, val, **options):
    return compress(teacher, train, val, progress=False, **{**FAST, **options})


def check_summary(summary: dict, teacher: nn.Module, student: nn.Module, test: Pair) -> None:
    assert set(summary) == SUMMARY_KEYS
    assert set(summary["teacher"]) == ROW_KEYS and set(summary["student"]) == ROW_KEYS
    assert summary["teacher"]["params"] == count_params(teacher)
    assert summary["student"]["params"] == count_params(student) < count_params(teacher)
    assert summary["student"]["flops"] < summary["teacher"]["flops"]
    assert summary["compression"] == pytest.approx(summary["teacher"]["params"] / summary["student"]["params"])
    assert summary["teacher"]["test_accuracy"] == 1.0
    assert summary["student"]["test_accuracy"] == pytest.approx(accuracy(student, *test))
    assert [stage["name"] for stage in summary["stages"]] == ["removal", "shrinkage"]
    for stage in summary["stages"]:
        assert set(stage) == STAGE_KEYS and stage["epochs"] == 2 and stage["rescored"] is None
        assert 1 <= stage["candidates"] <= 4 and -1 <= stage["best_reward"] <= 1
    assert summary["config"] == to_dict(from_dict(SearchConfig, FAST))


# ---- the Python API ----------------------------------------------------------------------------
def test_compress_tensor_pairs_gives_a_smaller_working_student():
    teacher = small_teacher()
    train, val, test = labelled_by(teacher)
    result = quiet_compress(teacher, train, val, test_data=test)
    logits = result.student(test[0])
    assert logits.shape == (32, 10) and torch.isfinite(logits).all()
    assert not result.student.training
    check_summary(result.summary, teacher, result.student, test)
    # the rewrites rebuild the student's architecture from the teacher's
    rebuilt = rebuild(small_teacher(), train[0][:1], result.rewrites)
    rebuilt.load_state_dict(result.student.state_dict(), strict=True)
    torch.testing.assert_close(rebuilt.eval()(test[0]), logits)


def test_compress_takes_a_dataset_like_the_same_tensors():
    teacher = small_teacher()
    train, val, test = labelled_by(teacher)
    from_tensors = quiet_compress(teacher, train, val, test_data=test)
    result = quiet_compress(teacher, TensorDataset(*train), TensorDataset(*val), test_data=TensorDataset(*test))
    check_summary(result.summary, teacher, result.student, test)
    assert [r.actions for r in result.history if r.kind == "candidate"] == \
        [r.actions for r in from_tensors.history if r.kind == "candidate"]
    assert result.summary["student"] == from_tensors.summary["student"]


@pytest.mark.parametrize("bad, what", [
    ((torch.zeros(10, 1, IMAGE, IMAGE), torch.zeros(9, dtype=torch.long)), "10 inputs but 9 labels"),
    ((torch.zeros(0, 1, IMAGE, IMAGE), torch.zeros(0, dtype=torch.long)), "0 inputs"),
    ([1, 2, 3], "Dataset"),
    ("mnist", "Dataset"),
    ((np.zeros((10, 1, IMAGE, IMAGE)), np.zeros(10)), "Dataset"),
    ((torch.zeros(10, 1, IMAGE, IMAGE), torch.zeros(10), torch.zeros(10)), "Dataset"),
])
@pytest.mark.parametrize("where", ["train_data", "val_data"])
def test_bad_data_is_a_config_error_naming_the_argument(bad, what, where):
    teacher = small_teacher()
    train, val, _ = labelled_by(teacher)
    data = {"train_data": train, "val_data": val, where: bad}
    with pytest.raises(ConfigError, match=where) as error:
        compress(teacher, data["train_data"], data["val_data"], progress=False, **FAST)
    assert what in str(error.value)


@pytest.mark.parametrize("options, name", [
    ({"epoch_per_stage": 3}, "epoch_per_stage"),
    ({"proxy": {"epoch": 1}}, "epoch"),
    ({"temperature": 4.0}, "temperature"),
])
def test_an_unknown_option_is_a_config_error_naming_it(options, name):
    teacher = small_teacher()
    train, val, _ = labelled_by(teacher)
    with pytest.raises(ConfigError, match=rf"\b{name}\b"):
        compress(teacher, train, val, progress=False, **options)


class Pairs(IterableDataset):
    def __init__(self, pair: Pair) -> None:
        self.pair = pair

    def __iter__(self):
        return iter(zip(*self.pair))


def inputs_only(train: Pair, val: Pair) -> tuple:
    return TensorDataset(train[0]), val


def iterable(train: Pair, val: Pair) -> tuple:
    return Pairs(train), val


def three_channels(train: Pair, val: Pair) -> tuple:
    return (train[0].repeat(1, 3, 1, 1), train[1]), (val[0].repeat(1, 3, 1, 1), val[1])


def wrong_labels(train: Pair, val: Pair) -> tuple:
    return train, (val[0], (val[1] + 1) % 10)  # the teacher is 0 % accurate on these


@pytest.mark.parametrize("make_data", [
    inputs_only,
    iterable,
    three_channels,
    wrong_labels,
])
def test_data_the_search_cannot_use_is_a_clear_error(make_data):
    teacher = small_teacher()
    train, val = make_data(*labelled_by(teacher)[:2])
    with pytest.raises(N2NError):
        compress(teacher, train, val, progress=False, **FAST)


def test_an_option_of_the_wrong_type_is_a_config_error():
    teacher = small_teacher()
    train, val, _ = labelled_by(teacher)
    with pytest.raises(ConfigError, match="epochs"):
        compress(teacher, train, val, progress=False, epochs_per_stage="two")


def test_a_distill_config_object_is_accepted_as_an_option():
    teacher = small_teacher()
    train, val, _ = labelled_by(teacher)
    result = compress(teacher, train, val, progress=False, epochs_per_stage=1, rollouts=2,
                      proxy=DistillConfig(epochs=1, subset=32, batch_size=32), final=DistillConfig(epochs=1))
    assert result.summary["config"]["proxy"]["subset"] == 32


# ---- the command line --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, Path]:
    return make_compress_workspace(tmp_path_factory.mktemp("compress"), FAST)


def metric_lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_cli_compress_writes_a_complete_run_folder(workspace):
    run = workspace["run"]
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary) == SUMMARY_KEYS | {"dataset"} and summary["dataset"] == "mnist"
    assert set(summary["teacher"]) == ROW_KEYS and set(summary["student"]) == ROW_KEYS
    assert summary["student"]["params"] < summary["teacher"]["params"]
    assert summary["compression"] == pytest.approx(summary["teacher"]["params"] / summary["student"]["params"])
    assert [set(stage) for stage in summary["stages"]] == [STAGE_KEYS, STAGE_KEYS]
    assert summary["config"]["proxy"]["subset"] == 64 and summary["config"]["epochs_per_stage"] == 2

    for number, stage in enumerate(summary["stages"], start=1):  # the best child of each stage
        best = load_checkpoint(run / f"stage{number}-{stage['name']}.pt")
        assert count_params(best.model) == stage["best_params"]
        assert best.meta["val_accuracy"] == stage["best_val_accuracy"]
    assert isinstance(load_policy(run / "policies" / "removal.pt", kind="removal"), RemovalPolicy)
    assert isinstance(load_policy(run / "policies" / "shrink.pt", kind="shrink"), ShrinkPolicy)

    lines = metric_lines(run)
    kinds = [line["kind"] for line in lines]
    assert kinds.count("candidate") == 2 * 2 * 2 and kinds.count("epoch") == 2 * 2
    assert lines[0]["kind"] == "teacher" and lines[0]["params"] == summary["teacher"]["params"]
    assert {"stage", "epoch", "rollout", "actions", "reward", "params", "val_accuracy"} <= set(lines[1])

    recorded = yaml.safe_load((run / "config.yaml").read_text())
    assert recorded["teacher"] == str(workspace["teacher"].resolve()) and recorded["dataset"] == "mnist"
    assert recorded["search"] == summary["config"]
    assert "torch" in recorded["versions"]


def test_the_student_checkpoint_evaluates_as_the_summary_says(workspace, capsys):
    run = workspace["run"]
    summary = json.loads((run / "summary.json").read_text())
    student = load_checkpoint(run / "student.pt")
    assert count_params(student.model) == summary["student"]["params"]
    capsys.readouterr()
    assert main(["evaluate", "--model", str(run / "student.pt"), "--data-dir", str(workspace["mnist"]),
                 "--no-latency"]) == 0
    row_text = capsys.readouterr().out.strip().splitlines()[1]
    assert f"{summary['student']['test_accuracy']:.2%}" in row_text
    assert f"{summary['student']['params']:,}" in row_text
    row = evaluate_checkpoint(run / "student.pt", data_dir=workspace["mnist"])
    assert row["test_accuracy"] == pytest.approx(summary["student"]["test_accuracy"])


def test_an_existing_run_folder_is_refused_then_overwritten_with_force(workspace, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(workspace["run"], run)
    before = {path: path.read_bytes() for path in run.rglob("*") if path.is_file()}
    err = run_error(compress_args(workspace, run), capsys)
    assert "--force" in err
    assert {path: path.read_bytes() for path in run.rglob("*") if path.is_file()} == before

    assert main(compress_args(workspace, run, "--force", "--seed", "1")) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["config"]["seed"] == 1
    assert (run / "summary.json").read_bytes() != before[run / "summary.json"]
    assert len(metric_lines(run)) == 1 + 2 * 2 * 2 + 2 * 2  # the old run's lines are gone


def test_a_teacher_for_other_channels_is_refused(workspace, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("N2N_DATA_DIR", str(tmp_path / "cache"))
    cifar = tmp_path / "cifar"
    write_cifar10(cifar)
    out = tmp_path / "run"
    err = run_error(["compress", "--teacher", str(workspace["teacher"]), "--dataset", "cifar10",
                     "--data-dir", str(cifar), "--out", str(out)], capsys)
    assert "1-channel" in err and "3 channels" in err
    assert not out.exists()


@pytest.mark.parametrize("flags, words", [
    (["--min-accuracy", "90"], ["min-accuracy", "fraction"]),
    (["--stages", "removal,pruning"], ["pruning", "shrinkage"]),
    (["--algorithm", "ppo"], None),
])
def test_bad_search_options_exit_2_before_anything_is_written(workspace, tmp_path, capsys, flags, words):
    out = tmp_path / "run"
    argv = compress_args(workspace, out, *flags)
    if words is None:  # refused by argparse itself
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2
    else:
        err = run_error(argv, capsys)
        assert all(word in err for word in words)
    assert not out.exists()


def test_tensorboard_scalars_are_written_per_stage(workspace, tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    run = tmp_path / "run"
    assert main(compress_args(workspace, run, "--tensorboard")) == 0
    events = event_accumulator.EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"removal/reward/mean", "shrinkage/reward/mean", "shrinkage/policy/entropy",
            "removal/candidate/val_accuracy"} <= tags
    epochs = [line for line in metric_lines(run) if line["kind"] == "epoch" and line["stage"] == "removal"]
    logged = events.Scalars("removal/reward/mean")
    assert [e.step for e in logged] == [line["epoch"] for line in epochs]
    assert [e.value for e in logged] == pytest.approx([line["reward_mean"] for line in epochs])


def test_tensorboard_without_the_package_is_one_clear_line(workspace, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    err = run_error(compress_args(workspace, tmp_path / "run", "--tensorboard"), capsys)
    assert "pip install 'n2n[tensorboard]'" in err
    assert not (tmp_path / "run").exists()  # refused before anything was made


def test_cli_compression_gives_a_student_within_the_budget_and_prune_meets_the_same(workspace, tmp_path, capsys):
    for method in ("n2n", "prune"):
        run = tmp_path / method
        assert main(compress_args(workspace, run, "--compression", "3", "--method", method)) == 0
        summary = json.loads((run / "summary.json").read_text())
        limit = summary["teacher"]["params"] // 3
        assert summary["student"]["params"] == count_params(load_checkpoint(run / "student.pt").model) <= limit
        assert summary["config"]["compression"] == 3.0
        if method == "n2n":  # every scored child was fitted to the budget and rewarded by its accuracy
            scored = [line for line in metric_lines(run) if line["kind"] == "candidate" and line["valid"]]
            teacher_acc = metric_lines(run)[0]["val_accuracy"]
            assert scored and all(line["params"] <= limit for line in scored)
            assert all(line["reward"] == pytest.approx(line["val_accuracy"] / teacher_acc) for line in scored)
