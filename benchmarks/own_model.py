"""A model of the user's own code, end to end: train it on a data set, compress it, save and reload the student.

The model class comes from a Python file, as a user's would (nothing registered in n2n's
zoo); it is trained with the data set's teacher recipe (`n2n train-teacher`'s), then
`n2n.compress` searches a student at `--compression` with the library's defaults and
gives it the final distillation. Prints one markdown table and writes it, with the
settings, as JSON:

    .venv/bin/python benchmarks/own_model.py --model-file tests/custom_models.py \
        --model-class TorchvisionResNet18 --model-kwargs '{"width": 16}' --compression 10 --seed 0
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import n2n
from n2n.files import atomic_write_text
from n2n.run import git_revision
from n2n.runtime import resolve_device, seed_everything
from n2n.teacher import fit, recipe_for
from n2n.training import accuracy

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-file", required=True, help="Python file that defines the model class")
    parser.add_argument("--model-class", required=True, help="the class to build the teacher from")
    parser.add_argument("--model-kwargs", default="{}", help="JSON keywords for the class besides "
                        "in_channels and num_classes, which the data set sets (default {})")
    parser.add_argument("--dataset", default="fashion-mnist", help="data set (default fashion-mnist)")
    parser.add_argument("--compression", type=float, default=10.0, help="parameter budget factor (default 10)")
    parser.add_argument("--epochs", type=int, help="teacher epochs (default: the data set's recipe)")
    parser.add_argument("--seed", type=int, default=0, help="data split, training and search seed (default 0)")
    parser.add_argument("--limit", type=int, help="use only this many training images (a smoke run)")
    parser.add_argument("--search", default="{}", help="JSON of n2n.compress options (default: the library's)")
    parser.add_argument("--data-dir", help="folder holding the data set files")
    parser.add_argument("--device", help="cpu, cuda or auto (default: auto)")
    parser.add_argument("--out", help="JSON result (default benchmarks/results/own_model-CLASS-SEED.json)")
    return parser.parse_args(argv)


def model_class(path: str, name: str) -> type[nn.Module]:
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"own_model: error: {path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not isinstance(getattr(module, name, None), type):
        raise SystemExit(f"own_model: error: {path} defines no class {name}")
    return getattr(module, name)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    build = model_class(args.model_file, args.model_class)
    seed_everything(args.seed)
    device = resolve_device(args.device)
    data = n2n.load_dataset(args.dataset, args.data_dir, seed=args.seed, limit=args.limit)
    kwargs = {"in_channels": data.info.in_channels, "num_classes": data.info.num_classes,
              **json.loads(args.model_kwargs)}
    teacher = build(**kwargs).to(device)
    started = time.perf_counter()
    fit(teacher, data, recipe_for(args.dataset, epochs=args.epochs), device, args.seed, progress="teacher")
    teacher_seconds = time.perf_counter() - started
    train, val, test = (n2n.as_tensors(data, split, device) for split in ("train", "val", "test"))
    started = time.perf_counter()
    result = n2n.compress(teacher.eval(), train, val, test_data=test, compression=args.compression, seed=args.seed,
                          device=str(device), **n2n.augmentation_options(data), **json.loads(args.search))
    compress_seconds = time.perf_counter() - started
    row = measured(args, build(**kwargs), result, test, teacher_seconds, compress_seconds)
    print(table(row))
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"own_model-{args.model_class}-seed{args.seed}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(row, indent=2) + "\n")
    print(f"\nwritten to {out}")
    return row


def measured(args: argparse.Namespace, fresh: nn.Module, result: n2n.CompressionResult,
             test: tuple[torch.Tensor, torch.Tensor], teacher_seconds: float, compress_seconds: float) -> dict[str, Any]:
    """The table's numbers (compress's own summary); the student saved, reloaded on `fresh`, a new
    instance of the user's class, and scored again."""
    with tempfile.TemporaryDirectory() as folder:
        saved = Path(folder) / "student.pt"
        n2n.save_student(result, saved)
        reloaded = n2n.load_student(saved, model=fresh)
    teacher, student = result.summary["teacher"], result.summary["student"]
    return {
        "model": f"{args.model_file}:{args.model_class}({args.model_kwargs})", "dataset": args.dataset,
        "seed": args.seed, "compression_asked": args.compression, "commit": git_revision(),
        "teacher_params": teacher["params"], "teacher_test_accuracy": teacher["test_accuracy"],
        "student_params": student["params"], "student_test_accuracy": student["test_accuracy"],
        "reloaded_test_accuracy": accuracy(reloaded.to(test[0].device), *test),
        "teacher_seconds": teacher_seconds, "compress_seconds": compress_seconds,
    }


def table(row: dict[str, Any]) -> str:
    drop = 100 * (row["teacher_test_accuracy"] - row["student_test_accuracy"])
    return "\n".join([
        f"{row['model']} on {row['dataset']}, seed {row['seed']}:", "",
        "| model | params | test accuracy | time |", "|---|---:|---:|---:|",
        f"| teacher | {row['teacher_params']:,} | {100 * row['teacher_test_accuracy']:.2f} % | "
        f"{row['teacher_seconds']:.0f} s training |",
        f"| student | {row['student_params']:,} | {100 * row['student_test_accuracy']:.2f} % | "
        f"{row['compress_seconds']:.0f} s compress |", "",
        f"{row['teacher_params'] / row['student_params']:.1f}x fewer parameters, {drop:.2f} points of test accuracy; "
        f"reloaded on a fresh instance: {100 * row['reloaded_test_accuracy']:.2f} %."])


if __name__ == "__main__":
    main()
