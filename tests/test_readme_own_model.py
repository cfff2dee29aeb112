"""The README's "Your own model" block runs as written: a user's class, a DataLoader, compress
with a 4x budget, save, load on a fresh instance, export. n2n.compress is wrapped from outside
to search only a few children, so the block's own text is what runs."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import n2n
from test_readme_quickstart import PYTHON_BLOCK, merged, n2n_names

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Your own model"
SMALL = {"epochs_per_stage": 1, "rollouts": 2, "removal_policy": {"rollouts": 2},
         "proxy": {"epochs": 1, "subset": 128}, "final": {"epochs": 1}, "progress": False}

pytestmark = pytest.mark.usefixtures("one_thread")


def own_model_code() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert SECTION in text, f"README.md has no {SECTION!r} section"
    block = PYTHON_BLOCK.search(text.split(SECTION, 1)[1].split("\n## ", 1)[0])
    assert block is not None, f"the {SECTION!r} section has no python code block"
    return block.group(1)


def test_the_example_uses_public_functions_only():
    names = n2n_names(own_model_code())
    assert {"compress", "save_student", "load_student", "export_model"} <= names
    assert names <= set(n2n.__all__), f"not in n2n.__all__: {sorted(names - set(n2n.__all__))}"


def test_the_own_model_example_runs_and_its_student_loads_and_exports(tmp_path, monkeypatch):
    real_compress = n2n.compress
    monkeypatch.setattr(n2n, "compress", lambda *args, **kwargs: real_compress(*args, **merged(kwargs, SMALL)))
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)

    scope: dict[str, Any] = {"__name__": "readme_own_model"}
    exec(compile(own_model_code(), "README.md (Your own model)", "exec"), scope)

    result, student, images = scope["result"], scope["student"], scope["images"]
    teacher_params = sum(p.numel() for p in scope["teacher"].parameters())
    assert sum(p.numel() for p in student.parameters()) <= teacher_params / 4
    assert all(m.out_channels % 8 == 0 for m in student.modules() if isinstance(m, torch.nn.Conv2d))  # round_to
    with torch.no_grad():
        torch.testing.assert_close(student(images[:4]), result.student.eval()(images[:4]))
        program = torch.export.load("student.pt2").module()
        torch.testing.assert_close(program(images[:4]), student(images[:4]), atol=1e-4, rtol=0)
    assert torch.load("student.pt", weights_only=True)["arch"]["source"] == "user"
