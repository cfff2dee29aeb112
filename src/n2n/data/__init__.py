"""Data sets: readers for standard on-disk formats, validation splits, and fast in-memory loaders.

    >>> from n2n.data import load_dataset, TensorLoader
    >>> data = load_dataset("fashion-mnist")              # doctest: +SKIP
    >>> loader = TensorLoader(data.train, data.info, 128, shuffle=True, augment=True)  # doctest: +SKIP
"""

from n2n.data.loader import TensorLoader, normalise
from n2n.data.registry import get_dataset_info, list_datasets, load_dataset, register_dataset
from n2n.data.structures import DatasetInfo, DataSplits, Split
from n2n.data.tensors import as_tensors, augmentation_options

__all__ = [
    "DatasetInfo",
    "Split",
    "DataSplits",
    "list_datasets",
    "get_dataset_info",
    "load_dataset",
    "register_dataset",
    "TensorLoader",
    "normalise",
    "as_tensors",
    "augmentation_options",
]
