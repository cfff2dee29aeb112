"""Training a teacher from the zoo, and evaluating any checkpoint on a data set."""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .version import __version__
from .checkpoint import load_checkpoint, save_checkpoint
from .checks import check_output_path, check_real, check_seed, check_whole
from .compare import evaluate_loaded
from .data import DataSplits, TensorLoader, as_tensors, load_dataset
from .errors import DataError
from .models import count_parameters, create_model, get_model_builder
from .runtime import resolve_device, seed_everything
from .training import SGDRecipe, accuracy, cross_entropy_loss, make_sgd, train_epochs

log = logging.getLogger(__name__)

MAX_EPOCHS = 10_000
MAX_BATCH = 1 << 20

# Chosen so the default conv4 teacher trains in minutes on two CPU cores.
DEFAULT_RECIPES: dict[str, SGDRecipe] = {
    "mnist": SGDRecipe(epochs=6),
    "fashion-mnist": SGDRecipe(epochs=8),
    "cifar10": SGDRecipe(epochs=60, lr=0.1),
    "cifar100": SGDRecipe(epochs=80, lr=0.1),
    "svhn": SGDRecipe(epochs=20, lr=0.05),
    "caltech256": SGDRecipe(epochs=60, lr=0.05),
    "imagenet32": SGDRecipe(epochs=30, lr=0.1, batch_size=256),
}


@dataclass
class TeacherResult:
    model: nn.Module
    params: int
    val_accuracy: float
    test_accuracy: float
    path: Path | None


def recipe_for(dataset: str, **overrides: Any) -> SGDRecipe:
    recipe = DEFAULT_RECIPES.get(dataset, SGDRecipe())
    return replace(recipe, **{k: v for k, v in overrides.items() if v is not None})


def train_teacher(
    model: str,
    dataset: str,
    *,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    data_dir: str | Path | None = None,
    device: str | None = None,
    out: str | Path | None = None,
    limit: int | None = None,
    progress: bool = True,
    model_kwargs: dict[str, Any] | None = None,
) -> TeacherResult:
    """Train zoo model `model` on `dataset` with its default recipe; save it to `out` if given."""
    check_training_options(epochs, batch_size, lr, seed)
    if out:
        check_output_path(out, "--out")
    seed_everything(seed)
    dev = resolve_device(device)
    get_model_builder(model)  # an unknown name fails before any data is read
    data = load_dataset(dataset, data_dir, seed=seed, limit=limit)
    info = data.info
    kwargs = {"in_channels": info.in_channels, "num_classes": info.num_classes, **(model_kwargs or {})}
    net = create_model(model, **kwargs).to(dev)
    recipe = recipe_for(dataset, epochs=epochs, batch_size=batch_size, lr=lr)
    val_acc, test_acc = fit(net, data, recipe, dev, seed, progress=f"teacher {model}" if progress else None)
    result = TeacherResult(net.cpu().eval(), count_parameters(net), val_acc, test_acc, Path(out) if out else None)
    if out:
        meta = dataset_meta(data) | {
            "params": result.params, "val_accuracy": val_acc, "test_accuracy": test_acc,
            "seed": seed, "recipe": asdict(recipe), "n2n_version": __version__, "torch_version": str(torch.__version__),
        }
        save_checkpoint(out, result.model, arch={"name": model, "kwargs": kwargs, "rewrites": []}, meta=meta)
    return result


def fit(net: nn.Module, data: DataSplits, recipe: SGDRecipe, device: torch.device, seed: int,
        progress: str | None = None) -> tuple[float, float]:
    """Train `net` (on `device`) on the data's training split by `recipe`; its validation and test
    accuracies."""
    loader = TensorLoader(data.train, data.info, recipe.batch_size, shuffle=True, augment=recipe.augment,
                          device=device, seed=seed, drop_last=True)
    if len(loader) == 0 or len(data.val) == 0:
        raise DataError(f"{len(data.train)} training and {len(data.val)} validation images are too few to train "
                        f"on in batches of {recipe.batch_size}: raise --limit or lower --batch-size")
    optimizer, scheduler = make_sgd(net, recipe, recipe.epochs * len(loader))
    log.info("training %s on %s: %s", type(net).__name__, data.info.name, recipe)
    train_epochs(net, loader, epochs=recipe.epochs, loss_fn=cross_entropy_loss, optimizer=optimizer,
                 scheduler=scheduler, progress=progress)
    return accuracy(net, *as_tensors(data, "val", device)), accuracy(net, *as_tensors(data, "test", device))


def check_training_options(epochs: Any, batch_size: Any, lr: Any, seed: Any) -> None:
    """The recipe overrides a user gave, before any data is read: a NaN or negative step size, or
    no epochs, would save a teacher that learned nothing."""
    if epochs is not None:
        check_whole("--epochs", epochs, 1, MAX_EPOCHS)
    if batch_size is not None:
        check_whole("--batch-size", batch_size, 1, MAX_BATCH)
    if lr is not None:
        check_real("--lr", lr, 0, open_low=True)
    check_seed("--seed", seed)


def dataset_meta(data: DataSplits) -> dict[str, Any]:
    """What a checkpoint must know about the data it was trained on."""
    info = data.info
    return {
        "dataset": info.name, "in_channels": info.in_channels, "num_classes": info.num_classes,
        "image_size": int(data.train.images.shape[-1]), "mean": list(info.mean), "std": list(info.std),
    }


def evaluate_checkpoint(
    path: str | Path, dataset: str | None = None, *, data_dir: str | Path | None = None, device: str | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Test accuracy and size of a checkpoint; `dataset` defaults to the one it was trained on."""
    ckpt = load_checkpoint(path)
    data = load_dataset(dataset or ckpt.meta.get("dataset"), data_dir, limit=limit)
    return evaluate_loaded(path, ckpt, data, resolve_device(device))
