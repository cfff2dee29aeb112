"""Give saved students n2n's final distillation, as `n2n compress` ends with the child it keeps.

For a student the search scored but did not keep (a run's stageN-*.pt checkpoints), this says
what the final distillation would have made of it: the test accuracy it would have been
reported with. Prints a markdown table, one row per checkpoint.

    .venv/bin/python benchmarks/final_distill.py runs/X/stage1-removal.pt runs/X/stage2-shrinkage.pt \
        --teacher teachers/conv4-fashion-mnist.pt --seed 0

The final settings are the library's (SearchConfig().final) unless --config names a search
YAML; the data set is the teacher's, split with --seed as `n2n compress --seed` splits it.
"""
from __future__ import annotations

import argparse
import copy

import n2n
from n2n.arch import count_params
from n2n.compress import prepare_data
from n2n.config import SearchConfig, from_dict, load_yaml
from n2n.distill.trainer import distill
from n2n.runtime import resolve_device, seed_everything
from n2n.training import accuracy


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("students", nargs="+", help="student checkpoints")
    parser.add_argument("--teacher", required=True, help="the teacher checkpoint they were made from")
    parser.add_argument("--config", help="search YAML whose final: settings to use (default: the library's)")
    parser.add_argument("--seed", type=int, default=0, help="data split and training seed (default 0)")
    parser.add_argument("--data-dir", help="folder holding the data set files")
    parser.add_argument("--device", help="cpu, cuda or auto (default: auto)")
    args = parser.parse_args(argv)

    config = from_dict(SearchConfig, load_yaml(args.config)) if args.config else SearchConfig()
    device = resolve_device(args.device)
    teacher = n2n.load_checkpoint(args.teacher).model.to(device).eval()
    splits = n2n.load_dataset(n2n.load_checkpoint(args.teacher).meta["dataset"], args.data_dir, seed=args.seed)
    train, val, test = (n2n.as_tensors(splits, split, device) for split in ("train", "val", "test"))
    data, _ = prepare_data(teacher, train, val, device, test, **n2n.augmentation_options(splits))
    print("| student | params | val acc before | val acc after | test acc after |")
    print("|---|---:|---:|---:|---:|")
    for path in args.students:
        student = copy.deepcopy(n2n.load_checkpoint(path).model).to(device)
        before = accuracy(student, data.val_images, data.val_labels)
        seed_everything(args.seed)
        distill(student, data, config.final, seed=args.seed, teacher=teacher)
        after = accuracy(student, data.val_images, data.val_labels)
        print(f"| {path} | {count_params(student):,} | {100 * before:.2f} % | {100 * after:.2f} % | "
              f"{100 * accuracy(student, *test):.2f} % |", flush=True)


if __name__ == "__main__":
    main()
