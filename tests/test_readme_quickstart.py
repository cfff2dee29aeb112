"""The README's "Quick start: Python" block runs as written, on the real Fashion-MNIST and the
shipped teacher, with public functions only. Shrunk from outside to finish in seconds: the data
set is cut to a few hundred images and the search to a few children (n2n.load_dataset and
n2n.compress are wrapped for the run), so the block's own text is what runs."""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
from torch import nn

import n2n

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Quick start: Python"
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
LIMIT = 1000  # training and test images read (a tenth of the training ones held out for validation)
# Over the library's settings: a policy epoch of two children per stage, each scored after
# distilling on a few hundred images; no accuracy floor, which such short training cannot meet.
SMALL = {
    "epochs_per_stage": 1, "rollouts": 2, "min_accuracy": None,
    "removal_policy": {"rollouts": 2},
    "proxy": {"epochs": 1, "subset": 256},
    "final": {"epochs": 1},
}


def quickstart_code() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert SECTION in text, f"README.md has no {SECTION!r} section"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    block = PYTHON_BLOCK.search(section)
    assert block is not None, f"the {SECTION!r} section has no python code block"
    return block.group(1)


def n2n_names(code: str) -> set[str]:
    """The names the code reads from the n2n package (n2n.NAME)."""
    return {node.attr for node in ast.walk(ast.parse(code))
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "n2n"}


def merged(options: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`options` with `overrides` on top, nested sections merged field by field."""
    out = dict(options)
    for key, value in overrides.items():
        out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) else value
    return out


def test_the_quick_start_uses_public_functions_only():
    names = n2n_names(quickstart_code())
    assert {"load_checkpoint", "load_dataset", "compress"} <= names
    assert names <= set(n2n.__all__), f"not in n2n.__all__: {sorted(names - set(n2n.__all__))}"


@pytest.mark.data
def test_the_python_quick_start_runs_and_compresses_the_shipped_teacher(fashion_mnist_root, monkeypatch, capsys,
                                                                         one_thread):
    real_load, real_compress = n2n.load_dataset, n2n.compress
    monkeypatch.setattr(n2n, "load_dataset", lambda name, *args, **kwargs: real_load(
        name, fashion_mnist_root, **{**kwargs, "limit": LIMIT, "download": False}))
    monkeypatch.setattr(n2n, "compress", lambda *args, **kwargs: real_compress(
        *args, **merged(kwargs, {**SMALL, "progress": False})))
    monkeypatch.chdir(ROOT)  # the block names the shipped teacher by a relative path

    scope: dict[str, Any] = {"__name__": "readme_quickstart"}
    exec(compile(quickstart_code(), "README.md (Quick start: Python)", "exec"), scope)

    result, student = scope["result"], scope["student"]
    assert isinstance(student, nn.Module) and student is result.student
    summary = result.summary
    assert summary["student"]["params"] < summary["teacher"]["params"]
    assert summary["compression"] > 1
    assert summary["teacher"]["test_accuracy"] > 0.85  # the inputs reached the teacher normalised as it was trained
    assert summary["config"]["compression"] == 10  # the block's own settings reached compress
    assert summary["teacher"]["params"] // summary["student"]["params"] >= 10
    assert str(summary["compression"]) in capsys.readouterr().out
