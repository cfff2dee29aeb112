"""Run-folder reading, plots and report.md, on a run folder written by hand."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from PIL import Image

from n2n.errors import N2NError
from n2n.report.plots import accuracy_vs_params_figure, compare_layers, make_plots, pareto_front
from n2n.report.rebuild import rebuild_report
from n2n.report.summary import load_run, read_metrics, write_report

TEACHER = {"params": 200_000, "flops": 18_000_000, "val_accuracy": 0.90, "test_accuracy": 0.885}
STUDENT = {"params": 25_000, "flops": 2_500_000, "val_accuracy": 0.87, "test_accuracy": 0.8612}
CONV4_ARCH = {"name": "conv4", "kwargs": {"in_channels": 1, "num_classes": 10}}
CONV4_META = {"in_channels": 1, "num_classes": 10, "image_size": 28}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def candidate(stage: str, epoch: int, rollout: int, params: int, accuracy: float, *, valid: bool = True) -> dict:
    compression = 1 - params / TEACHER["params"]
    reward = compression * (2 - compression) * accuracy / TEACHER["val_accuracy"] if valid else -1.0
    return {"stage": stage, "epoch": epoch, "rollout": rollout, "actions": [0, 1, 0], "reward": reward,
            "params": params if valid else 0, "flops": params * 90 if valid else 0,
            "val_accuracy": accuracy if valid else 0.0, "seconds": 0.5, "cached": False, "valid": valid,
            "reason": None if valid else "child fails on the example input", "kind": "candidate"}


def metrics_lines() -> list[dict]:
    """2 stages x 3 epochs x 3 rollouts, the removal stage's epoch 1 rollout 2 invalid."""
    lines: list[dict] = [{"kind": "teacher", **{k: TEACHER[k] for k in ("params", "flops", "val_accuracy")}}]
    for stage, base in (("removal", 120_000), ("shrinkage", 40_000)):
        best = None
        for epoch in range(3):
            rollouts = [candidate(stage, epoch, r, base - 8_000 * (epoch + r), 0.80 - 0.02 * r + 0.01 * epoch,
                                  valid=not (stage == "removal" and epoch == 1 and r == 2)) for r in range(3)]
            lines += rollouts
            scored = [c for c in rollouts if c["valid"]] + ([best] if best else [])
            best = max(scored, key=lambda c: c["reward"])
            rewards = [c["reward"] for c in rollouts]
            lines.append({"stage": stage, "epoch": epoch, "reward_mean": sum(rewards) / 3,
                          "reward_max": max(rewards), "baseline": 0.3, "entropy": 0.6, "policy_loss": -0.1,
                          "best_reward": best["reward"], "best_params": best["params"],
                          "best_val_accuracy": best["val_accuracy"], "seconds": 1.5, "kind": "epoch"})
    return lines


def summary_json() -> dict:
    stages = [{"name": "removal", "epochs": 3, "candidates": 8, "best_reward": 0.61, "best_params": 100_000,
               "best_val_accuracy": 0.81},
              {"name": "shrinkage", "epochs": 3, "candidates": 9, "best_reward": 0.77, "best_params": 25_000,
               "best_val_accuracy": 0.78}]
    config = {"stages": ["removal", "shrinkage"], "epochs_per_stage": 3, "rollouts": 3, "algorithm": "reinforce",
              "init": "inherit", "seed": 7, "max_params": 50_000, "max_flops": None, "min_accuracy": 0.5,
              "proxy": {"loss": "l2", "epochs": 1, "subset": 1000}}
    return {"teacher": TEACHER, "student": STUDENT, "compression": 8.0, "stages": stages, "config": config,
            "dataset": "fashion-mnist"}


def write_metrics(path: Path, lines: list[dict], tail: str = "") -> None:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + tail)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    root = tmp_path / "run"
    root.mkdir()
    write_metrics(root / "metrics.jsonl", metrics_lines())
    (root / "summary.json").write_text(json.dumps(summary_json()))
    (root / "config.yaml").write_text("teacher: teacher.pt\ndataset: fashion-mnist\n")
    return root


def save_student(root: Path) -> None:
    """A conv4 student with three layers removed and widths shrunk, stored as a run would store it."""
    from n2n.checkpoint import build_from_arch, example_input_for, save_checkpoint

    rewrites = [{"op": "remove", "remove": [False, False, True, True, True, False, False, False, False]},
                {"op": "shrink", "ratios": [0.5, 0.7, 0.5]}]
    arch = {**CONV4_ARCH, "rewrites": rewrites}
    model = build_from_arch(arch, example_input_for(CONV4_META))
    save_checkpoint(root / "student.pt", model, arch=arch, meta=CONV4_META)


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 10_000  # a drawn figure, not an empty canvas
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
        assert width > 400 and height > 300
        assert len(image.convert("L").getcolors(maxcolors=1 << 16)) > 10  # more than a blank background


# ---- the Pareto front --------------------------------------------------------------------------
def test_pareto_front_keeps_only_points_no_other_beats() -> None:
    points = [(100, 0.5), (50, 0.6), (200, 0.9), (150, 0.7), (120, 0.65), (60, 0.4), (300, 0.85)]
    assert pareto_front(points) == [(50, 0.6), (120, 0.65), (150, 0.7), (200, 0.9)]


def test_pareto_front_ties_and_edge_cases() -> None:
    assert pareto_front([]) == []
    assert pareto_front([(10, 0.3)]) == [(10, 0.3)]
    # same size: only the more accurate; same accuracy: only the smaller
    assert pareto_front([(10, 0.3), (10, 0.5), (20, 0.5), (20, 0.5)]) == [(10, 0.5)]
    # accuracy strictly rises along the front
    front = pareto_front([(p, (p * 37 % 11) / 11) for p in range(1, 60)])
    assert all(a[0] < b[0] and a[1] < b[1] for a, b in zip(front, front[1:]))


# ---- metrics.jsonl ---------------------------------------------------------------------------
def test_read_metrics_skips_a_torn_last_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lines = metrics_lines()
    path = tmp_path / "metrics.jsonl"
    write_metrics(path, lines, tail='{"stage": "shrinkage", "epoch": 3, "rol')
    with caplog.at_level(logging.WARNING, logger="n2n.report.summary"):
        records, dropped = read_metrics(path)
    assert records == lines
    assert dropped == [len(lines) + 1]
    assert f"line {len(lines) + 1}" in caplog.text and "cut short" in caplog.text


def test_read_metrics_skips_broken_or_mistyped_lines_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    good = candidate("removal", 0, 0, 9_000, 0.8)
    teacher = metrics_lines()[0]
    lines = [good, None, [1, 2], {**good, "params": "many"}, {**good, "epoch": True}, {"kind": "teacher"}, teacher]
    path.write_text("\n".join("" if line is None else json.dumps(line) for line in lines) + "\n")
    records, dropped = read_metrics(path)
    assert records == [good, teacher]
    assert dropped == [3, 4, 5, 6]


def test_missing_folder_or_metrics_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(N2NError, match="does not exist"):
        make_plots(tmp_path / "nowhere")
    with pytest.raises(N2NError, match="no metrics.jsonl"):
        write_report(tmp_path)
    with pytest.raises(N2NError, match="does not exist"):
        read_metrics(tmp_path / "metrics.jsonl")


# ---- plots -------------------------------------------------------------------------------------
def test_make_plots_writes_valid_pngs(run_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="n2n.report.plots"):
        paths = make_plots(run_dir)
    assert [p.name for p in paths] == ["stage_removal.png", "stage_shrinkage.png", "accuracy_vs_params.png"]
    assert all(p.parent == run_dir / "plots" for p in paths)
    for path in paths:
        assert_png(path)
    assert "no student.pt" in caplog.text  # the per-layer plot is skipped, not failed


def test_accuracy_plot_draws_the_runs_floor_and_parameter_limit(run_dir: Path) -> None:
    ax = accuracy_vs_params_figure(load_run(run_dir)).axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    floor, limit = lines["accuracy floor (50.0 %)"], lines["max params (50k)"]
    assert list(floor.get_ydata()) == [50.0, 50.0]  # min_accuracy 0.5, drawn in percent like the children
    assert list(limit.get_xdata()) == [50_000, 50_000]
    low, high = ax.get_ylim()
    assert low <= 50.0 <= high  # in view even below every child


def test_accuracy_plot_without_limits_draws_no_limit_line(run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["config"].update(min_accuracy=None, max_params=None)
    (run_dir / "summary.json").write_text(json.dumps(summary))
    labels = [line.get_label() for line in accuracy_vs_params_figure(load_run(run_dir)).axes[0].get_lines()]
    assert not [label for label in labels if "floor" in label or "max params" in label]


def test_layer_plot_from_student_checkpoint(run_dir: Path) -> None:
    save_student(run_dir)
    paths = make_plots(run_dir)
    assert paths[-1].name == "layers.png"
    assert_png(paths[-1])


def test_compare_layers_marks_removed_and_shrunk_layers() -> None:
    import torch

    from n2n.arch import NetworkView
    from n2n.checkpoint import build_from_arch
    from n2n.models import create_model

    example = torch.zeros(1, 1, 28, 28)
    teacher = create_model("conv4", in_channels=1, num_classes=10)
    student = build_from_arch({**CONV4_ARCH, "rewrites": [
        {"op": "remove", "remove": [False, False, True, True, True, False, False, False, False]},
        {"op": "shrink", "ratios": [0.5, 0.7, 0.5]}]}, example)
    layers = compare_layers(NetworkView.build(teacher, example).layers, NetworkView.build(student, example).layers)
    assert len(layers) == 9
    assert [layer.kept for layer in layers] == [True, True, False, False, False, True, True, True, True]
    assert layers[0].ratio == pytest.approx(0.5)           # first conv halved
    assert layers[-1].ratio == 1.0                         # the classifier keeps its classes
    assert all(layer.student_width is None for layer in layers[2:5])


# ---- report.md ------------------------------------------------------------------------------------
def test_report_shows_the_summary_numbers(run_dir: Path) -> None:
    make_plots(run_dir)
    text = write_report(run_dir).read_text()
    assert "| teacher | 200,000 | 18.00 M | 90.00 % | 88.50 % |" in text
    assert "| student | 25,000 | 2.50 M | 87.00 % | 86.12 % |" in text
    assert "**8.00x** fewer parameters" in text
    assert "| removal | 3 | 8 | 0 | 1 | 0.6100 | 100,000 | 81.00 % |" in text
    assert "| shrinkage | 3 | 9 | 0 | 0 | 0.7700 | 25,000 | 78.00 % |" in text
    assert "| seed | 7 |" in text and "max params 50000, min accuracy 0.5" in text
    for name in ("stage_removal.png", "stage_shrinkage.png", "accuracy_vs_params.png"):
        assert f"](plots/{name})" in text
    assert "layers.png" not in text  # not drawn, so not linked
    assert "did not finish" not in text


def test_report_lists_the_children_a_stage_rescored(run_dir: Path) -> None:
    assert "trained again from their start" not in write_report(run_dir).read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["config"]["rescore_epochs"] = 3
    summary["stages"][1]["rescored"] = [
        {"name": "shrinkage-e2-r0", "proxy_accuracy": 0.79, "rescored_accuracy": 0.8123},
        {"name": "shrinkage-e1-r2", "proxy_accuracy": 0.78, "rescored_accuracy": None}]
    (run_dir / "summary.json").write_text(json.dumps(summary))
    text = write_report(run_dir).read_text()
    assert "trained again from their start for 3 proxy epochs" in text
    assert "| shrinkage | shrinkage-e2-r0 | 79.00 % | 81.23 % |" in text
    assert "| shrinkage | shrinkage-e1-r2 | 78.00 % | – |" in text
    summary["config"]["rescore_subset"] = 15_000
    (run_dir / "summary.json").write_text(json.dumps(summary))
    assert "for 3 proxy epochs on 15,000 training images before" in write_report(run_dir).read_text()


def test_report_names_a_stage_that_samples_its_own_rollouts(run_dir: Path) -> None:
    assert "| rollouts per epoch | 3 |" in write_report(run_dir).read_text()
    summary = summary_json()
    summary["config"]["removal_policy"] = {"lr": 0.02, "rollouts": 20}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    assert "| rollouts per epoch | 3 (removal 20) |" in write_report(run_dir).read_text()


def test_report_names_the_channels_a_shrunk_layer_keeps(run_dir: Path) -> None:
    assert "channels kept when shrinking" not in write_report(run_dir).read_text()  # a run from before the setting
    summary = summary_json()
    summary["config"]["keep_channels"] = "contribution"
    (run_dir / "summary.json").write_text(json.dumps(summary))
    assert "| channels kept when shrinking | contribution |" in write_report(run_dir).read_text()


def test_rebuild_from_a_copied_metrics_file_alone(run_dir: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(run_dir / "metrics.jsonl", bare / "metrics.jsonl")
    with open(bare / "metrics.jsonl", "a") as stream:
        stream.write('{"stage": "shrinkage", "epo')  # the run crashed mid-line
    text = rebuild_report(bare).read_text()
    assert sorted(p.name for p in (bare / "plots").iterdir()) == [
        "accuracy_vs_params.png", "stage_removal.png", "stage_shrinkage.png"]
    assert "did not finish" in text and "test accuracy is unknown" in text
    lines = metrics_lines()
    assert f"line(s) {len(lines) + 1} could not be read" in text
    # teacher from the teacher line; test accuracy nowhere to be found
    assert "| teacher | 200,000 | 18.00 M | 90.00 % | unknown |" in text
    # the student row is the shrinkage stage's best candidate, as its last epoch line names it
    best = lines[-1]
    assert f"| best candidate (search) | {best['best_params']:,} |" in text
    assert f"{100 * best['best_val_accuracy']:.2f} % | unknown |" in text
    # per-stage rows counted from metrics.jsonl: 9 rollouts, 1 invalid in removal
    assert "| removal | 3 | 8 | 0 | 1 |" in text
    assert "| shrinkage | 3 | 9 | 0 | 0 |" in text


def test_without_teacher_size_compression_is_unknown(tmp_path: Path) -> None:
    write_metrics(tmp_path / "metrics.jsonl", [line for line in metrics_lines() if line["kind"] != "teacher"])
    paths = make_plots(tmp_path)
    assert len(paths) == 3
    text = write_report(tmp_path).read_text()
    assert "Compression: unknown" in text


def test_the_cli_report_of_a_run_with_mistyped_lines_skips_them_and_says_so(run_dir: Path, capsys) -> None:
    from n2n.cli import main

    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    broken = json.loads(lines[1])
    lines[1] = json.dumps({**broken, "params": "many", "val_accuracy": None})  # valid JSON, wrong types
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["--quiet", "report", str(run_dir)]) == 0
    assert "line(s) 2 could not be read" in (run_dir / "report.md").read_text()
    assert "Traceback" not in capsys.readouterr().err


def test_report_names_a_proxy_that_recalibrates_batchnorm(run_dir: Path) -> None:
    assert "| proxy distillation | l2 loss, 1 epoch(s), subset 1000 |" in write_report(run_dir).read_text()
    summary = summary_json()
    summary["config"]["proxy"] = {"loss": "kd", "epochs": 0, "subset": 15000, "calibrate": 512}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    assert ("| proxy distillation | kd loss, 0 epoch(s), subset 15000, BatchNorm recalibrated on 512 images |"
            in write_report(run_dir).read_text())
