"""The command line: results on tiny fake data, and one clear line with exit code 2 for bad input."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fakedata import write_cifar10, write_mnist
from n2n.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from clihelpers import run_error
from n2n.cli import main
from n2n.models import create_model


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No real cache and an empty download mirror: a missing data set cannot be fetched."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    monkeypatch.setenv("N2N_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("N2N_DATA_MIRROR", mirror.as_uri())


@pytest.fixture
def fake_mnist(tmp_path) -> Path:
    root = tmp_path / "mnist"
    write_mnist(root, n_train=64, n_test=16, gz=True)
    return root


@pytest.fixture
def tiny_teacher(tmp_path, fake_mnist) -> Path:
    out = tmp_path / "teacher.pt"
    code = main(["--quiet", "train-teacher", "--model", "conv4", "--dataset", "mnist", "--data-dir", str(fake_mnist),
                 "--epochs", "1", "--batch-size", "16", "--out", str(out)])
    assert code == 0
    return out


def test_train_teacher_writes_a_weights_only_checkpoint(tiny_teacher, fake_mnist, capsys):
    payload = torch.load(tiny_teacher, weights_only=True)
    assert payload["format"] == FORMAT
    assert payload["arch"]["name"] == "conv4"
    assert payload["meta"]["dataset"] == "mnist" and payload["meta"]["num_classes"] == 10
    ckpt = load_checkpoint(tiny_teacher)
    assert sum(p.numel() for p in ckpt.model.parameters()) == payload["meta"]["params"]
    capsys.readouterr()
    assert main(["evaluate", "--model", str(tiny_teacher), "--data-dir", str(fake_mnist), "--no-latency"]) == 0
    header, row = capsys.readouterr().out.strip().splitlines()
    assert "test acc" in header and "params" in header
    assert f"{payload['meta']['params']:,}" in row and f"{payload['meta']['test_accuracy']:.2%}" in row


def test_unknown_model(tmp_path, fake_mnist, capsys):
    err = run_error(["train-teacher", "--model", "alexnet", "--dataset", "mnist", "--data-dir", str(fake_mnist),
                     "--out", str(tmp_path / "t.pt")], capsys)
    assert "alexnet" in err and "conv4" in err
    assert not (tmp_path / "t.pt").exists()


def test_unknown_dataset(tmp_path, capsys):
    err = run_error(["train-teacher", "--model", "conv4", "--dataset", "imagenet-22k",
                     "--out", str(tmp_path / "t.pt")], capsys)
    assert "imagenet-22k" in err and "fashion-mnist" in err


def test_missing_data_set(tmp_path, offline, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    err = run_error(["train-teacher", "--model", "conv4", "--dataset", "cifar10", "--data-dir", str(empty),
                     "--out", str(tmp_path / "t.pt")], capsys)
    assert "cifar" in err.lower()


def test_truncated_data_file(tmp_path, offline, capsys):
    root = tmp_path / "mnist"
    write_mnist(root, n_train=20, n_test=5)
    images = root / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    before = images.read_bytes()
    err = run_error(["evaluate", "--model", "nothing.pt"], capsys)  # checkpoint checked first
    assert "nothing.pt" in err
    err = run_error(["train-teacher", "--model", "conv4", "--dataset", "mnist", "--data-dir", str(root),
                     "--out", str(tmp_path / "t.pt")], capsys)
    assert "train-images-idx3-ubyte" in err
    assert images.read_bytes() == before  # the user's file is left as it was


def test_data_file_of_the_wrong_format(tmp_path, offline, capsys):
    root = tmp_path / "mnist"
    write_mnist(root, n_train=20, n_test=5)
    (root / "t10k-labels-idx1-ubyte").write_bytes(b"this is not an IDX file at all")
    err = run_error(["train-teacher", "--model", "conv4", "--dataset", "mnist", "--data-dir", str(root),
                     "--out", str(tmp_path / "t.pt")], capsys)
    assert "t10k-labels-idx1-ubyte" in err


def test_checkpoint_with_wrong_input_channels(tmp_path, tiny_teacher, offline, capsys):
    cifar = tmp_path / "cifar"
    write_cifar10(cifar)
    err = run_error(["evaluate", "--model", str(tiny_teacher), "--dataset", "cifar10", "--data-dir", str(cifar)],
                    capsys)
    assert "1-channel" in err and "3 channels" in err


def test_checkpoint_with_wrong_classes(tmp_path, fake_mnist, capsys):
    path = tmp_path / "five.pt"
    model = create_model("conv4", in_channels=1, num_classes=5)
    save_checkpoint(path, model, arch={"name": "conv4", "kwargs": {"in_channels": 1, "num_classes": 5}},
                    meta={"dataset": "mnist", "in_channels": 1, "num_classes": 5, "image_size": 28})
    err = run_error(["evaluate", "--model", str(path), "--data-dir", str(fake_mnist)], capsys)
    assert "5 classes" in err and "10" in err


def test_file_that_is_not_a_checkpoint(tmp_path, capsys):
    path = tmp_path / "notes.pt"
    path.write_text("hello")
    err = run_error(["evaluate", "--model", str(path)], capsys)
    assert "notes.pt" in err and "checkpoint" in err


def test_existing_output_is_not_overwritten(tmp_path, fake_mnist, capsys):
    out = tmp_path / "teacher.pt"
    out.write_bytes(b"precious")
    err = run_error(["train-teacher", "--model", "conv4", "--dataset", "mnist", "--data-dir", str(fake_mnist),
                     "--out", str(out)], capsys)
    assert "--force" in err
    assert out.read_bytes() == b"precious"


def test_bad_input_as_a_process_prints_one_line_and_exits_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "n2n", "evaluate", "--model", str(tmp_path / "missing.pt")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"n2n: error: checkpoint {tmp_path / 'missing.pt'} does not exist"]


def test_listings(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in ("mnist", "fashion-mnist", "cifar10", "cifar100", "svhn", "caltech256", "imagenet32"):
        assert name in out
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("conv4", "vgg11", "vgg19", "resnet18", "resnet34"):
        assert name in out
