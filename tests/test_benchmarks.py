"""benchmarks/search_cost.py at a tiny size: it measures what its table says, and records it as JSON."""
from __future__ import annotations

import importlib.util
import json
import math
from itertools import islice
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from benchscripts import load_benchmark
from n2n.config import SearchConfig
from n2n.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")


def load_script():
    return load_benchmark("search_cost")


def finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


@pytest.mark.data
@pytest.mark.slow
def test_a_tiny_search_cost_run_writes_every_measurement(fashion_mnist_root, tmp_path, capsys):
    out = tmp_path / "cost.json"
    load_script().main(["--data-dir", str(fashion_mnist_root), "--limit", "600", "--children", "4",
                        "--reference-epochs", "1", "--reference-seeds", "2", "--executors", "inline,process",
                        "--workers", "1",
                        "--executor-children", "2", "--repeats", "1", "--out", str(out)])
    result = json.loads(out.read_text())

    scoring = result["scoring"]
    assert scoring["children"] == len(scoring["rows"]) == 4
    for key in ("teacher_logit_seconds", "proxy_seconds", "reference_seconds", "cost_ratio", "spearman",
                "kendall_tau"):
        assert finite(scoring[key]), key
    assert -1 <= scoring["spearman"] <= 1 and -1 <= scoring["kendall_tau"] <= 1
    assert scoring["proxy_seconds"] > scoring["teacher_logit_seconds"] > 0
    for row in scoring["rows"]:
        assert row["params"] > 0 and row["proxy_seconds"] > 0 and row["reference_seconds"] > 0
        assert 0 <= row["proxy_accuracy"] <= 1 and 0 <= row["reference_accuracy"] <= 1
        assert len(row["reference_accuracies"]) == 2  # two seeds, scored by their mean
        assert row["reference_accuracy"] == pytest.approx(sum(row["reference_accuracies"]) / 2)
        assert all(0 <= test <= 1 for test in row["reference_test_accuracies"])
        # 60 validation and 600 test images in this run, weighted by their numbers
        heldout = [(val * 60 + test * 600) / 660
                   for val, test in zip(row["reference_accuracies"], row["reference_test_accuracies"])]
        assert row["reference_heldout_accuracies"] == pytest.approx(heldout)
    assert len({row["name"] for row in scoring["rows"]}) == 4
    stages = {row["stage"] for row in scoring["rows"]}
    assert set(scoring["by_stage"]) == stages
    assert sum(agreement["ranked_children"] for agreement in scoring["by_stage"].values()) == 4

    executors = result["executors"]["rows"]
    assert [(row["executor"], row["workers"]) for row in executors] == [("inline", 1), ("process", 1)]
    assert all(row["children"] == 2 and row["failed"] == 0 and row["candidates_per_minute"] > 0 for row in executors)

    speed = result["throughput"]
    assert speed["images"] == result["settings"]["train_images"] == 540
    assert all(finite(speed[key]) and speed[key] > 0
               for key in ("n2n_images_per_second", "bare_images_per_second", "throughput_ratio"))

    assert result["settings"]["reference"] | {"epochs": 5} == {
        "loss": "l2", "epochs": 5, "subset": None, "batch_size": 128, "lr": 5e-4, "weight_decay": 5e-4,
        "temperature": 4.0, "alpha": 0.9, "augment": False, "calibrate": 0, "init": "scratch"}
    assert result["settings"]["reference_epochs"] == 1 and result["settings"]["proxy"]["subset"] == 15000
    assert {"platform", "cpu_count", "torch", "device_name"} <= set(result["machine"])
    assert set(result["targets"]["met"]) == {"cost_ratio", "spearman", "throughput"}
    printed = capsys.readouterr().out
    assert "| children | proxy s | reference s |" in printed and "| process | 1 | 2 |" in printed

    # a third seed on top of the first two, which are taken from the result above as they are
    more = tmp_path / "more.json"
    load_script().main(["--data-dir", str(fashion_mnist_root), "--limit", "600", "--children", "4",
                        "--reference-epochs", "1", "--reference-seeds", "3", "--skip-executors", "--repeats", "1",
                        "--final", "--reuse", str(out), "--out", str(more)])
    more_scoring = json.loads(more.read_text())["scoring"]
    assert all(0 <= row["final_accuracy"] <= 1 and row["final_seconds"] > 0 for row in more_scoring["rows"])
    assert more_scoring["final"]["proxy"]["ranked_children"] == 4
    for before, after in zip(scoring["rows"], more_scoring["rows"]):
        assert after["name"] == before["name"]
        assert after["reference_accuracies"][:2] == before["reference_accuracies"]
        assert after["reference_run_seconds"][:2] == before["reference_run_seconds"]
        assert after["reference_test_accuracies"][:2] == before["reference_test_accuracies"]
        assert len(after["reference_accuracies"]) == 3 and after["reference_run_seconds"][2] > 0
    assert "2 of 3 runs reused" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.partial.json"))  # the finished results replace the runs kept on the way


def test_executors_without_ray_are_timed_and_ray_is_named_as_left_out(monkeypatch):
    script, rates = load_script(), load_benchmark("executor_rates")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(rates.importlib.util, "find_spec",
                        lambda name, *rest: None if name == "ray" else real_find_spec(name, *rest))
    args = script.parse_args(["--executors", "inline,process,ray", "--workers", "1,2"])
    plans, notes = rates.executor_plans(args)
    assert plans == [("inline", 1), ("process", 1), ("process", 2)]
    assert len(notes) == 1 and notes[0].startswith("ray: not installed")


def test_stage_keeps_the_children_of_one_stage():
    script = load_script()
    torch.manual_seed(0)
    teacher = create_model("conv4", in_channels=1, num_classes=10).eval()
    setup = script.Setup(teacher, None, None, torch.randn(1, 1, 28, 28), SearchConfig(), torch.device("cpu"), "test")
    for only in ("removal", "shrinkage", None):
        stages = {child.stage for child in islice(script.sampled_candidates(setup, 0, 6, only), 6)}
        assert stages == ({only} if only else {"removal", "shrinkage"})
    assert script.parse_args(["--stage", "shrinkage"]).stage == "shrinkage"


def test_rank_agreement_is_given_for_each_stage_apart():
    script = load_script()
    rows = [{"stage": "removal", "proxy_accuracy": p, "reference_accuracy": r} for p, r in ((0.7, 0.8), (0.8, 0.9))]
    rows += [{"stage": "shrinkage", "proxy_accuracy": p, "reference_accuracy": r}
             for p, r in ((0.9, 0.91), (0.88, 0.92), (0.87, 0.93))]
    stages = script.by_stage(rows)
    assert stages["removal"]["spearman"] == pytest.approx(1.0)
    assert stages["shrinkage"]["spearman"] == pytest.approx(-1.0)
    assert script.rank_agreement(rows)["ranked_children"] == 5


def earlier_result(tmp_path: Path, **settings) -> Path:
    row = {"name": "shrinkage-e1-r0", "stage": "shrinkage", "actions": [1, 2], "params": 5000,
           "reference_accuracy": 0.9, "reference_seconds": 120.0}  # as results were written before per-run records
    result = {"settings": {"run": "runs/a", "seed": 0, "reference": {"epochs": 5}, **settings},
              "machine": {"device_name": "cpu", "usable_cpus": 2, "torch": "2"}, "scoring": {"rows": [row]}}
    path = tmp_path / "earlier.json"
    path.write_text(json.dumps(result))
    return path


def test_reuse_takes_an_earlier_results_runs_of_the_same_children(tmp_path):
    script = load_script()
    now = {"run": "runs/a", "seed": 0, "reference": {"epochs": 5}}
    runs = script.earlier_runs(str(earlier_result(tmp_path)), now,
                               {"device_name": "cpu", "usable_cpus": 2, "torch": "2", "platform": "other"})
    (run,) = runs.pop(script.child_key("shrinkage-e1-r0", "shrinkage", [1, 2], 5000))
    assert not runs and run[:2] == (0.9, 120.0) and math.isnan(run.test_accuracy)  # not recorded then

    class Untrainable:
        seed = 0

        def rewrite(self, *args, **kwargs):
            raise AssertionError("a reused run is trained again")

    known = [(0.9, 120.0), (0.8, 110.0)]
    assert script.reference_runs(Untrainable(), None, None, 2, known) == known
    assert script.reference_runs(Untrainable(), None, None, 1, known) == known[:1]


def test_reuse_takes_a_result_written_before_a_reference_field_existed_while_it_is_at_its_default(tmp_path):
    script = load_script()
    machine = {"device_name": "cpu", "usable_cpus": 2, "torch": "2"}
    now = {"run": "runs/a", "seed": 0, "reference": {"epochs": 5, "calibrate": 0}}  # the result has no calibrate
    assert len(script.earlier_runs(str(earlier_result(tmp_path)), now, machine)) == 1
    with pytest.raises(script.N2NError, match="measured with another reference$"):
        script.earlier_runs(str(earlier_result(tmp_path)), now | {"reference": {"epochs": 5, "calibrate": 256}},
                            machine)


@pytest.mark.parametrize("change, named", [({"seed": 1}, "seed"), ({"reference": {"epochs": 1}}, "reference")])
def test_reuse_refuses_a_result_of_other_children_or_protocol(tmp_path, change, named):
    script = load_script()
    now = {"run": "runs/a", "seed": 0, "reference": {"epochs": 5}} | change
    with pytest.raises(script.N2NError, match=f"measured with another {named}$"):
        script.earlier_runs(str(earlier_result(tmp_path)), now, {"device_name": "cpu", "usable_cpus": 2, "torch": "2"})
    (tmp_path / "not.json").write_text("{}")
    with pytest.raises(script.N2NError, match="not a result of this script"):
        script.earlier_runs(str(tmp_path / "not.json"), now, {})


def timed_on(tmp_path: Path, cpu: dict) -> str:
    path = earlier_result(tmp_path)
    result = json.loads(path.read_text())
    result["machine"] |= cpu
    path.write_text(json.dumps(result))
    return str(path)


@pytest.mark.parametrize("then, warned", [
    ({"cpu_model": "family 25 model 17", "cpu_capability": "AVX512"}, "family 25 model 17 against family 25 model 1"),
    ({"cpu_model": "family 25 model 1", "cpu_capability": "AVX2"}, None),
    ({}, None),  # results written before the CPU was recorded: nothing to compare
])
def test_reuse_takes_runs_timed_on_another_cpu_and_says_so(tmp_path, capsys, then, warned):
    script = load_script()
    now = {"device_name": "cpu", "usable_cpus": 2, "torch": "2", "cpu_model": "family 25 model 1",
           "cpu_capability": "AVX2"}
    runs = script.earlier_runs(timed_on(tmp_path, then), {"run": "runs/a", "seed": 0, "reference": {"epochs": 5}}, now)
    assert len(runs) == 1
    said = capsys.readouterr().err
    if warned:
        assert warned in said and "AVX512 against AVX2" in said and "mixes" in said
    else:
        assert said == ""


def test_the_cpu_model_is_read_from_cpuinfo_and_named_in_the_table(tmp_path):
    script = load_benchmark("measure")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n"
                       "model name\t: AMD EPYC\n\nprocessor\t: 1\ncpu family\t: 23\nmodel\t\t: 49\n")
    assert script.cpu_model(cpuinfo) == "family 25 model 1"
    assert script.cpu_fields(cpuinfo)["model name"] == "AMD EPYC"
    assert script.cpu_model(tmp_path / "none") is None
    machine = {"device": "cpu", "device_name": "AMD EPYC", "usable_cpus": 2, "torch": "2.13.0",
               "cpu_model": "family 25 model 1", "cpu_capability": "AVX2"}
    assert script.machine_line(machine) == "AMD EPYC (family 25 model 1, AVX2), 2 CPUs, torch 2.13.0"
    gpu = machine | {"device": "cuda:0", "device_name": "NVIDIA H200"}
    assert script.machine_line(gpu) == "NVIDIA H200, 2 CPUs, torch 2.13.0"


def test_the_reference_against_itself_is_the_mean_spearman_over_pairs_of_seeds():
    script = load_script()
    runs = [(0.80, 0.80, 0.93), (0.85, 0.85, 0.92), (0.90, 0.90, 0.91)]  # seeds 0 and 1 agree, seed 2 reverses
    rows = [{"reference_accuracies": list(accuracies)} for accuracies in runs]
    assert script.reference_self_agreement(rows) == pytest.approx((1 - 1 - 1) / 3)
    assert math.isnan(script.reference_self_agreement([{"reference_accuracies": [0.9]}] * 3))  # one seed


def test_the_heldout_line_names_the_references_self_agreement_only_when_it_has_two_seeds():
    script = load_script()
    one_seed = {"heldout": {"spearman": 0.6, "kendall_tau": 0.5, "reference_seed_spearman": math.nan}}
    two_seeds = {"heldout": {"spearman": 0.6, "kendall_tau": 0.5, "reference_seed_spearman": 0.7}}
    assert "against itself" not in script.heldout_lines(one_seed)[0]
    assert script.heldout_lines(two_seeds)[0].endswith("against itself 0.700")
    assert script.heldout_lines({"heldout": {"spearman": math.nan}}) == []  # runs without test accuracies


def scoring_without_training() -> tuple[SimpleNamespace, SimpleNamespace]:
    """What score_children reads of the set-up and the proxy when distilling is patched out."""
    setup = SimpleNamespace(data=SimpleNamespace(val_labels=[0] * 6), test=(None, [0] * 10),
                            device=torch.device("cpu"))
    return setup, SimpleNamespace(data=None, config=None)


def test_a_child_rebuilt_on_another_parent_does_not_take_the_runs_of_its_namesake(tmp_path, monkeypatch):
    script = load_script()
    monkeypatch.setattr(script, "distilled_accuracy", lambda *args: 0.5)
    given = {}

    def reference_runs(child, setup, config, seeds, known):
        given[child.name] = known
        return known or [script.Run(0.8, 10.0, 0.7)]

    monkeypatch.setattr(script, "reference_runs", reference_runs)
    earlier, now = tmp_path / "earlier.json", ({"run": "runs/a"}, {"device_name": "cpu"})
    then = [script.Child(name, "shrinkage", [1], None, None, 0, params=5000) for name in ("same", "moved")]
    script.write_partial(earlier, *now, [script.child_runs(child, [script.Run(0.9, 100.0, 0.85)]) for child in then])
    # the same actions: on the run's parent as it was, and on a parent the run reached when made again
    children = [script.Child(name, "shrinkage", [1], None, None, 0, params=params,
                             proxy_child=torch.nn.Linear(1, 1)) for name, params in (("same", 5000), ("moved", 7000))]
    script.score_children(children, *scoring_without_training(), None, 1, script.runs_of_all([str(earlier)], *now))
    assert given == {"same": [(0.9, 100.0, 0.85)], "moved": []}


def test_a_stopped_measurement_keeps_its_runs_and_those_of_the_children_to_come(tmp_path, monkeypatch):
    script = load_script()
    monkeypatch.setattr(script, "distilled_accuracy", lambda *args: 0.5)
    monkeypatch.setattr(script, "reference_runs",
                        lambda child, setup, config, seeds, known: known + [script.Run(0.8, 10.0, 0.7)])
    children = [script.Child(name, "shrinkage", [index], None, None, index, proxy_child=torch.nn.Linear(1, 1))
                for index, name in enumerate(("first", "second", "third"))]
    setup, proxy = scoring_without_training()
    earlier = {script.child_key("third", "shrinkage", [2], 0): [script.Run(0.9, 100.0, 0.85)]}
    partial = tmp_path / "cost.partial.json"
    now = ({"run": "runs/a"}, {"device_name": "cpu"})

    class Stopped(Exception):
        pass

    def keep_then_stop(rows):
        script.write_partial(partial, *now, rows)
        raise Stopped

    with pytest.raises(Stopped):
        script.score_children(children, setup, proxy, None, 2, earlier, keep_then_stop)
    kept = script.runs_of_all([str(partial)], *now)
    assert kept == {script.child_key("first", "shrinkage", [0], 0): [(0.8, 10.0, 0.7)],  # the one scored
                    script.child_key("third", "shrinkage", [2], 0): [(0.9, 100.0, 0.85)]}  # carried as it was

    # another result holding more runs of a child wins for that child
    longer = tmp_path / "longer.json"
    script.write_partial(longer, *now, [script.child_runs(children[0], [script.Run(0.8, 10.0, 0.7),
                                                                           script.Run(0.6, 11.0, 0.5)])])
    merged = script.runs_of_all([str(partial), str(longer)], *now)
    assert merged[script.child_key("first", "shrinkage", [0], 0)] == [(0.8, 10.0, 0.7), (0.6, 11.0, 0.5)]
    assert merged[script.child_key("third", "shrinkage", [2], 0)] == [(0.9, 100.0, 0.85)]
    assert script.parse_args(["--reuse", "a.json", "b.json"]).reuse == ["a.json", "b.json"]


def test_a_write_stopped_halfway_leaves_the_kept_runs_whole(tmp_path, monkeypatch):
    script = load_script()
    partial = tmp_path / "cost.partial.json"
    now = ({"run": "runs/a"}, {"device_name": "cpu"})
    child = script.Child("first", "shrinkage", [0], None, None, 0)
    script.write_partial(partial, *now, [script.child_runs(child, [script.Run(0.8, 10.0, 0.7)])])
    write_text = Path.write_text

    def half_then_stop(path, text, *args, **kwargs):
        write_text(path, text[: len(text) // 2], *args, **kwargs)
        raise OSError("no space left on device")

    monkeypatch.setattr(Path, "write_text", half_then_stop)
    with pytest.raises(OSError):
        script.write_partial(partial, *now, [script.child_runs(child, [script.Run(0.6, 11.0, 0.5)])])
    monkeypatch.undo()
    assert script.runs_of_all([str(partial)], *now) == {
        script.child_key("first", "shrinkage", [0], 0): [(0.8, 10.0, 0.7)]}
    assert [path.name for path in tmp_path.iterdir()] == ["cost.partial.json"]  # no temporary file left


def test_the_runs_of_a_stopped_measurement_are_not_written_over_unless_taken_up(tmp_path):
    script = load_script()
    partial = tmp_path / "cost.partial.json"
    script.check_not_overwriting(partial, [])  # nothing there yet
    partial.write_text("{}")
    with pytest.raises(script.N2NError, match="stopped measurement: add --reuse .*cost.partial.json"):
        script.check_not_overwriting(partial, [str(tmp_path / "other.json")])
    script.check_not_overwriting(partial, [str(tmp_path / "other.json"), str(partial)])
    assert partial.read_text() == "{}"


def test_the_final_distillation_goes_on_from_the_proxy_trained_child(monkeypatch):
    script = load_script()
    calls = []

    def distilled(child, data, config, seed, teacher=None):
        calls.append((child, data, config, seed, teacher))
        return 0.9 if teacher is not None else 0.5

    monkeypatch.setattr(script, "distilled_accuracy", distilled)
    monkeypatch.setattr(script, "reference_runs", lambda child, setup, config, seeds, known: [script.Run(0.8, 10.0)])
    children = [script.Child("only", "shrinkage", [0], None, None, 5, proxy_child=torch.nn.Linear(1, 1))]
    setup = SimpleNamespace(data=SimpleNamespace(val_labels=[0] * 6), test=(None, [0] * 10),
                            device=torch.device("cpu"), config=SimpleNamespace(seed=3), teacher="the teacher")
    proxy = SimpleNamespace(data="the subset", config="the proxy", whole="every image")

    row, = script.score_children(children, setup, proxy, None, final="the final")
    (proxy_call, final_call) = calls
    assert final_call[0] is proxy_call[0] and proxy_call[0] is not children[0].proxy_child  # trained on, a copy
    assert proxy_call[1:] == ("the subset", "the proxy", 5, None)
    assert final_call[1:] == ("every image", "the final", 3, "the teacher")  # the search's seed, as compress
    assert row["proxy_accuracy"] == 0.5 and row["final_accuracy"] == 0.9 and row["final_seconds"] >= 0

    calls.clear()
    row, = script.score_children(children, setup, proxy, None)
    assert len(calls) == 1 and "final_accuracy" not in row


def test_the_proxy_and_the_reference_are_ranked_against_the_final_distillation():
    script = load_script()
    rows = [{"proxy_accuracy": p, "reference_accuracy": r, "final_accuracy": f}
            for p, r, f in ((0.80, 0.90, 0.91), (0.81, 0.89, 0.92), (0.82, 0.88, 0.93))]
    final = script.final_summary(rows)["final"]
    assert final["proxy"]["spearman"] == pytest.approx(1.0) and final["proxy"]["ranked_children"] == 3
    assert final["reference"]["spearman"] == pytest.approx(-1.0)
    line, = script.final_lines({"final": final})
    assert "the proxy Spearman 1.000" in line and "the reference Spearman -1.000" in line
    no_final = [{"proxy_accuracy": 0.8, "reference_accuracy": 0.9}]
    assert script.final_summary(no_final) == {} and script.final_lines(script.final_summary(no_final)) == []


@pytest.mark.data
def test_the_final_distillation_augments_as_compress_does(fashion_mnist_root):
    script = load_script()
    args = script.parse_args(["--data-dir", str(fashion_mnist_root), "--limit", "600"])
    data = script.make_setup(args, str(script.DEFAULT_TEACHER), None).data
    # Fashion-MNIST's crop and flip, the crops padded with black (mean 0.2860, std 0.3530), as `n2n compress`
    assert data.crop_padding == 2 and data.hflip
    assert data.crop_fill == pytest.approx((-0.2860 / 0.3530,))


@pytest.mark.slow
def test_final_distill_gives_a_kept_child_the_student_compress_reported(tmp_path, capsys):
    from clihelpers import make_compress_workspace

    from test_compress import FAST

    workspace = make_compress_workspace(tmp_path, FAST)
    run = workspace["run"]
    summary = json.loads((run / "summary.json").read_text())
    kept = next(run.glob(f"stage*-{summary['stages'][-1]['name']}.pt"))
    capsys.readouterr()
    load_benchmark("final_distill").main([str(kept), "--teacher", str(workspace["teacher"]), "--config",
                                          str(workspace["config"]), "--data-dir", str(workspace["mnist"])])
    row = capsys.readouterr().out.strip().splitlines()[-1]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1] == f"{summary['student']['params']:,}"
    assert cells[4] == f"{100 * summary['student']['test_accuracy']:.2f} %"


@pytest.mark.data
def test_own_model_trains_compresses_and_reloads_a_model_from_a_file(fashion_mnist_root, tmp_path, capsys):
    out = tmp_path / "own.json"
    search = {"epochs_per_stage": 1, "rollouts": 2, "proxy": {"subset": 200}, "final": {"epochs": 1},
              "progress": False}
    row = load_benchmark("own_model").main([
        "--model-file", str(Path(__file__).with_name("custom_models.py")), "--model-class", "TorchvisionResNet18",
        "--model-kwargs", '{"width": 8}', "--data-dir", str(fashion_mnist_root), "--limit", "600", "--epochs", "1",
        "--compression", "4", "--search", json.dumps(search), "--out", str(out)])

    assert json.loads(out.read_text()) == row
    assert row["student_params"] * 4 <= row["teacher_params"]
    # the student saved and rebuilt on a fresh instance of the class scores as the one compress returned
    assert row["reloaded_test_accuracy"] == pytest.approx(row["student_test_accuracy"], abs=1e-6)
    assert "| student | " in capsys.readouterr().out


def test_own_model_names_a_class_the_file_lacks(tmp_path):
    with pytest.raises(SystemExit, match="defines no class Missing"):
        load_benchmark("own_model").main(["--model-file", str(Path(__file__).with_name("custom_models.py")),
                                          "--model-class", "Missing"])
