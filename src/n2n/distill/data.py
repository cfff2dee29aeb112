"""What distillation trains on: normalised tensors, with the teacher's logits computed once.

Without augmentation every child sees the same images, so the teacher's logits are
computed once per run and indexed by batch: no teacher forward pass per child. With
augmentation the teacher, which travels with the data to every worker, labels each
augmented batch.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch
from torch import nn

from ..training import predict_logits


@dataclass
class DistillData:
    train_images: torch.Tensor  # float, normalised, N x C x H x W
    train_labels: torch.Tensor  # int64, N
    val_images: torch.Tensor
    val_labels: torch.Tensor
    teacher_logits: torch.Tensor | None = None  # logits of the teacher on train_images, filled by attach_teacher
    crop_padding: int = 0  # training augmentation, used only where DistillConfig.augment is set
    hflip: bool = False
    # what the crop pads with, in the images' normalised units (one per channel, or one for all):
    # black, as the teacher's training padded its [0, 1] images; 0 would be the mean pixel
    crop_fill: tuple[float, ...] | float = 0.0
    # labels augmented batches where no teacher is passed to distill: the search sets it where
    # its proxy augments, so that it reaches the workers only then
    teacher: nn.Module | None = None

    def attach_teacher(self, teacher: nn.Module, batch_size: int = 1024) -> "DistillData":
        """Compute the teacher's training-set logits once (eval mode, no augmentation)."""
        self.teacher_logits = predict_logits(teacher, self.train_images, batch_size)
        return self

    def subset(self, size: int | None, seed: int) -> "DistillData":
        """A fixed random training subset (same seed -> same images); validation data is kept whole.
        All of the data, in its own order, when `size` is None or not below the number of images."""
        if size is None or size >= len(self.train_labels):
            return self
        return self.permuted(seed, size)

    def permuted(self, seed: int, size: int | None = None) -> "DistillData":
        """The training images in a seeded random order (the first `size` of it): its start is the
        subset that `subset` draws with the same seed, whatever `size` is."""
        generator = torch.Generator().manual_seed(seed)
        index = torch.randperm(len(self.train_labels), generator=generator)[:size].to(self.train_labels.device)
        logits = None if self.teacher_logits is None else self.teacher_logits[index]
        return replace(self, train_images=self.train_images[index], train_labels=self.train_labels[index],
                       teacher_logits=logits)

    def head(self, size: int) -> "DistillData":
        """The first `size` training images: of `permuted(seed)`, the subset the same seed draws."""
        logits = None if self.teacher_logits is None else self.teacher_logits[:size]
        return replace(self, train_images=self.train_images[:size], train_labels=self.train_labels[:size],
                       teacher_logits=logits)

    def to(self, device: torch.device) -> "DistillData":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        # a module moves in place: the copy leaves the caller's teacher where it was
        teacher = None if self.teacher is None else copy.deepcopy(self.teacher).to(device)
        return replace(self, train_images=move(self.train_images), train_labels=move(self.train_labels),
                       val_images=move(self.val_images), val_labels=move(self.val_labels),
                       teacher_logits=move(self.teacher_logits), teacher=teacher)
