"""What scoring a child costs: the search's proxy against the reference protocol, executors, training speed.

Three measurements on the same children, sampled from a real search (`--run`) or drawn
from fresh stage policies on the teacher:

(a) scoring: the reference protocol (each child re-initialised, the teacher run on every
    batch, L2 on logits, Adam 5e-4 / 5e-4, 5 epochs on the whole training split) against the
    proxy of a search config (by default the demo's: inherited weights, the teacher's logits
    computed once, one distillation epoch on a subset). Wall-clock of each, their ratio, and
    how well the proxy's accuracies rank the children as the reference's do (Spearman, Kendall tau).
    The reference is scored on the validation split, as the proxy is, and also on the validation
    and test splits together: more images, so less of a finite test set's chance in its ranking.
    With --final each proxy-trained child also goes through the config's final distillation, as
    `n2n compress` ends, and both are ranked against that too.
(b) executors: candidates per minute for a fixed set of children on the inline, process and
    Ray executors, with 1 and 2 workers.
(c) training speed: images per second of one proxy epoch through n2n's `distill` against the
    least a PyTorch loop can do on the same child, tensors, batch size, optimizer and loss.

It prints a markdown table and writes everything, settings and machine included, as JSON:

    .venv/bin/python benchmarks/search_cost.py --run runs/demo-...      # about an hour on 2 CPU cores
    .venv/bin/python benchmarks/search_cost.py --limit 600 --children 4 --reference-epochs 1 \\
        --skip-executors                                                # a smoke run
"""
from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import random
import statistics
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import torch
from scipy import stats
from torch import nn

from n2n.arch import NetworkView, Rewrite, arch_signature
from n2n.arch.budget import Budget, fitting_budget
from n2n.arch.measure import count_params
from n2n.checkpoint import check_fits, load_checkpoint
from n2n.config import STAGES, SearchConfig, from_dict, load_yaml, to_dict
from n2n.data import as_tensors, augmentation_options, load_dataset
from n2n.distill.data import DistillData
from n2n.distill.losses import l2_logit_loss
from n2n.distill.trainer import DistillConfig, distill
from n2n.errors import N2NError
from n2n.report.summary import is_valid, load_run
from n2n.runtime import resolve_device, seed_everything
from n2n.search.executors import EXECUTORS
from n2n.search.loop import candidate_seed, unfitted_parent
from n2n.search.stages import make_stage
from n2n.search.state import candidate_key
from n2n.training import NonFiniteLossError, accuracy, train_epochs

from executor_rates import executor_table, measure_executors
from measure import CPU_DETAILS, machine, machine_line, measured, number, plain, say, timed, write_json
from training_speed import speed_table, training_speed

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TEACHER = ROOT / "teachers" / "conv4-fashion-mnist.pt"
DEFAULT_CONFIG = ROOT / "experiments" / "conv4-floor.yaml"
# The reference protocol of the paper, as DistillConfig's docstring records it; the paper
# names no batch size, so it is the project's
REFERENCE = DistillConfig(loss="l2", epochs=5, subset=None, batch_size=128, lr=5e-4, weight_decay=5e-4)
# What the measurements are meant to show (the targets)
TARGETS = {"cost_ratio_at_least": 10.0, "spearman_at_least": 0.8, "children_at_least": 20,
           "throughput_ratio_at_least": 0.9}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help="a run folder: its children are the ones scored (default: sample them)")
    parser.add_argument("--teacher", default=str(DEFAULT_TEACHER), help="teacher checkpoint (without --run)")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="search YAML whose proxy is the default scoring")
    parser.add_argument("--children", type=positive, default=20, help="valid distinct children to score")
    parser.add_argument("--stage", choices=STAGES, help="children of this stage only (default: every stage)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference-epochs", type=positive, default=REFERENCE.epochs)
    parser.add_argument("--reference-seeds", type=positive, default=1,
                        help="runs of the reference protocol per child, with other seeds; it scores their mean")
    parser.add_argument("--reuse", nargs="+", default=[], metavar="RESULT",
                        help="earlier results of this script, finished or partial: their reference runs of the "
                             "same children are taken as they are (the most a child has), and only the missing "
                             "seeds are run")
    parser.add_argument("--train-limit", type=positive, help="first N images of the training split, for both protocols")
    parser.add_argument("--limit", type=positive, help="first N training and test images of the data set (quick runs)")
    parser.add_argument("--data-dir", help="where the data set lies (default: n2n's usual places)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=positive, help="torch threads of this process (default: torch's choice)")
    parser.add_argument("--executors", type=executor_names, default="inline,process,ray",
                        help="executors to time, comma-separated")
    parser.add_argument("--workers", type=worker_counts, default="1,2", help="worker counts to time, comma-separated")
    parser.add_argument("--executor-children", type=positive, default=8, help="children each executor scores")
    parser.add_argument("--final", action="store_true",
                        help="also continue each proxy-trained child with the config's final distillation, as n2n "
                             "does with the child it keeps, and rank the proxy and the reference against that")
    parser.add_argument("--skip-executors", action="store_true", help="leave out the executor measurement")
    parser.add_argument("--repeats", type=positive, default=3, help="timings of each loop for the training speed")
    parser.add_argument("--out", help="JSON file (default: benchmarks/results/search_cost-<device>.json)")
    return parser.parse_args(argv)


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def executor_names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in EXECUTORS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown executor(s) {', '.join(unknown)}: "
                                         f"choose from {', '.join(EXECUTORS)}")
    return names


def worker_counts(text: str) -> list[int]:
    try:
        counts = [int(count) for count in text.split(",") if count.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"worker counts are whole numbers of at least 1, got {text!r}")
    return counts


# ---- the teacher, the data and the search config -----------------------------------------------
@dataclass
class Setup:
    teacher: nn.Module
    data: DistillData  # training and validation split on the device, without teacher logits
    test: tuple[torch.Tensor, torch.Tensor]  # the test split: the reference's accuracy is also taken there
    example_input: torch.Tensor
    config: SearchConfig  # of --config: its proxy is the default scoring
    device: torch.device
    dataset: str
    teacher_rewrites: int = 0  # rewrites the teacher's own checkpoint holds: a stage file's come after them


def make_setup(args: argparse.Namespace, teacher_path: str, dataset: str | None,
               config: SearchConfig | None = None) -> Setup:
    """The teacher, data and scoring settings (`config`, else those of --config) on the device."""
    device = resolve_device(args.device)
    config = config or from_dict(SearchConfig, load_yaml(args.config), str(args.config)).validate()
    teacher = load_checkpoint(teacher_path)
    name = dataset or teacher.meta["dataset"]
    splits = load_dataset(name, args.data_dir, seed=args.seed, limit=args.limit)
    check_fits(teacher.meta, splits.info, teacher_path)
    train_x, train_y = as_tensors(splits, "train", device)
    val_x, val_y = as_tensors(splits, "val", device)
    test = as_tensors(splits, "test", device)
    if args.train_limit is not None:
        train_x, train_y = train_x[: args.train_limit], train_y[: args.train_limit]
    # the final distillation augments as `n2n compress` does; the proxy and the reference do not
    data = DistillData(train_x, train_y, val_x, val_y, **augmentation_options(splits))
    return Setup(teacher.model.to(device).eval(), data, test, train_x[:1], config, device, name,
                 len(teacher.arch.get("rewrites", [])))


# ---- the children --------------------------------------------------------------------------------
@dataclass
class Child:
    """One child: the rewrite of `parent` by a stage's actions, built again on demand."""

    name: str
    stage: str
    actions: list[int]
    parent: nn.Module
    config: SearchConfig  # the stage's ratios and minimum width
    seed: int
    budget: Budget | None = None  # in budget mode the search fitted each child to it: so is it here
    params: int = 0
    flops: int = 0
    proxy_child: nn.Module | None = field(default=None, repr=False)  # as the proxy starts from it

    def rewrite(self, init: str, example_input: torch.Tensor, seed: int | None = None) -> Rewrite:
        """The child with inherited or freshly initialised weights (no child when the actions give none)."""
        torch.manual_seed(self.seed if seed is None else seed)  # scratch weights come from the global generator
        stage = make_stage(self.stage, replace(self.config, init=init), self.budget)
        view = NetworkView.build(self.parent, example_input, **self.config.view_options)
        return stage.apply(self.parent, view, torch.tensor(self.actions), example_input)[0]


def keep_distinct(candidates: Iterator[Child], count: int, init: str, example_input: torch.Tensor) -> list[Child]:
    """The first `count` candidates that give a child, each architecture once per stage (as the search's cache)."""
    chosen, seen = [], set()
    for child in candidates:
        rewrite = child.rewrite(init, example_input)
        if rewrite.child is None:
            continue
        key = f"{child.stage}:{arch_signature(rewrite.child, example_input)}"
        if key not in seen:
            seen.add(key)
            child.proxy_child, child.params, child.flops = rewrite.child, rewrite.params, rewrite.flops
            chosen.append(child)
        if len(chosen) == count:
            break
    return chosen


def sampled_candidates(setup: Setup, seed: int, attempts: int, only: str | None) -> Iterator[Child]:
    """Actions drawn from each stage's untrained policy on the teacher, the stages taking turns."""
    torch.manual_seed(seed)  # the fresh policies' weights
    generator = torch.Generator().manual_seed(seed)
    view = NetworkView.build(setup.teacher, setup.example_input)
    stages = [make_stage(name, setup.config) for name in setup.config.stages if only in (None, name)]
    policies = [stage.make_policy(False) for stage in stages]
    for attempt in range(attempts):
        stage, policy = stages[attempt % len(stages)], policies[attempt % len(stages)]
        with torch.no_grad():
            actions = stage.sample(policy, view, generator).actions.tolist()
        yield Child(f"sampled-{attempt}", stage.name, actions, setup.teacher, setup.config, seed * 1000 + attempt,
                    fitting_budget(setup.config, count_params(setup.teacher)))


def run_candidates(run: Any, setup: Setup, seed: int, only: str | None) -> Iterator[Child]:
    """The run's trained children in a seeded random order, each rebuilt on its stage's parent with the
    seed the search gave it (a removal's refitted layers draw their new weights from it)."""
    config = from_dict(SearchConfig, run.config, f"{run.root}/config.yaml")
    parents = stage_parents(run.root, config, setup)
    budget = fitting_budget(config, count_params(setup.teacher))
    lines = [line for line in run.candidates if is_valid(line) and not line.get("cached")
             and only in (None, line["stage"])]
    random.Random(seed).shuffle(lines)
    for line in lines:
        child_seed = candidate_seed(config.seed, config.stages.index(line["stage"]), line["epoch"], line["rollout"])
        yield Child(candidate_key(line["stage"], line["epoch"], line["rollout"]), line["stage"], line["actions"],
                    parents[line["stage"]], config, child_seed, budget)


def stage_parents(root: Path, config: SearchConfig, setup: Setup) -> dict[str, nn.Module]:
    """Each stage's parent as the search had it: the best child of the last stage that found one (in
    budget mode, the teacher with that child's layers removed, at full widths)."""
    parents, parent = {}, setup.teacher
    budget = fitting_budget(config, count_params(setup.teacher))
    for place, name in enumerate(config.stages, start=1):
        parents[name] = parent
        best = root / f"stage{place}-{name}.pt"
        if best.is_file():
            saved = load_checkpoint(best)
            parent = saved.model.to(setup.device).eval() if budget is None else unfitted_parent(
                setup.teacher, setup.example_input, saved.arch["rewrites"][setup.teacher_rewrites:], config.seed,
                place)[0].eval()
    return parents


# ---- (a) the proxy against the reference protocol ------------------------------------------------
class TeacherPerBatch:
    """The reference protocol's batches: the teacher labels each batch as it comes, nothing is cached."""

    def __init__(self, data: DistillData, teacher: nn.Module, batch_size: int, seed: int) -> None:
        self.data, self.teacher, self.batch_size = data, teacher, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.data.train_labels) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.data.train_labels), generator=self.generator).to(self.data.train_labels.device)
        for start in range(0, len(order), self.batch_size):
            index = order[start : start + self.batch_size]
            images = self.data.train_images[index]
            with torch.no_grad():
                logits = self.teacher(images)
            yield images, self.data.train_labels[index], logits


def reference_accuracy(child: nn.Module, setup: Setup, config: DistillConfig, seed: int) -> tuple[float, float]:
    """Validation and test accuracy after the reference protocol; NaN when its training diverges."""
    torch.manual_seed(seed)
    loader = TeacherPerBatch(setup.data, setup.teacher.eval(), config.batch_size, seed)
    optimizer = torch.optim.Adam(child.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    try:
        train_epochs(child, loader, epochs=config.epochs, optimizer=optimizer,
                     loss_fn=lambda model, images, labels, logits: l2_logit_loss(model(images), logits))
    except NonFiniteLossError:
        return math.nan, math.nan
    return accuracy(child, setup.data.val_images, setup.data.val_labels), accuracy(child, *setup.test)


def distilled_accuracy(child: nn.Module, data: DistillData, config: DistillConfig, seed: int,
                   teacher: nn.Module | None = None) -> float:
    """Validation accuracy after `distill` (the proxy's, or the final distillation's with `teacher`)."""
    try:
        return distill(child, data, config, seed=seed, teacher=teacher).val_accuracy
    except NonFiniteLossError:  # the search scores such a child invalid
        return math.nan


@dataclass
class ProxyData:
    """What the search prepares once for every child: the teacher's logits and the proxy subset."""

    data: DistillData
    config: DistillConfig
    teacher_seconds: float
    whole: DistillData  # every training image with its logits, for the final distillation


def prepare_proxy(setup: Setup) -> ProxyData:
    """As the search does: logits on the whole training split once, then one fixed subset for every child."""
    data = replace(setup.data)
    _, seconds = timed(lambda: data.attach_teacher(setup.teacher), setup.device)
    proxy = setup.config.proxy
    return ProxyData(data.subset(proxy.subset, setup.config.seed), replace(proxy, subset=None), seconds, data)


class Run(NamedTuple):
    """One run of the reference protocol."""

    accuracy: float  # on the validation split, where the proxy is scored
    seconds: float
    test_accuracy: float = math.nan  # unknown in results written before it was recorded


def reference_runs(child: Child, setup: Setup, config: DistillConfig, seeds: int, known: list[Run]) -> list[Run]:
    """The reference protocol's accuracy and seconds for each of `seeds` seeds (weights and batches), the
    child's own first; the runs already made (`known`, in seed order) are taken as they are."""
    runs = list(known[:seeds])
    for index in range(len(runs), seeds):
        seed = child.seed + 7919 * index
        scratch = child.rewrite("scratch", setup.example_input, seed).child
        (val, test), seconds = timed(lambda: reference_accuracy(scratch, setup, config, seed), setup.device)
        runs.append(Run(val, seconds, test))
    return runs


def final_run(trained: nn.Module, setup: Setup, proxy: ProxyData, final: DistillConfig) -> dict[str, float]:
    """The final distillation of a proxy-trained child, with the search's seed and the teacher labelling
    augmented batches, as `n2n compress` ends; `trained` goes on training in place."""
    accuracy_after, seconds = timed(lambda: distilled_accuracy(trained, proxy.whole, final, setup.config.seed,
                                                           setup.teacher), setup.device)
    return {"final_accuracy": accuracy_after, "final_seconds": seconds}


def mean_of_finite(values: list[float]) -> float:
    finite = [value for value in values if math.isfinite(value)]
    return statistics.fmean(finite) if finite else math.nan


def score_children(children: list[Child], setup: Setup, proxy: ProxyData, reference: DistillConfig,
                   seeds: int = 1, earlier: dict[str, list[Run]] | None = None,
                   keep: Callable[[list[dict]], None] = lambda rows: None,
                   final: DistillConfig | None = None) -> list[dict]:
    """Each child's proxy and reference accuracy; with several seeds the reference's is their mean
    and its seconds are those of one run of the protocol, so that the cost ratio stays one protocol's.
    With `final`, each proxy-trained child is then distilled with it, as n2n does with the child it keeps.
    After each child, `keep` gets the rows so far, and the earlier runs of the children still to come."""
    earlier, rows = earlier or {}, []
    for place, child in enumerate(children, start=1):
        start = copy.deepcopy(child.proxy_child)
        proxy_acc, proxy_seconds = timed(lambda: distilled_accuracy(start, proxy.data, proxy.config, child.seed),
                                         setup.device)
        finals = final_run(start, setup, proxy, final) if final is not None else {}
        known = earlier.get(key_of(child), [])
        runs = reference_runs(child, setup, reference, seeds, known)
        heldout = [heldout_accuracy(run, len(setup.data.val_labels), len(setup.test[1])) for run in runs]
        ref_acc = mean_of_finite([run.accuracy for run in runs])
        ref_seconds = statistics.fmean(run.seconds for run in runs)
        rows.append({**child_runs(child, runs), "flops": child.flops,
                     "proxy_accuracy": proxy_acc, "reference_accuracy": ref_acc,
                     "reference_heldout_accuracies": heldout, "reference_heldout_accuracy": mean_of_finite(heldout),
                     "proxy_seconds": proxy_seconds, "reference_seconds": ref_seconds, **finals})
        reused = f", {min(len(known), seeds)} of {seeds} runs reused" if known else ""
        after = f", final {finals['final_accuracy']:.4f} in {finals['final_seconds']:.1f} s" if finals else ""
        say(f"child {place}/{len(children)} {child.name} ({child.params:,} params): proxy {proxy_acc:.4f} "
            f"in {proxy_seconds:.1f} s{after}, reference {ref_acc:.4f} in {ref_seconds:.1f} s per run{reused}")
        to_come = [(later, earlier.get(key_of(later))) for later in children[place:]]
        keep(rows + [child_runs(later, later_runs) for later, later_runs in to_come if later_runs])
    return rows


def child_runs(child: Child, runs: list[Run]) -> dict[str, Any]:
    """What names a child and its reference runs, all that --reuse reads of a row."""
    return {"name": child.name, "stage": child.stage, "actions": child.actions, "params": child.params,
            "reference_accuracies": [run.accuracy for run in runs],
            "reference_run_seconds": [run.seconds for run in runs],
            "reference_test_accuracies": [run.test_accuracy for run in runs]}


def write_partial(path: Path, now_settings: dict[str, Any], now_machine: dict[str, Any], rows: list[dict]) -> None:
    """The reference runs so far, in a form --reuse takes: a stopped measurement loses at most one child."""
    write_json(path, {"settings": now_settings, "machine": now_machine, "scoring": {"rows": rows}, "partial": True})


def check_not_overwriting(partial: Path, reuse: list[str]) -> None:
    """A stopped measurement's runs are not written over unless this one takes them up."""
    if partial.exists() and partial.resolve() not in {Path(path).resolve() for path in reuse}:
        raise N2NError(f"{partial} holds the reference runs of a stopped measurement: add --reuse {partial} "
                       "to go on from them, or remove it")


def heldout_accuracy(run: Run, val_images: int, test_images: int) -> float:
    """A run's accuracy on the validation and test images together: the reference's score measured on
    every image no child trains on, so less of its spread between seeds is that of a finite test set."""
    return (run.accuracy * val_images + run.test_accuracy * test_images) / (val_images + test_images)


def child_key(name: str, stage: str, actions: list[int], params: int | None) -> str:
    """What names one child across results. The size is part of it: a run made again in the same folder
    can reach another stage parent, on which the same actions make another child."""
    return f"{name} {stage} {list(actions)} {params}"


def key_of(child: Child) -> str:
    return child_key(child.name, child.stage, child.actions, child.params)


# What must be equal for an earlier result's reference runs to be this one's: the same children in
# the same order (hence the same seeds), the same protocol and data, and the same machine for the seconds
SAME_SETTINGS = ("run", "seed", "stage", "teacher", "dataset", "train_images", "val_images", "reference")
SAME_MACHINE = ("device_name", "usable_cpus", "torch")


def earlier_runs(path: str, now_settings: dict[str, Any], now_machine: dict[str, Any]) -> dict[str, list[Run]]:
    """The reference runs of an earlier result, by child; refused when it measured something else."""
    try:
        earlier = json.loads(Path(path).read_text())
        settings_then, machine_then, rows = earlier["settings"], earlier["machine"], earlier["scoring"]["rows"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise N2NError(f"--reuse {path}: not a result of this script ({error})") from None
    settings_then, now_settings = completed(settings_then), completed(now_settings)
    for names, then, now in ((SAME_SETTINGS, settings_then, now_settings), (SAME_MACHINE, machine_then, now_machine)):
        differ = [name for name in names if plain(then.get(name)) != plain(now.get(name))]
        if differ:
            raise N2NError(f"--reuse {path}: measured with another {', '.join(differ)}")
    say_if_another_cpu(path, machine_then, now_machine)
    return {child_key(row["name"], row["stage"], row["actions"], row.get("params")): recorded_runs(row)
            for row in rows}


def completed(settings: dict[str, Any]) -> dict[str, Any]:
    """`settings` with its reference protocol's missing fields at their defaults (see reference_protocol)."""
    if not isinstance(settings.get("reference"), dict):
        return settings
    return {**settings, "reference": reference_protocol(settings["reference"])}


def say_if_another_cpu(path: str, then: dict[str, Any], now: dict[str, Any]) -> None:
    """Another model of CPU is no reason to refuse the runs (their accuracies stand), but their seconds
    and hence the cost ratio then mix two machines, which the reader of the result must be told."""
    differ = [f"{name} {then[name]} against {now.get(name)}" for name in CPU_DETAILS
              if then.get(name) is not None and then.get(name) != now.get(name)]
    if differ:
        say(f"--reuse {path}: its runs were timed on another CPU ({'; '.join(differ)}): "
            "the cost ratio mixes the two machines' seconds")


def runs_of_all(paths: list[str], now_settings: dict[str, Any], now_machine: dict[str, Any]) -> dict[str, list[Run]]:
    """The reference runs of several earlier results, by child: the longest list of each child's runs (its
    seeds come in one order, so a shorter list is the start of a longer one)."""
    merged: dict[str, list[Run]] = {}
    for path in paths:
        for key, runs in earlier_runs(path, now_settings, now_machine).items():
            if len(runs) > len(merged.get(key, [])):
                merged[key] = runs
    return merged


def recorded_runs(row: dict[str, Any]) -> list[Run]:
    """A row's runs; results from before per-run records hold one run, or the seconds of one run."""
    accuracies = row.get("reference_accuracies") or [row["reference_accuracy"]]
    seconds = row.get("reference_run_seconds") or [row["reference_seconds"]] * len(accuracies)
    tests = row.get("reference_test_accuracies") or [None] * len(accuracies)
    return [Run(*(math.nan if value is None else value for value in (accuracy, second, test)))
            for accuracy, second, test in zip(accuracies, seconds, tests)]


def rank_agreement(rows: list[dict], first: str = "proxy_accuracy",
                   second: str = "reference_accuracy") -> dict[str, float]:
    """Spearman and Kendall tau of two accuracies (by default the proxy's and the reference's), over
    the children neither lost."""
    pairs = [(r[first], r[second]) for r in rows if math.isfinite(r[first]) and math.isfinite(r[second])]
    if len(pairs) < 2:
        return {"spearman": math.nan, "kendall_tau": math.nan, "ranked_children": len(pairs)}
    proxy, reference = zip(*pairs)
    with warnings.catch_warnings():  # tied accuracies throughout give NaN, reported as such
        warnings.simplefilter("ignore")
        spearman = stats.spearmanr(proxy, reference).statistic
        kendall = stats.kendalltau(proxy, reference).statistic
    return {"spearman": float(spearman), "kendall_tau": float(kendall), "ranked_children": len(pairs)}


def by_stage(rows: list[dict]) -> dict[str, dict[str, float]]:
    """The rank agreement among the children of each stage: the search compares a child only with its
    own stage's children, which share its parent."""
    stages = dict.fromkeys(row["stage"] for row in rows)
    return {stage: rank_agreement([row for row in rows if row["stage"] == stage]) for stage in stages}


def reference_self_agreement(rows: list[dict], runs: str = "reference_accuracies") -> float:
    """The reference against itself: the mean Spearman between the rankings of two of its seeds. A proxy
    cannot rank the children much better against one seed of the reference than this."""
    seeds = min(len(row[runs]) for row in rows)
    pairs = [[{"a": row[runs][one], "b": row[runs][other]} for row in rows]
             for one in range(seeds) for other in range(one + 1, seeds)]
    spearmans = [rank_agreement(pair, "a", "b")["spearman"] for pair in pairs]
    return mean_of_finite(spearmans)


def scoring_summary(rows: list[dict], proxy: ProxyData) -> dict[str, Any]:
    """Totals: the proxy carries the one-off teacher pass, which the search pays once for all its children."""
    proxy_total = proxy.teacher_seconds + sum(r["proxy_seconds"] for r in rows)
    reference_total = sum(r["reference_seconds"] for r in rows)
    share = proxy.teacher_seconds / max(1, len(rows))
    return {"children": len(rows), "teacher_logit_seconds": proxy.teacher_seconds,
            "proxy_seconds": proxy_total, "reference_seconds": reference_total,
            "proxy_seconds_per_child": proxy_total / max(1, len(rows)),
            "reference_seconds_per_child": reference_total / max(1, len(rows)),
            "cost_ratio": reference_total / proxy_total if proxy_total else math.nan,
            **rank_agreement(rows), "by_stage": by_stage(rows),
            "reference_seed_spearman": reference_self_agreement(rows),
            "heldout": heldout_summary(rows), **final_summary(rows),
            "rows": [{**r, "proxy_seconds_with_share": r["proxy_seconds"] + share} for r in rows]}


def heldout_summary(rows: list[dict]) -> dict[str, float]:
    """The rank agreement, and the reference's with itself, with the reference scored on validation and
    test images together; NaN where the runs predate test accuracies."""
    return {**rank_agreement(rows, second="reference_heldout_accuracy"),
            "reference_seed_spearman": reference_self_agreement(rows, "reference_heldout_accuracies")}


def final_summary(rows: list[dict]) -> dict[str, Any]:
    """How the proxy and the reference rank the children against n2n's own final distillation of each."""
    if not rows or "final_accuracy" not in rows[0]:
        return {}
    return {"final": {"proxy": rank_agreement(rows, second="final_accuracy"),
                      "reference": rank_agreement(rows, "reference_accuracy", "final_accuracy")}}


# ---- what the run records ------------------------------------------------------------------------
def settings(args: argparse.Namespace, setup: Setup, reference: DistillConfig) -> dict[str, Any]:
    return {**vars(args), "dataset": setup.dataset, "train_images": len(setup.data.train_labels),
            "val_images": len(setup.data.val_labels), "proxy": to_dict(setup.config.proxy),
            "proxy_init": setup.config.init, "proxy_seed": setup.config.seed,
            "reference": reference_protocol(reference)}


def reference_protocol(reference: DistillConfig | dict[str, Any]) -> dict[str, Any]:
    """The reference's settings as results record them. Recorded ones (a dict) get the fields added to
    DistillConfig since at their defaults, which is how the code that wrote them behaved."""
    recorded = asdict(reference) if isinstance(reference, DistillConfig) else reference
    return {**asdict(DistillConfig()), **recorded, "init": "scratch"}


def targets(scoring: dict[str, Any], speed: dict[str, Any]) -> dict[str, Any]:
    met = {"cost_ratio": scoring["cost_ratio"] >= TARGETS["cost_ratio_at_least"],
           "spearman": (scoring["spearman"] >= TARGETS["spearman_at_least"]
                        and scoring["ranked_children"] >= TARGETS["children_at_least"]),
           "throughput": speed["throughput_ratio"] >= TARGETS["throughput_ratio_at_least"]}
    return {**TARGETS, "met": met}


# ---- the printed table ---------------------------------------------------------------------------
def scoring_table(scoring: dict[str, Any]) -> list[str]:
    return ["## Scoring children: proxy against reference", "",
            "| children | proxy s | reference s | proxy s/child | reference s/child | cost ratio | Spearman "
            "| Kendall tau |", "|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {scoring['children']} | {number(scoring['proxy_seconds'], 1)} | "
            f"{number(scoring['reference_seconds'], 1)} | {number(scoring['proxy_seconds_per_child'])} | "
            f"{number(scoring['reference_seconds_per_child'])} | {number(scoring['cost_ratio'], 1)}x | "
            f"{number(scoring['spearman'], 3)} | {number(scoring['kendall_tau'], 3)} |", "",
            f"The proxy's time includes the one-off teacher-logit pass ({number(scoring['teacher_logit_seconds'])} s).",
            "", *stage_lines(scoring["by_stage"]), *self_agreement_line(scoring), *heldout_lines(scoring),
            *final_lines(scoring)]


def self_agreement_line(scoring: dict[str, Any]) -> list[str]:
    spearman = scoring["reference_seed_spearman"]
    if not measured(spearman):
        return []
    return [f"- the reference against itself (two of its seeds, mean over pairs): Spearman {number(spearman, 3)}"]


def heldout_lines(scoring: dict[str, Any]) -> list[str]:
    heldout = scoring.get("heldout") or {}
    if not measured(heldout.get("spearman")):
        return []
    itself = heldout["reference_seed_spearman"]
    against_itself = f"; against itself {number(itself, 3)}" if measured(itself) else ""
    return [f"- the reference scored on validation and test images together: Spearman "
            f"{number(heldout['spearman'], 3)}, Kendall tau {number(heldout['kendall_tau'], 3)}{against_itself}"]


def final_lines(scoring: dict[str, Any]) -> list[str]:
    final = scoring.get("final")
    if not final:
        return []
    return [f"- against the final distillation of each proxy-trained child (the config's final:): the proxy "
            f"Spearman {number(final['proxy']['spearman'], 3)}, Kendall tau {number(final['proxy']['kendall_tau'], 3)}; "
            f"the reference Spearman {number(final['reference']['spearman'], 3)}"]


def stage_lines(stages: dict[str, dict[str, float]]) -> list[str]:
    return [f"- among the {agreement['ranked_children']} {stage} children: Spearman "
            f"{number(agreement['spearman'], 3)}, Kendall tau {number(agreement['kendall_tau'], 3)}"
            for stage, agreement in stages.items()]


def children_table(scoring: dict[str, Any]) -> list[str]:
    lines = ["| child | stage | params | proxy accuracy | reference accuracy | proxy s | reference s |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for row in scoring["rows"]:
        lines.append(f"| {row['name']} | {row['stage']} | {row['params']:,} | {number(row['proxy_accuracy'], 4)} | "
                     f"{number(row['reference_accuracy'], 4)} | {number(row['proxy_seconds_with_share'])} | "
                     f"{number(row['reference_seconds'])} |")
    return lines


def markdown(result: dict[str, Any]) -> str:
    met = ", ".join(f"{name} {'met' if ok else 'not met'}" for name, ok in result["targets"]["met"].items())
    lines = [*scoring_table(result["scoring"]), "", *children_table(result["scoring"]), "",
             *executor_table(result["executors"]), "", *speed_table(result["throughput"]), "",
             f"Targets: {met}. Machine: {machine_line(result['machine'])}."]
    return "\n".join(lines)


# ---- the whole measurement -----------------------------------------------------------------------
def choose_children(args: argparse.Namespace) -> tuple[Setup, list[Child]]:
    if args.run:
        run = load_run(args.run)
        setup = make_setup(args, run.setup["teacher"], run.setup.get("dataset"))
        candidates = run_candidates(run, setup, args.seed, args.stage)
    else:
        setup = make_setup(args, args.teacher, None)
        if args.stage is not None and args.stage not in setup.config.stages:
            raise N2NError(f"--stage {args.stage}: {args.config} searches only {', '.join(setup.config.stages)}")
        candidates = sampled_candidates(setup, args.seed, attempts=50 * args.children, only=args.stage)
    children = keep_distinct(candidates, args.children, setup.config.init, setup.example_input)
    if len(children) < args.children:
        say(f"only {len(children)} valid distinct children found (asked for {args.children})")
    if not children:
        raise N2NError("no valid child to score")
    return setup, children


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    setup, children = choose_children(args)
    reference = replace(REFERENCE, epochs=args.reference_epochs)
    now_settings, now_machine = settings(args, setup, reference), machine(setup.device)
    earlier = runs_of_all(args.reuse, now_settings, now_machine)
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"search_cost-{setup.device.type}.json"
    partial = out.with_suffix(".partial.json")
    check_not_overwriting(partial, args.reuse)
    proxy = prepare_proxy(setup)
    say(f"the reference runs are kept in {partial} after each child: should this stop, --reuse {partial} "
        "takes them up")
    keep = functools.partial(write_partial, partial, now_settings, now_machine)
    final = setup.config.final if args.final else None
    rows = score_children(children, setup, proxy, reference, args.reference_seeds, earlier, keep, final)
    scoring = scoring_summary(rows, proxy)
    executors = None if args.skip_executors else measure_executors(args, children, proxy)
    speed = training_speed(children[0], proxy, args.repeats)
    result = {"settings": now_settings, "machine": now_machine, "scoring": scoring,
              "executors": executors, "throughput": speed, "targets": targets(scoring, speed)}
    write_json(out, result)
    partial.unlink(missing_ok=True)
    print(markdown(result))
    print(f"\nwritten to {out}")
    return result


if __name__ == "__main__":
    try:
        main()
    except N2NError as error:  # a bad path, name or option: one line, as the n2n command gives it
        raise SystemExit(f"search_cost: error: {error}") from None
