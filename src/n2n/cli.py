"""The `n2n` command: parse arguments, call the library, print results. Nothing else lives here."""
from __future__ import annotations

import argparse
import errno
import functools
import logging
import pickle
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

import yaml

from .errors import N2NError

EXIT_USER_ERROR = 2


def cmd_datasets(args: argparse.Namespace) -> None:
    from .data import get_dataset_info, list_datasets

    print(f"{'name':<14} {'channels':>8} {'classes':>7} {'size':>5}  files")
    for name in list_datasets():
        info = get_dataset_info(name)
        print(f"{name:<14} {info.in_channels:>8} {info.num_classes:>7} {info.image_size:>5}  {info.files_hint}")


def cmd_models(args: argparse.Namespace) -> None:
    from .models import create_model, list_models
    from .models import count_parameters

    print(f"{'name':<10} {'params (3x32x32, 10 classes)':>30}")
    for name in list_models():
        params = count_parameters(create_model(name, in_channels=3, num_classes=10))
        print(f"{name:<10} {params:>30,}")


def cmd_train_teacher(args: argparse.Namespace) -> None:
    from .teacher import train_teacher

    out = Path(args.out)
    if out.is_file() and not args.force:
        raise N2NError(f"{out} already exists: choose another --out or pass --force to overwrite it")
    result = train_teacher(
        args.model, args.dataset, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        data_dir=args.data_dir, device=args.device, out=out, limit=args.limit, progress=not args.quiet,
        model_kwargs=None if args.width is None else {"width_mult": args.width},
    )
    print(f"teacher {args.model} on {args.dataset}: {result.params:,} parameters, "
          f"val accuracy {result.val_accuracy:.2%}, test accuracy {result.test_accuracy:.2%}")
    print(f"saved to {out}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .compare import compare_checkpoints, format_table

    rows = compare_checkpoints(args.model, args.dataset, data_dir=args.data_dir, device=args.device, limit=args.limit,
                               latency_repeats=0 if args.no_latency else args.latency_repeats,
                               latency_threads=args.latency_threads or None)
    print(format_table(rows))


def cmd_export(args: argparse.Namespace) -> None:
    from .export import export_checkpoint

    report = export_checkpoint(args.checkpoint, args.format, args.out, batch=args.batch, seed=args.seed,
                               force=args.force)
    print(f"wrote {report.out_path} ({report.fmt}); largest difference from PyTorch "
          f"on {report.batch} random images: {report.max_abs_diff:.2e}")


def cmd_compress(args: argparse.Namespace) -> None:
    from .config import SearchConfig, from_dict, load_yaml
    from .run import compress_checkpoint

    if args.resume:
        resume_compression(args)
        return
    if not args.teacher or not args.out:
        raise N2NError("compress needs --teacher and --out (or --resume RUN_FOLDER)")
    config = from_dict(SearchConfig, load_yaml(args.config), str(args.config)) if args.config else SearchConfig()
    config = from_dict(SearchConfig, {**search_options(args), **placement_options(args)}, "options", base=config)
    result = compress_checkpoint(args.teacher, args.out, config, dataset=args.dataset, data_dir=args.data_dir,
                                 device=args.device, limit=args.limit, force=args.force, progress=not args.quiet,
                                 tensorboard=args.tensorboard)
    print_summary(result.summary, args.out)


def search_options(args: argparse.Namespace) -> dict:
    """The compress flags given that decide what the search does."""
    return given({
        "stages": args.stages,
        "epochs_per_stage": args.epochs_per_stage, "rollouts": args.rollouts, "algorithm": args.algorithm,
        "max_params": args.max_params, "max_flops": args.max_flops, "compression": args.compression,
        "reward": args.reward, "min_accuracy": args.min_accuracy,
        "init": args.init, "keep_channels": args.keep_channels, "policy_from": args.policy_from, "seed": args.seed,
        "method": args.method, "student_model": args.student_model, "student_width": args.student_width,
        "ignored_layers": args.ignored_layers, "round_to": args.round_to, "rescore_top": args.rescore_top,
    })


def placement_options(args: argparse.Namespace) -> dict:
    """The compress flags given that only decide where children train."""
    return given({"executor": args.executor, "workers": args.workers, "ray_address": args.ray_address})


def given(options: dict) -> dict:
    return {key: value for key, value in options.items() if value is not None}


def resume_compression(args: argparse.Namespace) -> None:
    """Continue a run as it was set up; only where its children train may change (another machine, a cluster)."""
    from .run import resume_run

    fixed = [f"--{name.replace('_', '-')}" for name in search_options(args)]
    fixed += [flag for flag, value in (("--teacher", args.teacher), ("--out", args.out), ("--config", args.config),
                                       ("--dataset", args.dataset), ("--data-dir", args.data_dir),
                                       ("--limit", args.limit), ("--device", args.device),
                                       ("--force", args.force or None)) if value is not None]
    if fixed:
        raise N2NError(f"--resume continues the run as it was set up, so {', '.join(fixed)} cannot change; "
                       "only --executor, --workers and --ray-address can")
    result = resume_run(args.resume, placement=placement_options(args), progress=not args.quiet,
                        tensorboard=args.tensorboard)
    print_summary(result.summary, args.resume)


def print_summary(summary: dict, out: str) -> None:
    rows = [("teacher", summary["teacher"]), ("student", summary["student"])]
    print(f"{'':8} {'params':>10} {'FLOPs':>12} {'val acc':>8} {'test acc':>9}")
    for name, row in rows:
        test = f"{row['test_accuracy']:.2%}" if row.get("test_accuracy") is not None else "-"
        print(f"{name:8} {row['params']:>10,} {row['flops']:>12,} {row['val_accuracy']:>8.2%} {test:>9}")
    print(f"compression {summary['compression']:.1f}x; run folder {out}")


def cmd_report(args: argparse.Namespace) -> None:
    from .report.rebuild import rebuild_report

    print(f"wrote {rebuild_report(args.run)} and its plots")


def cmd_experiment(args: argparse.Namespace) -> None:
    from .experiments import list_experiments, run_experiment

    if args.name is None:
        if args.variants or args.seeds or args.table_only:
            raise N2NError("--variants, --seeds and --table-only need an experiment NAME")
        names = list_experiments()
        print("\n".join(names) if names else "no experiment files in ./experiments")
        return
    folder = run_experiment(args.name, scale=args.scale, out=args.out, data_dir=args.data_dir, device=args.device,
                            progress=not args.quiet, variants=args.variants, seeds=args.seeds,
                            table_only=args.table_only)
    print(f"wrote {folder}/table.md and its plots")


def add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="folder holding the data set files (searched first)")
    parser.add_argument("--limit", type=int, help="use only the first N training and test images (quick runs)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: auto)")


class Parser(argparse.ArgumentParser):
    """An argparse parser whose errors look like every other user error: one line, exit 2.

    The usage block stays on --help; printed with every typo it buries the one line that matters.
    Subcommand parsers are made of this class too (add_subparsers uses the parent's class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"n2n: error: {' '.join(message.split())}\n")


def build_parser() -> argparse.ArgumentParser:
    # --quiet/--verbose are accepted before or after the subcommand
    common = Parser(add_help=False)
    common.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="only warnings and results, no progress bars")
    common.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    parser = Parser(
        prog="n2n", description="Compress a trained CNN into a small student (N2N learning).", parents=[common]
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser = functools.partial(sub.add_parser, parents=[common])  # type: ignore[method-assign]

    sub.add_parser("datasets", help="list the data sets n2n can read").set_defaults(func=cmd_datasets)
    sub.add_parser("models", help="list the model zoo").set_defaults(func=cmd_models)
    for add in (add_train_teacher, add_evaluate, add_export, add_compress, add_experiment, add_report):
        add(sub)
    return parser


def add_train_teacher(sub: Any) -> None:
    train = sub.add_parser("train-teacher", help="train a zoo model on a data set and save it")
    train.add_argument("--model", required=True, help="zoo model name (see `n2n models`)")
    train.add_argument("--width", type=float, help="width multiplier of the zoo model (default 1: its full width)")
    train.add_argument("--dataset", required=True, help="data set name (see `n2n datasets`)")
    train.add_argument("--out", required=True, help="checkpoint file to write")
    train.add_argument("--epochs", type=int, help="training epochs (default: the data set's recipe)")
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    add_data_options(train)
    train.set_defaults(func=cmd_train_teacher)



def add_evaluate(sub: Any) -> None:
    evaluate = sub.add_parser("evaluate", help="compare checkpoints: size, FLOPs, test accuracy, CPU latency")
    evaluate.add_argument("--model", required=True, nargs="+", help="checkpoint file(s); the first is the reference")
    evaluate.add_argument("--dataset", help="data set (default: the one each checkpoint was trained on)")
    evaluate.add_argument("--latency-repeats", type=int, default=10, help="timed runs per batch size (default 10)")
    evaluate.add_argument("--latency-threads", type=int, default=1,
                          help="CPU threads for latency (default 1, stable on a busy machine; 0: torch's default)")
    evaluate.add_argument("--no-latency", action="store_true", help="skip the CPU latency measurement")
    add_data_options(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)



def add_export(sub: Any) -> None:
    from .export import FORMATS  # imports torch

    export = sub.add_parser(
        "export", help="export a checkpoint to ONNX, TorchScript or an ExportedProgram and check it against PyTorch")
    export.add_argument("checkpoint", help="checkpoint file (teacher or student)")
    export.add_argument("--format", required=True, choices=FORMATS)
    export.add_argument("--out", help="file to write (default: next to the checkpoint, .onnx, .torchscript.pt or .pt2)")
    export.add_argument("--batch", type=int, default=8, help="random images the export is checked on (default 8)")
    export.add_argument("--seed", type=int, default=0, help="seed of those images")
    export.add_argument("--force", action="store_true", help="replace --out if it exists")
    export.set_defaults(func=cmd_export)



def add_compress(sub: Any) -> None:
    # the value sets of the choice options, from the modules that own them (these import torch)
    from .config import CHOICES, STAGES

    comp = sub.add_parser("compress", help="search a small student for a teacher checkpoint (N2N)")
    comp.add_argument("--teacher", help="teacher checkpoint (from `n2n train-teacher`)")
    comp.add_argument("--dataset", help="data set (default: the teacher's)")
    comp.add_argument("--out", help="run folder to create")
    comp.add_argument("--method", choices=CHOICES["method"],
                      help="n2n (default), or a baseline at the same scoring: random search over the same "
                           "actions, uniform width from scratch, L1 filter pruning (uniform or global) to the "
                           "budget, plain kd into a zoo model")
    comp.add_argument("--student-model", help="--method kd: zoo model to distil into (default: the teacher's)")
    comp.add_argument("--student-width", type=float,
                      help="--method kd: its width multiplier (default: the widest within the budget; 0.4 without one)")
    comp.add_argument("--stages", help=f"comma-separated, from {','.join(STAGES)} (default: all)")
    comp.add_argument("--epochs-per-stage", type=int, help="policy epochs per stage")
    comp.add_argument("--rollouts", type=int, help="children sampled per policy epoch (default 5)")
    comp.add_argument("--algorithm", choices=CHOICES["algorithm"])
    comp.add_argument("--compression", type=float,
                      help="budget: a student this many times smaller than the teacher (e.g. 10)")
    comp.add_argument("--max-params", type=int, help="budget: at most this many parameters")
    comp.add_argument("--max-flops", type=int, help="budget: at most this many multiply-accumulates")
    comp.add_argument("--reward", choices=CHOICES["reward"],
                      help="accuracy: every child fitted to the budget, rewarded by accuracy (auto's choice with "
                           "a budget); paper: N2N's C(2-C)*accuracy, budgets as soft-then-hard constraints "
                           "(auto's choice without one)")
    comp.add_argument("--min-accuracy", type=float, help="constraint: validation accuracy at least this (0-1)")
    comp.add_argument("--init", choices=CHOICES["init"], help="children keep teacher weights or start fresh")
    comp.add_argument("--keep-channels", choices=CHOICES["keep_channels"],
                      help="channels a shrunk layer keeps: what the next layer gets most from (default), "
                           "or the largest filter L1 norms")
    comp.add_argument("--ignored-layers", metavar="NAMES",
                      help="comma-separated module names left exactly as they are, e.g. fc (never removed or shrunk)")
    comp.add_argument("--round-to", type=int, metavar="N",
                      help="kept widths are multiples of N, e.g. 8 for hardware (default 1)")
    comp.add_argument("--rescore-top", type=int, metavar="N",
                      help="train each stage's N best children again, longer (rescore_epochs proxy epochs, "
                           "default 3), and keep the best of those (default 0: off)")
    comp.add_argument("--policy-from", help="run folder or policy file to start the policies from (transfer)")
    comp.add_argument("--seed", type=int)
    comp.add_argument("--executor", choices=CHOICES["executor"],
                      help="where children train: auto (default: process with one worker per GPU on several "
                           "GPUs or with --workers above 1, else inline), inline (one after another in this "
                           "process), process (local worker processes), ray (a Ray cluster, or a local Ray "
                           "instance)")
    comp.add_argument("--workers", type=int, help="children trained at once by the process or ray executor (default 1)")
    comp.add_argument("--ray-address", help="--executor ray: the cluster to join (default: start a local instance)")
    comp.add_argument("--config", help="YAML file of search options (flags override it)")
    comp.add_argument("--force", action="store_true", help="overwrite an existing run folder")
    comp.add_argument("--resume", metavar="RUN_FOLDER",
                      help="continue a run that was stopped or killed (with --executor, --workers or "
                           "--ray-address: its children train elsewhere from now on)")
    comp.add_argument("--tensorboard", action="store_true", help="also write TensorBoard scalars to RUN/tensorboard")
    add_data_options(comp)
    comp.set_defaults(func=cmd_compress)



def add_experiment(sub: Any) -> None:
    experiment = sub.add_parser("experiment", help="run one of the paper's experiments (files in experiments/)")
    experiment.add_argument("name", nargs="?", help="experiment name or YAML file; none lists the experiments")
    experiment.add_argument("--scale", help="a scale the file defines (e.g. tiny, paper); default: its own")
    experiment.add_argument("--out", help="output folder (default results/NAME[-SCALE]); finished runs are kept")
    experiment.add_argument("--data-dir", help="folder holding the data set files (searched first)")
    experiment.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: auto)")
    experiment.add_argument("--variants", type=comma_names, help="run only these variants (comma-separated); "
                            "processes sharing --out can each take some")
    experiment.add_argument("--seeds", type=comma_seeds,
                            help="run only these seeds (comma-separated), of each variant that has them")
    experiment.add_argument("--table-only", action="store_true",
                            help="run nothing: write the table and plots of the runs finished so far")
    experiment.set_defaults(func=cmd_experiment)


def comma_names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


def comma_seeds(text: str) -> list[int]:
    try:
        return [int(part) for part in comma_names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None



def add_report(sub: Any) -> None:
    report = sub.add_parser("report", help="rebuild the plots and report.md of a run from its metrics.jsonl")
    report.add_argument("run", help="run folder")
    report.set_defaults(func=cmd_report)


class ProgressFriendlyHandler(logging.StreamHandler):
    """Log lines printed above the progress bars instead of through them."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm.auto import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging must never take the run down
            self.handleError(record)


def configure_logging(quiet: bool, verbose: bool) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    handler = ProgressFriendlyHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


# What a user's input or machine can cause beyond n2n's own errors: a path that cannot be read
# or written (read-only, full, no permission), a file that is not what it claims. Anything else
# is a bug and keeps its traceback.
USER_ERRORS = (N2NError, OSError, pickle.UnpicklingError, yaml.YAMLError, UnicodeDecodeError)
OS_ADVICE = {errno.ENOSPC: "free some space, then run again (a compress run continues with --resume)",
             errno.EDQUOT: "free some space, then run again (a compress run continues with --resume)",
             errno.EROFS: "choose a path on a writable file system",
             errno.EACCES: "choose a path you may write, or change its permissions",
             errno.EPERM: "choose a path you may write, or change its permissions"}


def describe(error: BaseException) -> str:
    if isinstance(error, OSError):
        where = f"{error.filename}: " if error.filename is not None else ""
        advice = OS_ADVICE.get(error.errno)
        return f"{where}{(error.strerror or str(error)).lower()}" + (f"; {advice}" if advice else "")
    if isinstance(error, N2NError):
        return str(error)
    if isinstance(error, UnicodeDecodeError):
        return f"a file that should be text is not UTF-8 ({error.reason} at byte {error.start})"
    return f"a file is damaged or not what it should be ({type(error).__name__}: {error})"


def one_line(text: str) -> str:
    return " ".join(text.split()) or "unknown error"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.quiet = getattr(args, "quiet", False)
    configure_logging(args.quiet, getattr(args, "verbose", False))
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except USER_ERRORS as error:
        print(f"n2n: error: {one_line(describe(error))}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("n2n: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
