"""`n2n experiment NAME`: experiment files, scales, resumable runs, tables and plots; every
experiment in experiments/ run end to end at its tiny scale on the real Fashion-MNIST."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from clihelpers import run_error
from n2n.cli import main
from n2n.errors import ConfigError
from n2n.experiments import list_experiments, load_experiment, run_experiment
from n2n.experiments.manifold import naive_reward, n2n_reward
from n2n.experiments.spec import variant_seeds, variant_settings

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO)  # experiment files name paths relative to the checkout


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_the_experiment_files_are_listed_and_search_configs_are_not(in_repo):
    names = list_experiments()
    assert {"stage-curves", "algorithms", "policy-lr", "rollouts", "transfer", "reward-manifold",
            "baselines", "budget"} <= set(names)
    assert not {"conv4-floor", "cpu-budget", "paper"} & set(names)


def test_a_scale_deepens_the_search_options_and_replaces_the_rest(in_repo):
    default = load_experiment("algorithms")
    tiny = load_experiment("algorithms", "tiny")
    assert default.search["epochs_per_stage"] == 10 and default.seeds == [0, 1, 2]
    assert tiny.search["epochs_per_stage"] == 2 and tiny.seeds == [0] and tiny.limit == 600
    assert tiny.search["proxy"] == {**default.search["proxy"], "subset": 200}  # one level deeper: lr kept
    assert tiny.search["min_accuracy"] is None


def test_variant_settings_fill_in_the_output_folder_and_seed(in_repo, tmp_path):
    transfer = load_experiment("transfer")
    teacher, dataset, options = variant_settings(transfer, "transfer", 2, tmp_path)
    assert options["policy_from"] == f"{tmp_path}/runs/pretrain-seed2" and options["seed"] == 2
    assert teacher == "teachers/vgg11-quarter-fashion-mnist.pt" and dataset is None
    assert variant_settings(transfer, "pretrain", 0, tmp_path)[0] == "teachers/conv4-fashion-mnist.pt"
    assert variant_seeds(load_experiment("baselines"), "prune") == [0]


@pytest.mark.parametrize("text, words", [
    ("title: x\nvariants: {}\n", "at least one variant"),
    ("title: x\nkind: nope\n", "kind must be one of"),
    ("title: x\nvariants: {a: {}}\nseeds: [zero]\n", "seeds must be a list"),
    ("title: x\nvariants: {a: {}}\ncolour: red\n", "unknown key(s)"),
])
def test_a_bad_experiment_file_names_what_is_wrong(tmp_path, text, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        load_experiment(str(write(tmp_path / "bad.yaml", text)))


def test_an_unknown_scale_lists_the_scales(in_repo):
    with pytest.raises(ConfigError, match="no scale 'huge'.*tiny.*paper"):
        load_experiment("rollouts", "huge")


def test_a_bad_search_option_stops_the_experiment_before_any_run(tmp_path):
    path = write(tmp_path / "e.yaml", "title: x\nteacher: t.pt\nvariants: {a: {}, b: {rollouts: 0}}\n")
    with pytest.raises(ConfigError, match="variant b"):
        run_experiment(str(path), out=tmp_path / "out")
    assert not (tmp_path / "out" / "runs").exists()


def test_a_missing_teacher_without_a_recipe_says_how_to_train_it(tmp_path):
    path = write(tmp_path / "e.yaml", "title: x\nteacher: nowhere.pt\nvariants: {a: {}}\n")
    with pytest.raises(ConfigError, match="n2n train-teacher .*--out nowhere.pt"):
        run_experiment(str(path), out=tmp_path / "out")


def test_cli_unknown_experiment_is_one_line_naming_the_known_ones(in_repo, capsys):
    err = run_error(["experiment", "nope"], capsys)
    assert "no experiment 'nope'" in err and "baselines" in err


def test_the_reward_manifold_is_asymmetric_where_the_naive_one_is_not(in_repo, tmp_path):
    assert naive_reward(0.9, 0.5) == pytest.approx(naive_reward(0.5, 0.9))
    assert n2n_reward(0.9, 0.5) < n2n_reward(0.5, 0.9)  # small and inaccurate gets less
    assert n2n_reward(0.5, 0.9) == pytest.approx(0.75 * 0.9)
    folder = run_experiment("reward-manifold", out=tmp_path / "m")
    assert (folder / "manifold.png").stat().st_size > 10_000
    assert "| 0.9 | 0.5 | 0.495 | 0.450 |" in (folder / "table.md").read_text()


RUN_EXPERIMENTS = ["stage-curves", "algorithms", "policy-lr", "rollouts", "transfer", "baselines", "budget",
                   "deep-vgg16", "deep-resnet18"]


@pytest.mark.slow
@pytest.mark.parametrize("name", RUN_EXPERIMENTS)
def test_each_experiment_runs_at_tiny_scale_and_writes_its_table_and_plot(in_repo, tmp_path, fashion_mnist_root,
                                                                         name):
    experiment = load_experiment(name, "tiny")
    folder = run_experiment(name, scale="tiny", out=tmp_path / name, data_dir=fashion_mnist_root, progress=False)
    rows = json.loads((folder / "results.json").read_text())["rows"]
    expected = sum(len(variant_seeds(experiment, v)) for v in experiment.variants)
    assert len(rows) == expected and all(row["params"] > 0 for row in rows)
    table = (folder / "table.md").read_text()
    for variant in experiment.table or experiment.variants:
        assert f"| {variant} |" in table
    assert (folder / "curves.png").stat().st_size > 10_000
    assert (folder / "students.png").stat().st_size > 10_000


@pytest.mark.slow
def test_a_rerun_keeps_finished_runs_and_resumes_none_twice(in_repo, tmp_path, fashion_mnist_root):
    folder = run_experiment("policy-lr", scale="tiny", out=tmp_path / "lr", data_dir=fashion_mnist_root,
                            progress=False)
    summaries = {path: path.stat().st_mtime_ns for path in (folder / "runs").glob("*/summary.json")}
    assert len(summaries) == 3
    run_experiment("policy-lr", scale="tiny", out=folder, data_dir=fashion_mnist_root, progress=False)
    assert {path: path.stat().st_mtime_ns for path in summaries} == summaries


def test_the_table_header_names_the_teachers_of_the_rows_it_shows():
    from n2n.experiments.results import RunRow, teacher_accuracies
    from n2n.experiments.spec import Experiment

    def row(variant, teacher):
        return RunRow(variant=variant, seed=0, params=1, flops=10, compression=1.0, test_accuracy=0.9,
                      teacher_test_accuracy=teacher, teacher_params=100, seconds=0.0, children=0, curves={})

    rows = [row("pretrain", 0.924), row("scratch", 0.9106), row("transfer", 0.9106)]
    transfer = Experiment(name="t", title="t", variants={"pretrain": {}, "scratch": {}, "transfer": {}},
                          table=["scratch", "transfer"])
    assert teacher_accuracies(transfer, rows) == [0.9106]
    everything = Experiment(name="t", title="t", variants={"pretrain": {}, "scratch": {}})
    assert teacher_accuracies(everything, rows) == [0.9106, 0.924]


def test_the_students_plot_shows_every_measured_student_and_is_skipped_without_one(tmp_path):
    from n2n.experiments.plots import plot_students
    from n2n.experiments.results import RunRow

    def row(variant, seed, params, accuracy):
        return RunRow(variant=variant, seed=seed, params=params, flops=90 * params, compression=200_000 / params,
                      test_accuracy=accuracy, teacher_test_accuracy=0.924, teacher_params=200_000, seconds=1.0,
                      children=1, curves={})

    rows = [row("n2n-10x", 0, 19_500, 0.909), row("n2n-10x", 1, 19_300, 0.910), row("prune-10x", 0, 19_760, 0.913),
            row("prune-20x", 0, 9_900, 0.897)]
    path = plot_students(tmp_path / "students.png", "conv4", rows)
    assert path == tmp_path / "students.png" and path.stat().st_size > 10_000
    unmeasured = [row("n2n-10x", 0, 19_500, None)]
    assert plot_students(tmp_path / "none.png", "conv4", unmeasured) is None
    assert not (tmp_path / "none.png").exists()


def test_the_table_gives_each_variants_parameters_macs_and_accuracy_over_its_seeds():
    from n2n.experiments.results import RunRow, table_lines
    from n2n.experiments.spec import Experiment

    def row(variant, params, flops, accuracy):
        return RunRow(variant=variant, seed=0, params=params, flops=flops, compression=100_000 / params,
                      test_accuracy=accuracy, teacher_test_accuracy=0.92, teacher_params=100_000, seconds=10.0,
                      children=5, curves={})

    rows = [row("n2n", 10_000, 3_000_000, 0.91), row("n2n", 10_200, 5_000_000, 0.90), row("prune", 9_900, None, 0.905)]
    lines = table_lines(Experiment(name="t", title="t", variants={"n2n": {}, "prune": {}}), rows)
    assert lines[0].startswith("| variant | seeds | params | MACs (M) |")
    assert lines[2] == "| n2n | 2 | 10,100 ± 141 | 4.00 ± 1.41 | 9.9 ± 0.1x | 90.50 ± 0.71 | 1.50 ± 0.71 | 5 ± 0 | 10 ± 0 |"
    assert lines[3].startswith("| prune | 1 | 9,900 | - | 10.1x | 90.50 |")


TWO_VARIANTS = "title: x\nteacher: nowhere.pt\nvariants: {a: {}, b: {}}\nseeds: [0, 1]\n"


def finished_run(folder: Path, params: int, accuracy: float) -> None:
    """A run folder as a finished run leaves it, as far as the experiment's table reads it."""
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text(json.dumps({"kind": "teacher", "params": 1000, "val_accuracy": 0.9}) + "\n")
    summary = {"student": {"params": params, "flops": 10 * params, "test_accuracy": accuracy},
               "teacher": {"params": 1000, "test_accuracy": 0.92}, "compression": 1000 / params, "stages": [],
               "search_seconds": 1.0}
    (folder / "summary.json").write_text(json.dumps(summary))


def test_table_only_runs_nothing_and_tables_every_finished_run(tmp_path):
    path = write(tmp_path / "e.yaml", TWO_VARIANTS)
    out = tmp_path / "out"
    finished_run(out / "runs" / "a-seed0", 100, 0.90)
    finished_run(out / "runs" / "b-seed1", 50, 0.85)
    run_experiment(str(path), out=out, table_only=True)  # the teacher is missing: nothing may have run
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert sorted((row["variant"], row["seed"]) for row in rows) == [("a", 0), ("b", 1)]
    assert "| a | 1 | 100 |" in (out / "table.md").read_text()
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["a-seed0", "b-seed1"]


def test_variants_and_seeds_pick_the_runs_and_one_held_elsewhere_is_skipped(tmp_path, monkeypatch):
    import n2n.experiments.runner as runner
    from n2n.errors import RunInUseError

    path = write(tmp_path / "e.yaml", TWO_VARIANTS)
    (tmp_path / "nowhere.pt").write_text("")  # a teacher file exists, so the runs are attempted
    monkeypatch.chdir(tmp_path)
    attempted = []

    def held_elsewhere(run_dir, *args):
        attempted.append(run_dir.name)
        raise RunInUseError(f"{run_dir} is in use")

    monkeypatch.setattr(runner, "run_once", held_elsewhere)
    run_experiment(str(path), out=tmp_path / "out", variants=["b"], seeds=[1, 0])
    assert attempted == ["b-seed0", "b-seed1"]  # in the experiment's order; a held run does not stop the rest
    assert json.loads((tmp_path / "out" / "results.json").read_text())["rows"] == []


@pytest.mark.parametrize("variants, seeds, words", [
    (["a", "zz"], None, "has no variant zz; it has a, b"),
    (["a"], [7], "has no run of seed(s) 7 among the variants picked; their seeds: 0, 1"),
])
def test_picking_runs_the_experiment_does_not_have_is_refused_before_any_folder(tmp_path, variants, seeds, words):
    path = write(tmp_path / "e.yaml", TWO_VARIANTS)
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        run_experiment(str(path), out=tmp_path / "out", variants=variants, seeds=seeds)
    assert not (tmp_path / "out").exists()


def test_table_only_where_no_run_was_made_is_refused_and_makes_no_folder(tmp_path):
    path = write(tmp_path / "e.yaml", TWO_VARIANTS)
    with pytest.raises(ConfigError, match="holds no runs of experiment e to tabulate"):
        run_experiment(str(path), out=tmp_path / "typo", table_only=True)
    assert not (tmp_path / "typo").exists()


def test_a_figure_experiment_has_no_runs_to_pick(in_repo, tmp_path):
    with pytest.raises(ConfigError, match="has no runs: --variants, --seeds and --table-only do not apply"):
        run_experiment("reward-manifold", out=tmp_path / "m", seeds=[0])
    assert not (tmp_path / "m").exists()


def test_cli_picking_runs_without_an_experiment_is_one_line(capsys):
    assert "need an experiment NAME" in run_error(["experiment", "--seeds", "0"], capsys)


def test_cli_bad_seeds_are_one_line(tmp_path, capsys):
    path = write(tmp_path / "e.yaml", TWO_VARIANTS)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(["experiment", str(path), "--seeds", "one", "--out", str(tmp_path / "out")])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and line.startswith("n2n: error: ") and "comma-separated whole numbers" in line
    assert not (tmp_path / "out").exists()


def test_a_teacher_another_process_trains_meanwhile_is_not_trained_again(tmp_path, monkeypatch):
    import fcntl
    import threading

    import n2n.experiments.runner as runner
    import n2n.teacher

    path = write(tmp_path / "e.yaml", "title: x\nteacher: '{out}/t.pt'\nteachers: {'{out}/t.pt': {model: conv4, "
                                      "dataset: fashion-mnist}}\nvariants: {a: {}}\n")
    experiment, out = load_experiment(str(path)), tmp_path / "out"
    out.mkdir()
    trained = []
    monkeypatch.setattr(n2n.teacher, "train_teacher", lambda *args, **kwargs: trained.append(args))
    with open(out / runner.TEACHER_LOCK, "a") as held:  # another process is training the teacher
        fcntl.flock(held, fcntl.LOCK_EX)
        waiting = threading.Thread(target=runner.ensure_teacher,
                                   args=(experiment, str(out / "t.pt"), out, None, None, False))
        waiting.start()
        waiting.join(timeout=1)
        assert waiting.is_alive()  # it waits for the lock
        (out / "t.pt").write_bytes(b"trained")  # the other process's teacher
    waiting.join(timeout=10)
    assert not waiting.is_alive() and trained == []
