"""The teacher shipped for the demo: made by `n2n train-teacher`, and as accurate as the README says."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from n2n import evaluate_checkpoint

TEACHER = Path(__file__).resolve().parents[1] / "teachers" / "conv4-fashion-mnist.pt"


def test_the_shipped_teacher_is_a_small_weights_only_checkpoint():
    assert TEACHER.stat().st_size < 2 * 1024 * 1024
    payload = torch.load(TEACHER, weights_only=True)
    assert payload["arch"] == {"name": "conv4", "kwargs": payload["arch"]["kwargs"], "rewrites": []}
    assert payload["meta"]["dataset"] == "fashion-mnist" and payload["meta"]["seed"] == 0


@pytest.mark.data
def test_the_shipped_teacher_reaches_90_percent_on_the_fashion_mnist_test_set(fashion_mnist_root):
    row = evaluate_checkpoint(TEACHER, "fashion-mnist", data_dir=fashion_mnist_root)
    recorded = torch.load(TEACHER, weights_only=True)["meta"]["test_accuracy"]
    assert row["test_accuracy"] >= 0.90
    assert row["test_accuracy"] == pytest.approx(recorded, abs=1e-6)
