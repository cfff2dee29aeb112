"""How well a cheap screen ranks a finished search's children, against the proxy that scored them.

A screen scores a child with its inherited weights, its BatchNorm statistics recomputed on C
training images (EagleEye's adaptive BatchNorm), then one proxy epoch on T training images (none
when T is 0), then its validation accuracy: in a search config, `proxy: {calibrate: C, subset: T}`
(`epochs: 0` for no training). Each of the run's trained children is built again on its stage's
parent, screened with each C:T of --screens, and ranked against the proxy accuracy the search
recorded for it (Spearman and Kendall tau, within each stage, where the search compares
children), beside the ranking by parameter count and by multiply-accumulates alone. A screen that
ranks as the proxy does at a fraction of its seconds can screen many children and leave the proxy,
or a longer score, to the best few (`rescore_top`).

With --final, what all of these try to foresee is measured too: each child is trained with the
run's proxy (its recorded score comes back) and then given the run's final distillation, as
`n2n compress` ends with the child it keeps, and every ranking (the screens, the proxy, the
parameters, the MACs) is also set against the test accuracy that leaves. (A run made with
`rescore_top` final-distilled its kept child after the re-score; here every child gets the proxy
only before the final distillation.)

    .venv/bin/python benchmarks/screen.py results/deep-vgg16/runs/n2n-10x-seed0 --screens 0:0,1024:0,1024:2000
"""
from __future__ import annotations

import argparse
import math
import sys
from argparse import Namespace
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn

from measure import machine, say, timed, write_json
from search_cost import Child, make_setup, mean_of_finite, positive, rank_agreement, run_candidates

from n2n.config import SearchConfig, from_dict
from n2n.distill.data import DistillData
from n2n.distill.trainer import DistillConfig, distill
from n2n.errors import N2NError
from n2n.report.summary import load_run
from n2n.search.state import candidate_key
from n2n.training import NonFiniteLossError, accuracy


FINAL = "final_test_accuracy"
# what a ranking is set against, as the table names it
TARGETS = {"proxy_accuracy": "proxy", FINAL: "final test accuracy"}


@dataclass(frozen=True)
class Screen:
    calibrate: int = 0  # training images BatchNorm statistics are recomputed on (0: inherited)
    train: int = 0  # training images of one proxy epoch after that (0: no training)
    proxy_seed: int | None = None  # set: the run's own proxy instead, each child's seed moved by this much

    @property
    def key(self) -> str:
        if self.proxy_seed is not None:
            return f"proxy_seed_plus_{self.proxy_seed}"
        return f"screen_c{self.calibrate}_t{self.train}"

    def describe(self) -> str:
        if self.proxy_seed is not None:
            return f"the run's proxy again, seed + {self.proxy_seed}"
        calibrated = f"BatchNorm on {self.calibrate} images" if self.calibrate else "inherited BatchNorm"
        return f"{calibrated}, {f'1 epoch on {self.train} images' if self.train else 'no training'}"

    def config(self, proxy: DistillConfig) -> DistillConfig:
        """How the child trains, on the images `data` gives it."""
        if self.proxy_seed is not None:
            return replace(proxy, subset=None)
        return replace(proxy, epochs=1 if self.train else 0, subset=None, calibrate=self.calibrate)

    def data(self, proxy_data: DistillData) -> DistillData:
        """The run's proxy subset, or its start: the same images for every child, as in a search."""
        return proxy_data.head(self.train) if self.proxy_seed is None and self.train else proxy_data

    def seed(self, child_seed: int) -> int:
        return child_seed + (self.proxy_seed or 0)


def screens(text: str) -> list[Screen]:
    """CALIBRATE:TRAIN pairs separated by commas, e.g. 0:0,1024:0,1024:2000."""
    try:
        pairs = [tuple(int(value) for value in part.split(":")) for part in text.split(",")]
    except ValueError:
        pairs = []
    if not pairs or any(len(pair) != 2 or min(pair) < 0 for pair in pairs):
        raise argparse.ArgumentTypeError(f"expected CALIBRATE:TRAIN pairs of image counts (at least 0) separated "
                                         f"by commas, got {text!r}")
    return [Screen(*pair) for pair in pairs]


def offsets(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected seed offsets of at least 0 separated by commas, got {text!r}")
    return values


def parse_args(argv: list[str] | None) -> Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a finished or interrupted run folder (n2n compress --out)")
    parser.add_argument("--screens", type=screens, default=screens("0:0,1024:0,1024:2000"),
                        help="screens to measure, CALIBRATE:TRAIN each: training images to recompute BatchNorm "
                             "statistics on, then to train one epoch on (default 0:0,1024:0,1024:2000)")
    parser.add_argument("--proxy-seeds", type=offsets, default=[],
                        help="also train each child with the run's own proxy, its seed moved by each of these "
                             "(e.g. 1,2): how well the proxy agrees with itself, and what it costs here now; "
                             "0 gives back the run's own scores")
    parser.add_argument("--final", action="store_true",
                        help="also give each child the run's proxy and then its final distillation, and rank "
                             "everything against the test accuracy that leaves (minutes per child)")
    parser.add_argument("--stage", choices=("removal", "shrinkage"), help="only this stage's children")
    parser.add_argument("--children", type=positive, help="at most this many children, in a seeded random order")
    parser.add_argument("--data-dir", help="where the run's data set lies (default: where n2n finds it)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, help="also write every row and setting as JSON")
    return parser.parse_args(argv)


def recorded_proxy(run: Any) -> dict[str, dict[str, Any]]:
    """The search's record of each trained child, by the name run_candidates gives it."""
    return {candidate_key(line["stage"], line["epoch"], line["rollout"]): line for line in run.candidates}


def screen_row(child: Child, record: dict[str, Any], setup: Any, proxy_data: Any, chosen: list[Screen],
               final: bool) -> dict:
    row = {"name": child.name, "stage": child.stage, "actions": child.actions, "params": record["params"],
           "flops": record.get("flops"), "proxy_accuracy": record["val_accuracy"], "proxy_seconds": record["seconds"]}
    for screen in chosen:
        rewrite = rebuilt(child, record, setup)
        config, data, seed = screen.config(setup.config.proxy), screen.data(proxy_data), screen.seed(child.seed)
        accuracy, seconds = timed(lambda: screened_accuracy(rewrite.child, data, config, seed, setup.teacher),
                                  setup.device)
        row[screen.key], row[f"{screen.key}_seconds"] = accuracy, seconds
    if final:
        row[FINAL], row[f"{FINAL}_seconds"] = timed(lambda: final_accuracy(rebuilt(child, record, setup).child, setup,
                                                                           proxy_data, child.seed), setup.device)
    return row


def rebuilt(child: Child, record: dict[str, Any], setup: Any) -> Any:
    """The child's rewrite as the search made it; an error where the run was made by other code."""
    rewrite = child.rewrite(setup.config.init, setup.example_input)
    if rewrite.params != record["params"]:
        raise N2NError(f"{child.name} rebuilt has {rewrite.params:,} parameters where the run recorded "
                       f"{record['params']:,}: the run was made by other code")
    return rewrite


def final_accuracy(child: nn.Module, setup: Any, proxy_data: DistillData, child_seed: int) -> float:
    """Test accuracy after the run's proxy and then its final distillation (on every training image, the
    teacher labelling augmented batches, with the run's seed), as `n2n compress` ends; NaN where either
    diverged."""
    proxy = replace(setup.config.proxy, subset=None)
    if math.isnan(screened_accuracy(child, proxy_data, proxy, child_seed, setup.teacher)):
        return math.nan
    if math.isnan(screened_accuracy(child, setup.data, setup.config.final, setup.config.seed, setup.teacher)):
        return math.nan
    return accuracy(child.eval(), *setup.test)


def screened_accuracy(child: nn.Module, data: DistillData, config: DistillConfig, seed: int,
                      teacher: nn.Module) -> float:
    """Its validation accuracy after the screen; NaN where training diverged (the search's invalid child),
    which the rank agreement leaves out."""
    try:
        return distill(child, data, config, seed=seed, teacher=teacher).val_accuracy
    except NonFiniteLossError:
        return math.nan


def agreement(rows: list[dict], chosen: list[Screen], target: str = "proxy_accuracy") -> list[dict[str, Any]]:
    """Per stage: how each screen, and the size alone, ranks the children against `target` (the
    recorded proxy accuracy, or the final test accuracy, against which the proxy is ranked too)."""
    table = []
    for stage in dict.fromkeys(row["stage"] for row in rows):
        group = [row for row in rows if row["stage"] == stage]
        proxy_seconds = sum(row["proxy_seconds"] for row in group) / len(group)

        def entry(name: str, key: str, seconds: float, accuracy: float = math.nan) -> dict[str, Any]:
            return {"stage": stage, "screen": name, "against": TARGETS[target], "seconds": seconds,
                    "proxy_seconds": proxy_seconds, "children": len(group), "mean_accuracy": accuracy,
                    **rank_agreement(group, key, target)}

        for screen in chosen:
            table.append(entry(screen.describe(), screen.key,
                               sum(row[f"{screen.key}_seconds"] for row in group) / len(group),
                               mean_of_finite([row[screen.key] for row in group])))
        if target != "proxy_accuracy":
            table.append(entry("the run's proxy, as recorded", "proxy_accuracy", proxy_seconds,
                               mean_of_finite([row["proxy_accuracy"] for row in group])))
        table.append(entry("parameter count", "params", 0.0))
        if all(row["flops"] is not None for row in group):
            table.append(entry("multiply-accumulates", "flops", 0.0))
    return table


def markdown(table: list[dict[str, Any]]) -> str:
    lines = ["| stage | screen | children | mean accuracy (%) | seconds per child | proxy's seconds per child "
             "| ranked against | Spearman | Kendall tau |", "|---|---|---:|---:|---:|---:|---|---:|---:|"]
    for row in table:
        accuracy = "-" if math.isnan(row["mean_accuracy"]) else f"{100 * row['mean_accuracy']:.2f}"
        lines.append(f"| {row['stage']} | {row['screen']} | {row['children']} | {accuracy} | {row['seconds']:.2f} "
                     f"| {row['proxy_seconds']:.1f} | {row['against']} | {row['spearman']:.3f} "
                     f"| {row['kendall_tau']:.3f} |")
    return "\n".join(lines)


def measure(args: Namespace) -> dict[str, Any]:
    run = load_run(args.run)
    config = from_dict(SearchConfig, run.config, f"{args.run}/config.yaml")
    seed = config.seed  # the run's seed drew its validation split: the same images here
    setup_args = Namespace(device=args.device, data_dir=args.data_dir, seed=seed, limit=None, train_limit=None)
    setup = make_setup(setup_args, run.setup["teacher"], run.setup.get("dataset"), config)
    setup.data.attach_teacher(setup.teacher)
    proxy_data = setup.data.subset(setup.config.proxy.subset, seed)
    records = recorded_proxy(run)
    children = list(run_candidates(run, setup, seed, args.stage))[: args.children]
    if not children:
        raise N2NError(f"{args.run} has no trained child{f' in its {args.stage} stage' if args.stage else ''}")
    chosen = args.screens + [Screen(proxy_seed=offset) for offset in args.proxy_seeds]
    rows = []
    for number, child in enumerate(children, start=1):
        rows.append(screen_row(child, records[child.name], setup, proxy_data, chosen, args.final))
        finished = f", final {rows[-1][FINAL]:.4f}" if args.final else ""
        say(f"[{number}/{len(children)}] {child.name}: proxy {rows[-1]['proxy_accuracy']:.4f}, screens "
            + ", ".join(f"{rows[-1][screen.key]:.4f}" for screen in chosen) + finished)
    table = agreement(rows, chosen) + (agreement(rows, chosen, FINAL) if args.final else [])
    return {"settings": {"run": str(args.run), "screens": [asdict(screen) for screen in chosen],
                         "stage": args.stage, "children": len(rows), "seed": seed, "final": args.final},
            "machine": machine(setup.device), "rows": rows, "agreement": table}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = measure(args)
    except (N2NError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(markdown(result["agreement"]))
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
