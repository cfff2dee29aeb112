"""How faithfully the proxy ranks children, over one or more results of search_cost.py.

For each result, and for all their children pooled (each child once: results of one run share
children, such as a result and another proxy on the same reference runs): the proxy's Spearman
correlation with the reference (the mean of its seeds) and a bootstrap 95 % interval for it
over the children; the proxy against each reference seed alone; the reference's seeds against
each other; and the parameter count against the reference, the ranking a proxy has to beat to
show more than a child's size. Twenty children leave a Spearman near 0.8 uncertain by about ±0.1, which the
interval makes plain.

    .venv/bin/python benchmarks/rankings.py benchmarks/results/search_cost-cpu-shrinkage-3seeds-contribution.json \\
        benchmarks/results/search_cost-cpu-shrinkage-fresh-3seeds-contribution.json
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

from measure import number, say, write_json
from search_cost import child_key, mean_of_finite, rank_agreement, recorded_runs, reference_self_agreement


class BadResult(Exception):
    """A file that is not a finished result of search_cost.py."""


@dataclass
class Children:
    """What a ranking needs of each child: the proxy's accuracy, each reference seed's, the size, and
    what names the child across results (its run, name, stage, actions and size)."""

    proxy: list[float] = field(default_factory=list)
    seeds: list[list[float]] = field(default_factory=list)
    params: list[int] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    def __add__(self, other: Children) -> Children:
        return Children(self.proxy + other.proxy, self.seeds + other.seeds, self.params + other.params,
                        self.keys + other.keys)

    def take(self, keep: list[int]) -> Children:
        return Children(*([values[i] for i in keep] for values in (self.proxy, self.seeds, self.params, self.keys)))

    @property
    def reference(self) -> list[float]:
        return [mean_of_finite(runs) for runs in self.seeds]


def load_children(path: str) -> Children:
    try:
        result = json.loads(Path(path).read_text())
        rows = result["scoring"]["rows"]
    except OSError as error:
        raise BadResult(f"cannot read {path}: {error.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadResult(f"{path} is not JSON") from None
    except (KeyError, TypeError):
        raise BadResult(f"{path} is not a result of search_cost.py (no scoring rows)") from None
    if result.get("partial"):
        raise BadResult(f"{path} is a partial result: finish it with search_cost.py --reuse first")
    run_path = (result.get("settings") or {}).get("run")
    try:
        return Children([row["proxy_accuracy"] for row in rows],
                        [[run.accuracy for run in recorded_runs(row)] for row in rows],
                        [row["params"] for row in rows],
                        [f"{run_path} {child_key(row['name'], row['stage'], row['actions'], row['params'])}"
                         for row in rows])
    except KeyError as missing:
        raise BadResult(f"{path}: a child has no {missing}") from None


def pooled(sets: dict[str, Children]) -> Children:
    """Every result's children, each child once, as the first result named gives it: a child counted
    twice would weigh twice in the ranking, and two results of one run share children."""
    pool, seen = Children(), set()
    for path, children in sets.items():
        keep = [i for i, key in enumerate(children.keys) if key not in seen]
        if len(keep) < len(children.keys):
            say(f"all pooled: {len(children.keys) - len(keep)} children of {path} are counted once, "
                "from a result named before it")
        seen.update(children.keys)
        pool += children.take(keep)
    return pool


def spearman(first: list[float], second: list[float]) -> float:
    pairs = [{"a": a, "b": b} for a, b in zip(first, second)]
    return rank_agreement(pairs, "a", "b")["spearman"]


def rank_correlation(first: np.ndarray, second: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman along an axis, for many resamples at once: the Pearson correlation of the ranks."""
    first = stats.rankdata(first, axis=axis)
    second = stats.rankdata(second, axis=axis)
    first = first - first.mean(axis=axis, keepdims=True)
    second = second - second.mean(axis=axis, keepdims=True)
    spread = np.sqrt((first ** 2).sum(axis=axis) * (second ** 2).sum(axis=axis))
    with np.errstate(invalid="ignore", divide="ignore"):  # a resample of one child repeated: no ranking
        return (first * second).sum(axis=axis) / spread


def interval(first: list[float], second: list[float], resamples: int, seed: int) -> tuple[float, float]:
    """A percentile bootstrap over the children, each drawn with both its accuracies."""
    found = stats.bootstrap((np.asarray(first), np.asarray(second)), rank_correlation, paired=True,
                            vectorized=True, n_resamples=resamples, method="percentile",
                            random_state=np.random.default_rng(seed))
    return float(found.confidence_interval.low), float(found.confidence_interval.high)


@dataclass
class Ranking:
    name: str
    children: int
    seeds: int  # the fewest reference seeds of a child: the proxy is ranked against each of these alone
    most_seeds: int
    proxy: float
    proxy_interval: tuple[float, float]
    proxy_per_seed: list[float]
    seed_against_seed: float
    params: float


def ranking(name: str, children: Children, resamples: int, seed: int) -> Ranking:
    reference = children.reference
    seeds = min(len(runs) for runs in children.seeds)
    per_seed = [spearman(children.proxy, [runs[k] for runs in children.seeds]) for k in range(seeds)]
    return Ranking(name, len(children.proxy), seeds, max(len(runs) for runs in children.seeds),
                   spearman(children.proxy, reference),
                   interval(children.proxy, reference, resamples, seed), per_seed,
                   reference_self_agreement([{"runs": runs} for runs in children.seeds], "runs"),
                   spearman(children.params, reference))


def table(rankings: list[Ranking]) -> str:
    lines = ["| children of | children | reference seeds | proxy vs reference | 95 % interval "
             "| proxy vs each seed alone | seed vs seed | parameter count vs reference |",
             "|---|---:|---:|---:|---|---|---:|---:|"]
    for r in rankings:
        low, high = r.proxy_interval
        per_seed = ", ".join(number(value, 3) for value in r.proxy_per_seed)
        seeds = f"{r.seeds}" if r.seeds == r.most_seeds else f"{r.seeds} to {r.most_seeds}"
        lines.append(f"| {r.name} | {r.children} | {seeds} | {number(r.proxy, 3)} | {number(low, 3)} to "
                     f"{number(high, 3)} | {per_seed} | {number(r.seed_against_seed, 3)} | {number(r.params, 3)} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", help="finished results of search_cost.py")
    parser.add_argument("--resamples", type=int, default=9999, help="bootstrap resamples of the children")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    parser.add_argument("--out", help="also write the rankings here as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[Ranking]:
    args = parse_args(argv)
    sets = {path: load_children(path) for path in args.results}
    rankings = [ranking(Path(path).stem, children, args.resamples, args.seed) for path, children in sets.items()]
    if len(sets) > 1:
        rankings.append(ranking("all pooled", pooled(sets), args.resamples, args.seed))
    print(table(rankings))
    if args.out:
        write_json(Path(args.out), {"results": args.results, "resamples": args.resamples, "seed": args.seed,
                                    "rankings": [asdict(r) for r in rankings]})
    return rankings


if __name__ == "__main__":
    try:
        main()
    except BadResult as error:
        raise SystemExit(f"rankings: error: {error}") from None
