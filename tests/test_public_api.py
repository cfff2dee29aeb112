"""The public API fits together: a loaded data set goes into `n2n.compress` through public
functions, and `compress` leaves the caller's module and random generators as they were."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

import n2n
from fakedata import write_learnable_mnist, write_mnist
from n2n.errors import ConfigError

TINY = {
    "epochs_per_stage": 1,
    "rollouts": 2,
    "proxy": {"epochs": 1, "subset": 64, "batch_size": 32},
    "final": {"epochs": 1, "subset": None},
}

pytestmark = pytest.mark.usefixtures("one_thread")


def test_as_tensors_gives_each_split_normalised_as_the_teacher_takes_it(tmp_path):
    write_mnist(tmp_path / "mnist", n_train=40, n_test=10)
    data = n2n.load_dataset("mnist", tmp_path / "mnist", download=False)
    (mean,), (std,) = data.info.mean, data.info.std
    for name in ("train", "val", "test"):
        split = getattr(data, name)
        images, labels = n2n.as_tensors(data, name)
        assert images.dtype == torch.float32 and images.shape == split.images.shape
        torch.testing.assert_close(images, (split.images.float() / 255 - mean) / std)
        assert labels.dtype == torch.int64 and torch.equal(labels, split.labels)
    with pytest.raises(ConfigError, match="split must be one of train, val, test, got 'validation'"):
        n2n.as_tensors(data, "validation")


def test_augmentation_options_pad_crops_with_a_black_pixel(tmp_path):
    write_mnist(tmp_path / "mnist", n_train=40, n_test=10)
    data = n2n.load_dataset("mnist", tmp_path / "mnist", download=False)
    options = n2n.augmentation_options(data)
    assert options == {"crop_padding": data.info.crop_padding, "hflip": data.info.hflip,
                       "crop_fill": options["crop_fill"]}
    black = torch.zeros(1, 1, 1, 1, dtype=torch.uint8)
    assert n2n.data.normalise(black, data.info).item() == pytest.approx(options["crop_fill"][0])


def test_a_loaded_data_set_compresses_through_public_functions_only(tmp_path):
    write_learnable_mnist(tmp_path / "mnist")
    teacher = n2n.train_teacher("conv4", "mnist", data_dir=tmp_path / "mnist", epochs=3, batch_size=32,
                                progress=False).model
    data = n2n.load_dataset("mnist", tmp_path / "mnist", download=False)
    with pytest.raises(ConfigError, match="n2n.as_tensors"):  # the raw uint8 splits are not what it takes
        n2n.compress(teacher, data.train, data.val, progress=False, **TINY)
    train, val, test = (n2n.as_tensors(data, split) for split in ("train", "val", "test"))
    result = n2n.compress(teacher, train, val, test_data=test, progress=False, **n2n.augmentation_options(data),
                          **TINY)
    assert result.summary["student"]["params"] < result.summary["teacher"]["params"]
    assert result.summary["teacher"]["test_accuracy"] > 0.5


def random_states() -> tuple:
    return random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone()


def labelled_teacher() -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    """A small conv4 and random images it labels itself: train, val."""
    torch.manual_seed(0)
    teacher = n2n.create_model("conv4", in_channels=1, num_classes=10, width_mult=0.5).eval()
    images = torch.randn(192, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        labels = teacher(images).argmax(dim=1)
    return teacher, [(images[:128], labels[:128]), (images[128:], labels[128:])]


def test_compress_leaves_the_callers_module_and_random_generators_as_they_were():
    teacher, (train, val) = labelled_teacher()
    teacher.train()
    next(m for m in teacher.modules() if isinstance(m, nn.BatchNorm2d)).eval()  # modes mixed, as a user may leave them
    modes = [module.training for module in teacher.modules()]
    weights = {name: (tensor, tensor.detach().clone()) for name, tensor in teacher.state_dict(keep_vars=True).items()}
    random.seed(11)
    np.random.seed(11)
    torch.manual_seed(11)
    before = random_states()

    n2n.compress(teacher, train, val, device="cpu", progress=False, seed=3, **TINY)

    assert [module.training for module in teacher.modules()] == modes
    now = teacher.state_dict(keep_vars=True)
    for name, (tensor, value) in weights.items():
        assert now[name] is tensor and torch.equal(tensor, value), name
    after = random_states()
    assert after[0] == before[0]
    assert np.array_equal(after[1], before[1]) and torch.equal(after[2], before[2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compress_on_the_gpu_leaves_the_callers_module_on_the_cpu():
    teacher, (train, val) = labelled_teacher()
    torch.cuda.manual_seed_all(5)
    cuda_before = torch.cuda.get_rng_state_all()
    n2n.compress(teacher, train, val, device="cuda", progress=False, **TINY)
    assert {p.device.type for p in teacher.parameters()} == {"cpu"}
    assert all(torch.equal(a, b) for a, b in zip(torch.cuda.get_rng_state_all(), cuda_before))
