"""Export to ONNX and TorchScript (n2n.export) and the checkpoint comparison table (n2n.compare)."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import warnings
from pathlib import Path

import pytest
import torch

from fakedata import write_cifar10, write_mnist
from n2n.arch import NetworkView, count_flops, remove_layers, shrink_layers
from n2n.checkpoint import load_checkpoint, save_checkpoint
from n2n.compare import compare_checkpoints, cpu_latency_ms, format_table
from n2n.errors import CheckpointError, ConfigError, N2NError
from n2n.export import ExportReport, default_export_path, export_checkpoint, sample_batch
from n2n.models import create_model
from n2n.models import count_parameters

ZOO_KWARGS = {"in_channels": 1, "num_classes": 10, "width_mult": 0.25}
META = {"dataset": "mnist", "in_channels": 1, "num_classes": 10, "image_size": 28,
        "mean": [0.1307], "std": [0.3081]}
TOLERANCE = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")


def randomise_batchnorm(model: torch.nn.Module, seed: int) -> None:
    """Trained-looking normalisation statistics, so the eval-mode graph is not an identity."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)


def write_teacher_and_student(folder: Path) -> tuple[Path, Path]:
    """A conv4 teacher and a student made from it as a search would: layers removed, then widths shrunk."""
    torch.manual_seed(0)
    teacher = create_model("conv4", **ZOO_KWARGS)
    randomise_batchnorm(teacher, 1)
    example = torch.zeros(1, 1, 28, 28)
    view = NetworkView.build(teacher, example)
    # Dropping the last max-pool leaves 14x14 maps for a 4x4 adaptive pool: a size the
    # older ONNX exporter cannot express, as in real students.
    remove = [layer.name in ("features.3", "features.13") for layer in view.layers]
    removed = remove_layers(teacher, view, remove, example)
    assert removed.child is not None, removed.reason
    child_view = NetworkView.build(removed.child, example)
    shrunk = shrink_layers(removed.child, child_view, [0.5] * len(child_view.groups), example, min_width=2)
    assert shrunk.child is not None, shrunk.reason
    teacher_path, student_path = folder / "teacher.pt", folder / "student.pt"
    arch = {"name": "conv4", "kwargs": ZOO_KWARGS}
    save_checkpoint(teacher_path, teacher, arch={**arch, "rewrites": []}, meta=META)
    save_checkpoint(student_path, shrunk.child, arch={**arch, "rewrites": [removed.step, shrunk.step]}, meta=META)
    return teacher_path, student_path


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory) -> tuple[Path, Path]:
    return write_teacher_and_student(tmp_path_factory.mktemp("models"))


@pytest.fixture
def student(saved_models, tmp_path) -> Path:
    """A private copy of the student checkpoint: exports land next to it."""
    return Path(shutil.copy(saved_models[1], tmp_path / "student.pt"))


@pytest.fixture
def onnx_runtime():
    """onnxruntime (with onnx and onnxscript). Missing: a failure under CI=true, a skip elsewhere."""
    try:
        for package in ("onnx", "onnxscript"):
            importlib.import_module(package)
        return importlib.import_module("onnxruntime")
    except ImportError as error:
        message = f"the onnx extra is not installed ({error})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def pytorch_logits(path: Path, images: torch.Tensor) -> torch.Tensor:
    model = load_checkpoint(path).model  # outside inference mode: rebuilding a shrunk model traces with autograd
    with torch.inference_mode():
        return model(images)


def onnx_logits(runtime, path: Path, images: torch.Tensor) -> torch.Tensor:
    session = runtime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: images.numpy()})
    return torch.from_numpy(logits)


def torchscript_logits(path: Path, images: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated in recent torch
        model = torch.jit.load(str(path))
    with torch.inference_mode():
        return model(images)


# ---------------------------------------------------------------- export


def test_student_is_a_rewritten_model(student):
    ckpt = load_checkpoint(student)
    assert isinstance(ckpt.model, torch.fx.GraphModule)
    assert len(ckpt.arch["rewrites"]) == 2


def test_onnx_export_matches_pytorch_with_a_dynamic_batch(student, onnx_runtime):
    onnx = importlib.import_module("onnx")
    report = export_checkpoint(student, "onnx", batch=5, seed=3)

    assert report == ExportReport(out_path=student.with_name("student.onnx"), fmt="onnx",
                                  max_abs_diff=report.max_abs_diff, batch=5)
    assert report.out_path.is_file()
    onnx.checker.check_model(str(report.out_path))
    sample = sample_batch(META, 5, 3)
    recomputed = (onnx_logits(onnx_runtime, report.out_path, sample) - pytorch_logits(student, sample)).abs().max()
    assert report.max_abs_diff == pytest.approx(recomputed.item(), abs=1e-7)
    assert report.max_abs_diff < TOLERANCE
    # The batch axis is dynamic: other batch sizes run and agree too.
    for size in (1, 7):
        images = torch.randn(size, 1, 28, 28, generator=torch.Generator().manual_seed(size))
        exported = onnx_logits(onnx_runtime, report.out_path, images)
        assert exported.shape == (size, 10)
        torch.testing.assert_close(exported, pytorch_logits(student, images), atol=TOLERANCE, rtol=0)
    assert [p.name for p in student.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_torchscript_export_matches_pytorch(student):
    report = export_checkpoint(student, "TorchScript")

    assert report.fmt == "torchscript" and report.batch == 8
    assert report.out_path == student.with_name("student.torchscript.pt")
    sample = sample_batch(META, 8, 0)
    recomputed = (torchscript_logits(report.out_path, sample) - pytorch_logits(student, sample)).abs().max()
    assert report.max_abs_diff == pytest.approx(recomputed.item(), abs=1e-7)
    assert report.max_abs_diff < TOLERANCE
    images = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(torchscript_logits(report.out_path, images), pytorch_logits(student, images),
                               atol=TOLERANCE, rtol=0)


def test_exported_program_export_matches_pytorch_with_a_dynamic_batch(student, capsys):
    from n2n.cli import main

    assert main(["export", str(student), "--format", "exported", "--batch", "4"]) == 0
    path = student.with_name("student.pt2")
    assert path.is_file() and "student.pt2 (exported)" in capsys.readouterr().out
    program = torch.export.load(str(path)).module()
    for size in (1, 6):
        images = torch.randn(size, 1, 28, 28, generator=torch.Generator().manual_seed(size))
        with torch.inference_mode():
            exported = program(images)
        torch.testing.assert_close(exported, pytorch_logits(student, images), atol=TOLERANCE, rtol=0)


def test_explicit_output_path_is_used_and_folders_are_made(student, tmp_path):
    out = tmp_path / "exports" / "deep" / "model.ts"
    report = export_checkpoint(student, "torchscript", out)
    assert report.out_path == out and out.is_file()
    assert not student.with_name("student.torchscript.pt").exists()


def test_default_paths_sit_next_to_the_checkpoint():
    assert default_export_path("runs/a/student.pt", "onnx") == Path("runs/a/student.onnx")
    assert default_export_path(Path("student.pt"), "torchscript") == Path("student.torchscript.pt")
    assert default_export_path("teacher.ckpt", "onnx") == Path("teacher.onnx")


def test_existing_file_is_kept_unless_forced(student):
    existing = student.with_name("student.torchscript.pt")
    existing.write_bytes(b"keep me")

    with pytest.raises(N2NError, match=r"already exists.*--force"):
        export_checkpoint(student, "torchscript")
    assert existing.read_bytes() == b"keep me"

    report = export_checkpoint(student, "torchscript", force=True)
    assert report.out_path == existing and existing.read_bytes() != b"keep me"
    assert report.max_abs_diff < TOLERANCE


def test_export_never_replaces_the_checkpoint_itself(student):
    original = student.read_bytes()
    with pytest.raises(ConfigError, match="checkpoint itself"):
        export_checkpoint(student, "torchscript", student, force=True)
    assert student.read_bytes() == original


@pytest.mark.parametrize("fmt", ["tflite", "", "onnx2"])
def test_unknown_format_is_a_config_error(student, fmt):
    with pytest.raises(ConfigError, match="unknown export format.*onnx, torchscript"):
        export_checkpoint(student, fmt)


@pytest.mark.parametrize("batch", [0, -1, 2.5, True])
def test_bad_sample_batch_is_a_config_error(student, batch):
    with pytest.raises(ConfigError, match="batch size"):
        export_checkpoint(student, "torchscript", batch=batch)


def test_missing_checkpoint_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        export_checkpoint(tmp_path / "nothing.pt", "torchscript")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("package", ["onnx", "onnxruntime", "onnxscript"])
def test_missing_onnx_package_gives_one_clear_line(student, monkeypatch, package):
    monkeypatch.setitem(sys.modules, package, None)  # makes `import package` raise ImportError

    with pytest.raises(N2NError) as caught:
        export_checkpoint(student, "onnx")
    assert str(caught.value) == f"ONNX export needs the {package} package: pip install 'n2n[onnx]'"
    assert not student.with_name("student.onnx").exists()


# ---------------------------------------------------------------- compare


@pytest.fixture
def mnist_dir(tmp_path) -> Path:
    write_mnist(tmp_path / "mnist", n_train=40, n_test=12)
    return tmp_path / "mnist"


def test_compare_gives_one_sensible_row_per_checkpoint(saved_models, mnist_dir):
    rows = compare_checkpoints(list(saved_models), data_dir=mnist_dir, latency_repeats=3)

    assert [row["checkpoint"] for row in rows] == [str(path) for path in saved_models]
    for path, row in zip(saved_models, rows):
        model = load_checkpoint(path).model
        assert row["dataset"] == "mnist"
        assert row["params"] == count_parameters(model)
        assert row["flops"] == count_flops(model, torch.zeros(1, 1, 28, 28)) > 0
        assert row["size_bytes"] == os.path.getsize(path)
        assert 0.0 <= row["test_accuracy"] <= 1.0
        # 12 test images: accuracy is a whole number of twelfths
        assert row["test_accuracy"] * 12 == pytest.approx(round(row["test_accuracy"] * 12), abs=1e-4)
        assert row["latency_ms_b1"] > 0 and row["latency_ms_b64"] > 0
    teacher, student = rows
    assert student["params"] < teacher["params"] and student["flops"] < teacher["flops"]


def test_compare_can_skip_latency_and_rejects_bad_repeats(saved_models, mnist_dir):
    (row,) = compare_checkpoints([saved_models[1]], "MNIST", data_dir=mnist_dir, latency_repeats=0)
    assert row["latency_ms_b1"] is None and row["latency_ms_b64"] is None
    with pytest.raises(ConfigError, match="latency_repeats"):
        compare_checkpoints([saved_models[1]], data_dir=mnist_dir, latency_repeats=-1)
    with pytest.raises(ConfigError, match="latency_threads"):
        compare_checkpoints([saved_models[1]], data_dir=mnist_dir, latency_threads=0)


def test_compare_refuses_a_data_set_the_model_does_not_fit(saved_models, tmp_path):
    root = tmp_path / "cifar"
    write_cifar10(root)
    with pytest.raises(CheckpointError, match="3 channels"):
        compare_checkpoints([saved_models[0]], "cifar10", data_dir=root, latency_repeats=0)


def test_latency_is_per_image_and_leaves_the_thread_count_alone():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
    calls = []
    model.register_forward_hook(lambda _, inputs, __: calls.append((len(inputs[0]), torch.get_num_threads())))
    torch.set_num_threads(2)

    assert 0 < cpu_latency_ms(model, torch.zeros(1, 1, 2, 2), 64, 3) < 1000
    assert len(calls) >= 3 + 2 and set(calls) == {(64, 1)}  # warm-up and timed runs, all on one thread
    assert torch.get_num_threads() == 2


def test_table_has_a_header_and_one_line_per_row():
    rows = [
        {"checkpoint": "teacher.pt", "dataset": "mnist", "params": 200_000, "flops": 18_000_000,
         "size_bytes": 801_917, "test_accuracy": 0.9912, "latency_ms_b1": 1.25, "latency_ms_b64": 0.5},
        {"checkpoint": "runs/a/student.pt", "dataset": "mnist", "params": 20_000, "flops": 2_000_000,
         "size_bytes": 900, "test_accuracy": 0.985, "latency_ms_b1": None, "latency_ms_b64": None},
    ]
    header, first, second = format_table(rows).splitlines()
    assert header.split()[:4] == ["checkpoint", "dataset", "params", "vs"]
    assert first.split() == ["teacher.pt", "mnist", "200,000", "1.0x", "18,000,000", "783.1", "KiB", "99.12%",
                             "1.250", "0.500"]
    assert second.split() == ["runs/a/student.pt", "mnist", "20,000", "10.0x", "2,000,000", "900", "B", "98.50%",
                              "-", "-"]
    assert len({len(header), len(first)}) == 1  # columns line up
    assert format_table([]) == ""
