"""Distillation: losses by hand, training moves the student toward the teacher, divergence is reported."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from n2n.distill.data import DistillData
from n2n.distill.losses import hinton_kd_loss, l2_logit_loss, make_distill_loss
from n2n.distill.trainer import DistillConfig, augment, distill
from n2n.errors import ConfigError
from n2n.training import NonFiniteLossError


def test_l2_loss_by_hand():
    student = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    teacher = torch.tensor([[0.0, 2.0], [2.0, 0.0]])
    assert l2_logit_loss(student, teacher).item() == pytest.approx((1 + 0 + 4 + 0) / 4)


def test_kd_loss_is_cross_entropy_when_alpha_is_zero_and_zero_kl_when_equal():
    logits = torch.tensor([[2.0, 0.5, -1.0]])
    labels = torch.tensor([0])
    ce = nn.functional.cross_entropy(logits, labels).item()
    assert hinton_kd_loss(logits, logits * 3, labels, alpha=0.0).item() == pytest.approx(ce)
    assert hinton_kd_loss(logits, logits, labels, alpha=1.0).item() == pytest.approx(0.0, abs=1e-6)


def test_unknown_loss_name():
    with pytest.raises(ConfigError, match="'l3'"):
        make_distill_loss("l3")


def toy_problem(n: int = 256, seed: int = 0) -> tuple[nn.Module, DistillData]:
    torch.manual_seed(seed)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    images = torch.randn(n, 1, 4, 4)
    labels = teacher(images).argmax(1).detach()
    data = DistillData(images, labels, images[:64], labels[:64]).attach_teacher(teacher)
    return teacher, data


def test_distillation_brings_the_student_to_the_teacher():
    teacher, data = toy_problem()
    student = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    before = l2_logit_loss(student(data.train_images), data.teacher_logits).item()
    outcome = distill(student, data, DistillConfig(epochs=20, subset=None, batch_size=32, lr=0.02, weight_decay=0.0))
    after = l2_logit_loss(student(data.train_images), data.teacher_logits).item()
    assert after < 0.1 * before
    assert outcome.val_accuracy > 0.9 and outcome.seconds > 0


def test_distillation_is_reproducible_for_a_seed():
    results = []
    for _ in range(2):
        teacher, data = toy_problem()
        torch.manual_seed(123)
        student = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
        distill(student, data, DistillConfig(epochs=2, subset=100, batch_size=16), seed=7)
        results.append(student[1].weight.detach().clone())
    assert torch.equal(results[0], results[1])


def test_subset_is_fixed_by_seed_and_keeps_teacher_logits_aligned():
    _, data = toy_problem()
    a, b = data.subset(50, seed=3), data.subset(50, seed=3)
    assert torch.equal(a.train_images, b.train_images) and len(a.train_labels) == 50
    row = (data.train_images == a.train_images[0]).flatten(1).all(1).nonzero()[0, 0]
    assert torch.equal(a.teacher_logits[0], data.teacher_logits[row])


def test_diverging_student_raises():
    _, data = toy_problem()
    student = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    with torch.no_grad():
        student[1].weight.fill_(math.nan)
    with pytest.raises(NonFiniteLossError):
        distill(student, data, DistillConfig(epochs=1, subset=None))


def test_augmented_distillation_asks_the_teacher_per_batch():
    teacher, data = toy_problem()
    calls = []
    teacher.register_forward_hook(lambda *args: calls.append(1))
    student = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    distill(student, data, DistillConfig(epochs=1, subset=None, batch_size=64, augment=True), teacher=teacher)
    assert len(calls) == 256 // 64
    distill(student, replace(data, teacher=teacher), DistillConfig(epochs=1, subset=None, batch_size=64,
                                                                   augment=True))
    assert len(calls) == 2 * 256 // 64  # without `teacher`, the one the data carry
    with pytest.raises(ValueError, match="teacher"):
        distill(student, data, DistillConfig(augment=True))


def test_augmentation_pads_with_the_datas_fill_not_the_mean_pixel():
    images = torch.zeros(64, 1, 6, 6)  # the mean pixel in normalised units
    labels = torch.zeros(64, dtype=torch.long)
    data = DistillData(images, labels, images, labels, crop_padding=2, crop_fill=(-0.81,))
    out = augment(images, data, torch.Generator().manual_seed(0))
    padding, image = out.unique().tolist()
    assert padding == pytest.approx(-0.81) and image == 0.0


def test_augmentation_flips_and_crops_with_the_data_set_settings():
    images = torch.arange(2 * 1 * 6 * 6, dtype=torch.float).reshape(2, 1, 6, 6)
    data = DistillData(images, torch.zeros(2, dtype=torch.long), images, torch.zeros(2, dtype=torch.long), hflip=True)
    out = augment(images, data, torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    for original, augmented in zip(images, out):
        assert torch.equal(augmented, original) or torch.equal(augmented, original.flip(-1))
    unflipped = replace(data, hflip=False)
    assert torch.equal(augment(images, unflipped, torch.Generator().manual_seed(0)), images)


def test_a_run_pads_augmented_crops_black(monkeypatch, tmp_path):
    """The command's runs hand compress() the data set's black pixel, not compress()'s mean-pixel default."""
    from types import SimpleNamespace

    from n2n import run
    from n2n.config import SearchConfig
    from n2n.data import get_dataset_info
    from n2n.data.structures import DataSplits, Split
    from n2n.report.run_folder import RunFolder

    seen = {}

    def fake_compress(*args, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop before any training")

    monkeypatch.setattr(run, "compress", fake_compress)
    info = get_dataset_info("fashion-mnist")
    split = Split(torch.zeros(4, 1, 28, 28, dtype=torch.uint8), torch.zeros(4, dtype=torch.long))
    with pytest.raises(RuntimeError, match="stop before"):
        run.execute(RunFolder(tmp_path), SimpleNamespace(model=None), DataSplits(info, split, split, split),
                    SearchConfig(), None, False, None)
    (fill,) = seen["crop_fill"]
    assert fill == pytest.approx(-0.2860 / 0.3530) and seen["crop_padding"] == 2


def batchnorm_student() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(48, 4))


def test_recalibration_sets_batchnorm_statistics_to_those_of_the_images_and_changes_nothing_else():
    from n2n.training import recalibrate_batchnorm

    student = batchnorm_student().eval()
    norm = student[1]
    norm.momentum = 0.3
    images = torch.randn(100, 1, 4, 4) * 2 + 5
    weights = {k: v.clone() for k, v in student.state_dict().items() if "running" not in k and "batches" not in k}
    recalibrate_batchnorm(student, images, batch_size=7)  # 14 batches of 7 and one of 2
    with torch.no_grad():
        features = student[0](images).transpose(0, 1).reshape(3, -1)
    assert torch.allclose(norm.running_mean, features.mean(1), atol=1e-4)  # every image weighs alike
    assert (norm.running_var - features.var(1)).abs().max() < 0.05 * features.var(1).max()
    assert norm.momentum == 0.3 and not student.training
    assert all(torch.equal(student.state_dict()[k], v) for k, v in weights.items())


def test_a_proxy_of_zero_epochs_only_recalibrates_and_scores():
    from n2n.training import accuracy, recalibrate_batchnorm

    teacher, data = toy_problem()
    student = batchnorm_student()
    expected = batchnorm_student()
    recalibrate_batchnorm(expected, data.subset(50, 0).train_images, batch_size=16)
    outcome = distill(student, data, DistillConfig(epochs=0, calibrate=50, subset=None, batch_size=16), seed=0)
    assert torch.equal(student[0].weight, expected[0].weight)
    assert torch.allclose(student[1].running_mean, expected[1].running_mean)
    assert torch.allclose(student[1].running_var, expected[1].running_var)
    assert outcome.val_accuracy == accuracy(expected, data.val_images, data.val_labels)


@pytest.mark.parametrize("name, options, words", [
    ("final", {"epochs": 0}, "final.epochs must be a whole number between 1"),
    ("proxy", {"epochs": -1}, "proxy.epochs must be a whole number between 0"),
    ("proxy", {"calibrate": -5}, "proxy.calibrate must be a whole number of at least 0"),
    ("proxy", {"calibrate": 2.5}, "proxy.calibrate"),
])
def test_proxy_may_train_zero_epochs_and_calibrate_a_whole_number_of_images(name, options, words):
    from n2n.config import SearchConfig, from_dict

    with pytest.raises(ConfigError, match=words):
        from_dict(SearchConfig, {name: options}).validate()
    assert from_dict(SearchConfig, {"proxy": {"epochs": 0, "calibrate": 256}}).validate().proxy.calibrate == 256


def test_recalibration_leaves_out_a_last_lone_image_that_a_batchnorm_on_1x1_features_refuses():
    from n2n.training import recalibrate_batchnorm

    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    images = torch.randn(15, 1, 1, 1)
    recalibrate_batchnorm(model, images, batch_size=7)  # 7, 7 and a lone image, left out
    with torch.no_grad():
        features = model[0](images[:14]).flatten(1).transpose(0, 1)
    assert torch.allclose(model[1].running_mean, features.mean(1), atol=1e-5)
