"""Supervised training and evaluation loops shared by teacher training and distillation."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

# loss_fn(model, *batch) -> scalar loss; a batch is (images, labels) or, for
# distillation, (images, labels, teacher_logits)
LossFn = Callable[..., torch.Tensor]


class NonFiniteLossError(RuntimeError):
    """Training diverged (NaN or infinite loss); the caller decides what that means."""


@dataclass
class SGDRecipe:
    """SGD with momentum and a cosine schedule: a robust default for CNN classifiers."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: bool = True


def cross_entropy_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(model(images), labels)


def make_sgd(model: nn.Module, recipe: SGDRecipe, steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    optimizer = torch.optim.SGD(
        model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay, nesterov=True
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe.lr, total_steps=max(1, steps), pct_start=0.15, anneal_strategy="cos"
    )
    return optimizer, scheduler


def train_epochs(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, ...]],
    *,
    epochs: int,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    progress: str | None = None,
) -> float:
    """Run `epochs` passes over `loader`; returns the mean loss of the last epoch.

    Raises NonFiniteLossError as soon as the loss stops being finite, so a diverging
    candidate costs one batch, not a whole training run.
    """
    model.train()
    total_batches = epochs * len(loader)  # type: ignore[arg-type]
    bar = tqdm(total=total_batches, desc=progress, disable=progress is None, leave=False, unit="batch")
    last_mean = math.nan
    for _ in range(epochs):
        running, batches = 0.0, 0
        for batch in loader:
            loss = loss_fn(model, *batch)
            if not torch.isfinite(loss):
                bar.close()
                raise NonFiniteLossError(f"loss became {loss.item()}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            running += loss.item()
            batches += 1
            bar.update(1)
            bar.set_postfix(loss=f"{running / batches:.3f}", refresh=False)
        last_mean = running / max(1, batches)
    bar.close()
    return last_mean


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: torch.Tensor, batch_size: int = 128) -> None:
    """Every BatchNorm layer's running statistics recomputed from `images` (EagleEye's adaptive
    BatchNorm). A child with layers removed or channels cut inherits statistics measured on its
    parent's features; scored before any training, those statistics, not its weights, decide
    most of its accuracy."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms or len(images) == 0:
        return
    momenta = [m.momentum for m in norms]
    was_training = model.training
    model.train()
    seen = 0
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        if len(batch) == 1 and seen:
            break  # one image has no spread to add, and a BatchNorm on 1x1 features refuses it
        for norm in norms:
            norm.momentum = len(batch) / (seen + len(batch))  # a running mean weighing every image alike
        model(batch)
        seen += len(batch)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    model.train(was_training)


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits for already-normalised `images`, in eval mode, batch by batch."""
    model.eval()
    outputs = [model(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    return torch.cat(outputs) if outputs else torch.empty(0)


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1024) -> float:
    """Top-1 accuracy in [0, 1] of `model` on normalised `images`."""
    if len(labels) == 0:
        return 0.0
    predictions = predict_logits(model, images, batch_size).argmax(dim=1)
    return (predictions == labels.to(predictions.device)).float().mean().item()
