"""n2n: network-to-network compression by policy-gradient reinforcement learning.

The public API, by name:
    compress(teacher, train_data, val_data, **options) -> CompressionResult
    train_teacher(model, dataset, ...), evaluate_checkpoint(path, dataset)
    load_checkpoint(path), save_checkpoint(path, model, arch=..., meta=...)
    save_student(result, path), load_student(path, model=None): any student, rebuilt on a fresh model
    export_model(model, out, fmt, example_input=...): ONNX, TorchScript or ExportedProgram, checked
    create_model(name, **kwargs), list_models()
    load_dataset(name, data_dir=None, ...), list_datasets()
    as_tensors(data, split), augmentation_options(data): a loaded data set as compress takes it
"""
from .version import __version__

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint  # noqa: E402
from .compress import CompressionResult, compress  # noqa: E402
from .config import SearchConfig  # noqa: E402
from .data import as_tensors, augmentation_options, list_datasets, load_dataset  # noqa: E402
from .errors import CheckpointError, ConfigError, DataError, ModelError, N2NError  # noqa: E402
from .export import export_model  # noqa: E402
from .models import create_model, list_models  # noqa: E402
from .student import load_student, save_student  # noqa: E402
from .teacher import evaluate_checkpoint, train_teacher  # noqa: E402

__all__ = [
    "Checkpoint", "CheckpointError", "CompressionResult", "ConfigError", "DataError", "ModelError", "N2NError",
    "SearchConfig", "as_tensors", "augmentation_options", "compress", "create_model", "evaluate_checkpoint", "export_model", "list_datasets",
    "list_models", "load_checkpoint", "load_dataset", "load_student", "save_checkpoint", "save_student", "train_teacher",
]
