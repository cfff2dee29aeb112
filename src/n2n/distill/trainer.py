"""Train a student from its teacher's logits and score it on the validation split."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from ..data.loader import random_crop, random_hflip
from ..training import NonFiniteLossError, accuracy, recalibrate_batchnorm, train_epochs
from .data import DistillData
from .losses import make_distill_loss

log = logging.getLogger(__name__)


@dataclass
class DistillConfig:
    """How a child is trained before it is scored. Defaults: the search proxy.

    The reference trained every child 5 epochs from scratch on the whole training
    set with Adam (lr 5e-4, weight decay 5e-4). With inherited weights one epoch on a
    subset ranks children well (see docs), at a fraction of the cost.
    """

    loss: str = "l2"
    epochs: int = 1
    subset: int | None = 10_000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 5e-4
    temperature: float = 4.0
    alpha: float = 0.9
    augment: bool = False
    # training images whose BatchNorm statistics replace the student's before it trains (0: off);
    # with epochs 0 this alone scores a child, untrained
    calibrate: int = 0


@dataclass
class DistillOutcome:
    val_accuracy: float
    train_loss: float
    seconds: float


def batches(data: DistillData, batch_size: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, ...]]:
    """Shuffled (images, labels, teacher logits) batches; last partial batch kept."""
    order = torch.randperm(len(data.train_labels), generator=generator).to(data.train_labels.device)
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        yield data.train_images[index], data.train_labels[index], data.teacher_logits[index]


class _EpochLoader:
    """Re-iterable (images, labels, teacher logits) batches, a new shuffle each epoch.

    With augmentation the cached logits no longer describe the images, so the teacher
    runs once per augmented batch instead.
    """

    def __init__(self, data: DistillData, batch_size: int, seed: int, teacher: nn.Module | None) -> None:
        self.data, self.batch_size, self.teacher = data, batch_size, teacher
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.data.train_labels) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for images, labels, logits in batches(self.data, self.batch_size, self.generator):
            if self.teacher is not None:
                images = augment(images, self.data, self.generator)
                with torch.no_grad():
                    logits = self.teacher(images)
            yield images, labels, logits


def augment(images: torch.Tensor, data: DistillData, generator: torch.Generator) -> torch.Tensor:
    """The data set's crop and flip on normalised images, padded with the data's `crop_fill`."""
    fill = torch.tensor(data.crop_fill, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    images = random_crop(images, data.crop_padding, generator, fill)
    return random_hflip(images, generator) if data.hflip else images


def distill(student: nn.Module, data: DistillData, config: DistillConfig, *, seed: int = 0,
            teacher: nn.Module | None = None, progress: str | None = None) -> DistillOutcome:
    """Train `student` toward the teacher's logits in `data`, then measure validation accuracy.

    With `config.augment` the teacher (`teacher`, else `data.teacher`) labels each
    augmented batch. Raises NonFiniteLossError when training diverges; the
    search scores that child -1.
    """
    if data.teacher_logits is None:
        raise ValueError("DistillData has no teacher logits: call attach_teacher first")
    started = time.perf_counter()
    torch.manual_seed(seed)
    train = data.subset(config.subset, seed)
    criterion = make_distill_loss(config.loss, temperature=config.temperature, alpha=config.alpha)

    teacher = teacher if teacher is not None else data.teacher
    if config.augment and teacher is None:
        raise ValueError("augmented distillation needs the teacher to label each augmented batch")

    def loss_fn(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return criterion(model(images), logits, labels)

    if teacher is not None:
        teacher.eval()
    if config.calibrate:  # the same images for every student: a fixed seed, not the student's
        recalibrate_batchnorm(student, train.subset(config.calibrate, 0).train_images, config.batch_size)
    loader = _EpochLoader(train, config.batch_size, seed, teacher if config.augment else None)
    optimizer = torch.optim.Adam(student.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, config.epochs * len(loader)))
    loss = train_epochs(student, loader, epochs=config.epochs, loss_fn=loss_fn, optimizer=optimizer,
                        scheduler=scheduler, progress=progress)
    val = accuracy(student, data.val_images, data.val_labels)
    return DistillOutcome(val_accuracy=val, train_loss=loss, seconds=time.perf_counter() - started)


__all__ = ["DistillConfig", "DistillOutcome", "NonFiniteLossError", "distill"]
