"""Shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
_IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@pytest.fixture(scope="session")
def fashion_mnist_root() -> Path:
    """The real Fashion-MNIST folder. Missing: a failure under CI=true, a skip elsewhere."""
    missing = [s for s in _IDX_STEMS if not any((FASHION_MNIST_DIR / f"{s}{ext}").is_file() for ext in ("", ".gz"))]
    if missing:
        message = f"Fashion-MNIST is not in {FASHION_MNIST_DIR} (missing {', '.join(missing)})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return FASHION_MNIST_DIR


@pytest.fixture(scope="module")
def one_thread():
    """Tiny networks gain nothing from a second intra-op thread, and lose much when cores are shared."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
