"""benchmarks/rankings.py: the rank agreements it prints are scipy's, per result and pooled, and a file
that is no finished result of search_cost.py gets one line, not a traceback."""
from __future__ import annotations

import json
import math
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from benchscripts import BENCHMARKS, load_benchmark


def write_result(path: Path, proxy, seeds, params, run: str = "runs/a", **extra) -> str:
    """A result of search_cost.py reduced to what a ranking reads."""
    rows = [{"name": f"child-{i}", "stage": "shrinkage", "actions": [i], "proxy_accuracy": p,
             "reference_accuracies": runs, "reference_run_seconds": [1.0] * len(runs),
             "reference_accuracy": float(np.mean(runs)), "params": n}
            for i, (p, runs, n) in enumerate(zip(proxy, seeds, params))]
    path.write_text(json.dumps({"settings": {"run": run}, "scoring": {"rows": rows}, **extra}))
    return str(path)


def children(count: int, seeds: int, seed: int):
    """Accuracies that follow the size, with noise: the proxy and every reference seed."""
    rng = np.random.default_rng(seed)
    params = rng.integers(20_000, 120_000, count)
    truth = 0.85 + params / 2_000_000
    proxy = (truth + rng.normal(0, 0.01, count)).tolist()
    runs = (truth[:, None] + rng.normal(0, 0.01, (count, seeds))).tolist()
    return proxy, runs, params.tolist()


def spearman(first, second) -> float:
    return stats.spearmanr(first, second).statistic


def test_each_ranking_is_scipys_spearman_with_an_interval_around_it(tmp_path):
    proxy, runs, params = children(20, 3, seed=0)
    path = write_result(tmp_path / "one.json", proxy, runs, params)

    [found] = load_benchmark("rankings").main([path, "--resamples", "999"])

    mean = [np.mean(r) for r in runs]
    assert (found.children, found.seeds, found.most_seeds) == (20, 3, 3)
    assert found.proxy == pytest.approx(spearman(proxy, mean))
    assert found.proxy_per_seed == pytest.approx([spearman(proxy, [r[k] for r in runs]) for k in range(3)])
    pairs = [spearman([r[j] for r in runs], [r[k] for r in runs]) for j, k in ((0, 1), (0, 2), (1, 2))]
    assert found.seed_against_seed == pytest.approx(np.mean(pairs))
    assert found.params == pytest.approx(spearman(params, mean))
    low, high = found.proxy_interval
    assert -1 <= low < found.proxy < high <= 1


def test_more_children_narrow_the_interval(tmp_path):
    few = write_result(tmp_path / "few.json", *children(10, 1, seed=1))
    many = write_result(tmp_path / "many.json", *children(200, 1, seed=1))
    rankings = load_benchmark("rankings")

    widths = [high - low for r in (rankings.main([few, "--resamples", "999"])[0],
                                   rankings.main([many, "--resamples", "999"])[0])
              for low, high in [r.proxy_interval]]

    assert widths[1] < widths[0] / 2


def test_results_are_also_ranked_pooled_against_the_seeds_all_of_them_have(tmp_path, capsys):
    first, second = children(20, 3, seed=2), children(12, 1, seed=3)
    paths = [write_result(tmp_path / "three.json", *first), write_result(tmp_path / "one.json", *second, run="runs/b")]
    out = tmp_path / "rankings.json"

    found = load_benchmark("rankings").main([*paths, "--resamples", "99", "--out", str(out)])

    assert [r.name for r in found] == ["three", "one", "all pooled"]
    pooled = found[-1]
    proxy = first[0] + second[0]
    runs = first[1] + second[1]
    assert (pooled.children, pooled.seeds, pooled.most_seeds) == (32, 1, 3)
    assert pooled.proxy == pytest.approx(spearman(proxy, [np.mean(r) for r in runs]))
    assert pooled.proxy_per_seed == pytest.approx([spearman(proxy, [r[0] for r in runs])])
    assert math.isnan(pooled.seed_against_seed)  # one seed is all the second result has
    assert "| all pooled | 32 | 1 to 3 |" in capsys.readouterr().out
    written = json.loads(out.read_text())
    assert [r["name"] for r in written["rankings"]] == ["three", "one", "all pooled"]
    assert written["rankings"][-1]["seed_against_seed"] is None


def test_pooled_a_child_two_results_of_one_run_share_counts_once(tmp_path, capsys):
    proxy, runs, params = children(20, 3, seed=4)
    other_proxy = (np.asarray(proxy) + np.random.default_rng(5).normal(0, 0.01, 20)).tolist()
    first = write_result(tmp_path / "first.json", proxy, runs, params)
    # another proxy on the first 12 of the same children, as --reuse of the first result measures it
    second = write_result(tmp_path / "second.json", other_proxy[:12], runs[:12], params[:12])
    # the same names on another run: other networks, counted
    other_run = write_result(tmp_path / "other.json", proxy[:5], runs[:5], params[:5], run="runs/b")

    *_, pooled = load_benchmark("rankings").main([first, second, other_run, "--resamples", "99"])

    assert pooled.children == 25
    means = [np.mean(r) for r in runs]
    assert pooled.proxy == pytest.approx(spearman(proxy + proxy[:5], means + means[:5]))  # the first named's
    assert f"12 children of {second} are counted once" in capsys.readouterr().err


@pytest.mark.parametrize("content, says", [
    (None, "cannot read"),
    ("not json {", "is not JSON"),
    (json.dumps({"settings": {}}), "is not a result of search_cost.py"),
    (json.dumps({"settings": {}, "scoring": {"rows": [{"name": "a", "reference_accuracies": [0.9]}]},
                 "partial": True}), "is a partial result"),
    (json.dumps({"settings": {}, "scoring": {"rows": [{"name": "a", "reference_accuracies": [0.9],
                                                        "reference_run_seconds": [1.0], "params": 5}]}}),
     "a child has no 'proxy_accuracy'"),
])
def test_a_file_that_is_no_finished_result_is_named_and_refused(tmp_path, content, says):
    path = tmp_path / "result.json"
    if content is not None:
        path.write_text(content)
    rankings = load_benchmark("rankings")

    with pytest.raises(rankings.BadResult, match=says) as refused:
        rankings.main([str(path)])

    assert str(path) in str(refused.value)


def test_from_the_command_line_a_bad_file_is_one_line_and_a_failure(tmp_path, monkeypatch):
    missing = tmp_path / "missing.json"
    load_benchmark("rankings")  # its imports loaded once, as the command would load them
    monkeypatch.setattr(sys, "argv", ["rankings.py", str(missing)])

    with pytest.raises(SystemExit) as stopped:
        runpy.run_path(str(BENCHMARKS / "rankings.py"), run_name="__main__")

    # Python prints a string exit code as the one line on stderr and exits with 1
    assert stopped.value.code == f"rankings: error: cannot read {missing}: No such file or directory"
