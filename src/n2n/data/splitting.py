"""Hold out a validation split: seeded, stratified by class, exact in size."""

from __future__ import annotations

import math

import torch

from n2n.data.structures import Split


def validation_size(total: int, fraction: float) -> int:
    """round(fraction * total), but at least one sample (when asked for any) and never all of them."""
    if fraction <= 0 or total < 2:
        return 0
    return min(max(1, math.floor(fraction * total + 0.5)), total - 1)


def hold_out(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """(train, val): each class gives its share of ``fraction``; same seed, same split.

    Both parts keep the original order of the samples.
    """
    val_mask = stratified_mask(split.labels, validation_size(len(split), fraction), seed)
    return split.take(torch.nonzero(~val_mask).squeeze(1)), split.take(torch.nonzero(val_mask).squeeze(1))


def stratified_mask(labels: torch.Tensor, n_val: int, seed: int) -> torch.Tensor:
    """A boolean mask choosing ``n_val`` samples, spread over classes in proportion to their size."""
    labels = labels.cpu()
    n = labels.shape[0]
    mask = torch.zeros(n, dtype=torch.bool)
    if n_val == 0:
        return mask
    counts = torch.bincount(labels)
    quota = _class_quota(counts, n_val)
    generator = torch.Generator().manual_seed(seed)
    # Shuffle, then stable-sort by label: classes become contiguous runs in random order inside.
    shuffled = torch.randperm(n, generator=generator)
    order = shuffled[torch.sort(labels[shuffled], stable=True).indices]
    sorted_labels = labels[order]
    run_start = torch.cumsum(counts, 0) - counts
    rank_in_class = torch.arange(n) - run_start[sorted_labels]
    mask[order[rank_in_class < quota[sorted_labels]]] = True
    return mask


def _class_quota(counts: torch.Tensor, n_val: int) -> torch.Tensor:
    """Per-class validation counts summing exactly to n_val (largest-remainder rounding)."""
    ideal = counts.double() * n_val / counts.sum()
    quota = ideal.floor().long()
    remainder = n_val - int(quota.sum())
    if remainder > 0:
        # Largest fractional parts first; the stable sort breaks ties by class index.
        by_fraction = torch.sort(ideal - quota, descending=True, stable=True).indices
        quota[by_fraction[:remainder]] += 1
    return quota
