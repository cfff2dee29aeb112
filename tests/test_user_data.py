"""Data as users hold it reaches n2n.compress: DataLoaders and Datasets with their own
transforms; labels of the wrong shape or range are refused in one line before any teacher pass."""
from __future__ import annotations

import logging

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import n2n
from custom_models import SHORT_COMPRESS, GroupNormNet
from n2n.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

SHORT = {**SHORT_COMPRESS, "rollouts": 2}


class NoisyImages(Dataset):
    """A user's Dataset: stored images, a random transform per item, labels as Python ints."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, label_shape: tuple[int, ...] = ()) -> None:
        self.images, self.labels, self.label_shape, self.calls = images, labels, label_shape, 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        self.calls += 1
        image = self.images[index] + 0.05 * torch.randn_like(self.images[index])
        if torch.rand(()) < 0.5:
            image = image.flip(-1)
        label = int(self.labels[index])
        return image, torch.tensor(label).reshape(self.label_shape) if self.label_shape else label


def teacher_and_data(count: int = 96) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = GroupNormNet()
    images = torch.randn(count, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        labels = model.eval()(images).argmax(1)
    return model, images, labels


def counting_calls(model: nn.Module) -> list[int]:
    calls: list[int] = []
    model.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_a_dataloader_over_a_dataset_with_random_transforms_compresses():
    teacher, images, labels = teacher_and_data()
    train = NoisyImages(images[:64], labels[:64])
    loader = DataLoader(train, batch_size=16, shuffle=True)
    val = DataLoader(NoisyImages(images[64:], labels[64:]), batch_size=32)

    result = n2n.compress(teacher, loader, val, test_data=NoisyImages(images[64:], labels[64:]), **SHORT)

    assert train.calls == 64  # the user's transform ran on every item, read once
    assert result.summary["student"]["params"] < result.summary["teacher"]["params"]
    assert result.summary["teacher"]["test_accuracy"] > 0.5  # labels reached it matched with their images
    assert result.student(images[:2]).shape == (2, 10)


@pytest.mark.parametrize("form", ["tensors", "dataset", "dataloader"])
def test_labels_shaped_n_by_1_are_refused_in_one_line_before_any_teacher_pass(form):
    teacher, images, labels = teacher_and_data()
    calls = counting_calls(teacher)
    column = NoisyImages(images[:64], labels[:64], label_shape=(1,))
    train = {"tensors": (images[:64], labels[:64, None]), "dataset": column,
             "dataloader": DataLoader(column, batch_size=16)}[form]

    with pytest.raises(ConfigError) as caught:
        n2n.compress(teacher, train, (images[64:], labels[64:]), **SHORT)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("train_data: labels must be one class index per input")
    assert "got shape (64, 1)" in message and "labels.squeeze(1)" in message
    assert calls == []


@pytest.mark.parametrize("bad, expected", [
    (lambda y: torch.cat([torch.tensor([-1]), y[1:]]), "labels must be class indices from 0, got -1"),
    (lambda y: y.float() + 0.5, "labels must be whole class indices, got torch.float32"),
    (lambda y: y + 10, "label 1[0-9] is out of range for a teacher with 10 outputs"),
])
def test_labels_out_of_range_are_refused_naming_the_argument(bad, expected):
    teacher, images, labels = teacher_and_data()
    with pytest.raises(ConfigError, match=f"^val_data: {expected}"):
        n2n.compress(teacher, (images[:64], labels[:64]), (images[64:], bad(labels[64:])), **SHORT)


def test_whole_numbers_as_float_labels_are_class_indices():
    from n2n.data.user import tensor_pair

    inputs, labels = tensor_pair((torch.zeros(3, 1, 2, 2), torch.tensor([0.0, 2.0, 1.0])), "train_data")
    assert labels.dtype == torch.int64 and labels.tolist() == [0, 2, 1]


def test_something_else_is_refused_naming_what_is_accepted():
    teacher, images, labels = teacher_and_data()
    with pytest.raises(ConfigError, match="train_data must be a torch DataLoader .* got list"):
        n2n.compress(teacher, [images[:64]], (images[64:], labels[64:]), **SHORT)


def warnings_of(caplog, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno == logging.WARNING]


def test_splits_prepared_otherwise_are_warned_about_once_each(caplog):
    teacher, images, labels = teacher_and_data()
    raw = (images[64:] * 60 + 128).round()  # like pixels 0..255 never normalised
    with caplog.at_level(logging.WARNING):
        n2n.compress(teacher, (images[:64], labels[:64]), (raw, labels[64:]), test_data=(images[64:], labels[64:]),
                     **SHORT)
    (warning,) = warnings_of(caplog, "n2n.data.user")
    assert warning.startswith("val_data: inputs have mean 128 ") and "far from train_data's" in warning


def test_a_teacher_near_chance_on_the_validation_data_is_warned_about(caplog):
    teacher, images, labels = teacher_and_data()
    unrelated = torch.randint(0, 10, (32,), generator=torch.Generator().manual_seed(0))
    right = float((unrelated == labels[64:]).float().mean())
    assert 0 < right < 0.2  # what the teacher scores on them
    with caplog.at_level(logging.WARNING):
        n2n.compress(teacher, (images[:64], labels[:64]), (images[64:], unrelated), **SHORT)
    (warning,) = warnings_of(caplog, "n2n.search.scorer")
    assert warning.startswith(f"the teacher scores {100 * right:.1f}% on the validation data, near chance for 10")


def test_splits_prepared_alike_give_no_warning(caplog):
    teacher, images, labels = teacher_and_data()
    with caplog.at_level(logging.WARNING):
        n2n.compress(teacher, (images[:64], labels[:64]), (images[64:] * 1.5 + 0.2, labels[64:]), **SHORT)
    assert warnings_of(caplog, "n2n.data.user") == [] and warnings_of(caplog, "n2n.search.scorer") == []
