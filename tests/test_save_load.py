"""Students of user-style models (not in the zoo) saved, loaded on a fresh instance of the
user's class and exported; zoo students load without one."""
from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

import n2n
from custom_models import SHORT_COMPRESS, SEResNet, USER_MODELS
from n2n.errors import CheckpointError

pytestmark = pytest.mark.usefixtures("one_thread")

BUILDERS = USER_MODELS


def images(count: int, seed: int) -> torch.Tensor:
    return torch.randn(count, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


@functools.cache
def compressed(name: str) -> n2n.CompressionResult:
    torch.manual_seed(0)
    model = BUILDERS[name]()
    inputs = images(96, 2)
    with torch.no_grad():
        labels = model.eval()(inputs).argmax(1)
    return n2n.compress(model, (inputs[:64], labels[:64]), (inputs[64:], labels[64:]), **SHORT_COMPRESS)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_a_student_loads_on_a_fresh_instance_with_the_same_outputs(name, tmp_path):
    result = compressed(name)
    path = n2n.save_student(result, tmp_path / "student.pt")

    payload = torch.load(path, weights_only=True)  # plain data: no pickled code
    assert payload["arch"]["source"] == "user" and payload["arch"]["rewrites"] == result.rewrites
    assert payload["meta"]["input_shape"] == [3, 16, 16] and payload["meta"]["input_dtype"] == "float32"

    loaded = n2n.load_student(path, model=BUILDERS[name]())  # another instance, other random weights
    assert not loaded.training
    batch = images(5, 3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch), result.student.eval()(batch))
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in result.student.parameters())


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_a_loaded_student_exports_to_an_exported_program_that_gives_its_outputs(name, tmp_path):
    path = n2n.save_student(compressed(name), tmp_path / "student.pt")
    student = n2n.load_student(path, model=BUILDERS[name]())

    report = n2n.export_model(student, tmp_path / "student.pt2", "exported", example_input=images(1, 4))
    assert report.out_path.suffix == ".pt2" and report.max_abs_diff < 1e-4
    program = torch.export.load(str(report.out_path)).module()
    batch = images(3, 5)  # another batch size than the check's: the batch axis is dynamic
    with torch.no_grad():
        torch.testing.assert_close(program(batch), student(batch))


def test_a_user_student_without_its_model_is_refused_with_the_class_to_pass(tmp_path):
    path = n2n.save_student(compressed("groupnorm"), tmp_path / "student.pt")
    with pytest.raises(CheckpointError, match=r"model=custom_models\.GroupNormNet\(\.\.\.\)"):
        n2n.load_student(path)


def test_a_student_loaded_on_another_class_is_refused_naming_the_right_one(tmp_path):
    path = n2n.save_student(compressed("groupnorm"), tmp_path / "student.pt")
    with pytest.raises(CheckpointError, match="compressed from custom_models.GroupNormNet"):
        n2n.load_student(path, model=SEResNet())


def test_a_zoo_student_loads_without_a_model(tmp_path):
    teacher = n2n.create_model("conv4", in_channels=1, num_classes=10, width_mult=0.25)
    inputs = torch.randn(80, 1, 28, 28, generator=torch.Generator().manual_seed(6))
    labels = torch.randint(0, 10, (80,), generator=torch.Generator().manual_seed(7))
    result = n2n.compress(teacher, (inputs[:64], labels[:64]), (inputs[64:], labels[64:]), **SHORT_COMPRESS)
    arch = {"name": "conv4", "kwargs": {"in_channels": 1, "num_classes": 10, "width_mult": 0.25}}
    path = n2n.save_student(result, tmp_path / "student.pt", teacher_arch=arch)

    loaded = n2n.load_student(path)
    again = n2n.load_checkpoint(path).model
    with torch.no_grad():
        torch.testing.assert_close(loaded(inputs[:4]), result.student.eval()(inputs[:4]))
        torch.testing.assert_close(again(inputs[:4]), loaded(inputs[:4]))


def test_save_student_refuses_a_result_that_compress_did_not_make(tmp_path):
    result = n2n.CompressionResult(student=nn.Linear(2, 2), history=[], summary={}, stages=[])
    with pytest.raises(n2n.ConfigError, match="the result of n2n.compress"):
        n2n.save_student(result, tmp_path / "student.pt")
