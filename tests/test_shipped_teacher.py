"""The teachers shipped in teachers/: made by `n2n train-teacher`, small, and as accurate as recorded."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from n2n import evaluate_checkpoint

TEACHERS = Path(__file__).resolve().parents[1] / "teachers"
# file -> (zoo model, width multiplier)
SHIPPED = {"conv4-fashion-mnist.pt": ("conv4", 1.0), "vgg16-quarter-fashion-mnist.pt": ("vgg16", 0.25),
           "resnet18-quarter-fashion-mnist.pt": ("resnet18", 0.25)}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_a_shipped_teacher_is_a_small_weights_only_checkpoint(name):
    path = TEACHERS / name
    assert path.stat().st_size <= 4 * 1024 * 1024
    payload = torch.load(path, weights_only=True)
    model, width = SHIPPED[name]
    assert payload["arch"] == {"name": model, "kwargs": payload["arch"]["kwargs"], "rewrites": []}
    assert payload["arch"]["kwargs"].get("width_mult", 1.0) == width
    assert payload["meta"]["dataset"] == "fashion-mnist" and payload["meta"]["seed"] == 0


@pytest.mark.data
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_a_shipped_teacher_reaches_90_percent_on_the_fashion_mnist_test_set(fashion_mnist_root, name):
    path = TEACHERS / name
    row = evaluate_checkpoint(path, "fashion-mnist", data_dir=fashion_mnist_root)
    recorded = torch.load(path, weights_only=True)["meta"]["test_accuracy"]
    assert row["test_accuracy"] >= 0.90
    assert row["test_accuracy"] == pytest.approx(recorded, abs=1e-6)
