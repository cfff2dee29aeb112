"""Baselines behind `--method`: random search without policy updates, uniform width scaling,
L1 pruning to a parameter budget, plain kd into a small zoo model; all scored like N2N."""
from __future__ import annotations

import json

import pytest
import torch

from clihelpers import compress_args, make_compress_workspace, run_error
from n2n import compress
from n2n.arch import count_params
from n2n.checkpoint import load_checkpoint
from n2n.errors import ConfigError
from n2n.baselines.students import kd_students, uniform_students
from n2n.config import SearchConfig
from n2n.models import create_model
from n2n.search.records import CandidateRecord
from n2n.cli import main
from test_search import FAST, conv4_teacher, labelled_by

pytestmark = pytest.mark.usefixtures("one_thread")


def run(method: str, **options):
    teacher = conv4_teacher()
    train, val = labelled_by(teacher)
    return teacher, compress(teacher, train, val, progress=False, **{**FAST, "method": method, **options})


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_compress_workspace(tmp_path_factory.mktemp("baselines"), FAST)


def candidates(result) -> list[CandidateRecord]:
    return [r for r in result.history if isinstance(r, CandidateRecord)]


def test_random_search_spends_the_same_budget_and_never_moves_its_policies():
    teacher = conv4_teacher()
    train, val = labelled_by(teacher)
    random = compress(teacher, train, val, progress=False, **{**FAST, "method": "random"})
    n2n = compress(teacher, train, val, progress=False, **FAST)
    assert len(candidates(random)) == len(candidates(n2n)) == 2 * FAST["epochs_per_stage"] * FAST["rollouts"]
    fresh = compress(teacher, train, val, progress=False, **{**FAST, "method": "random", "epochs_per_stage": 1})
    for moved, start in zip(random.stages, fresh.stages):  # the policy after 3 epochs is the one after 1
        for name, tensor in moved.policy.state_dict().items():
            assert torch.equal(tensor, start.policy.state_dict()[name]), name
    assert count_params(random.student) < count_params(teacher)


def test_uniform_scores_one_student_per_ratio_below_one_and_keeps_the_best():
    teacher, result = run("uniform", ratios=(0.25, 0.5, 1.0))
    records = candidates(result)
    assert [r.stage for r in records] == ["uniform", "uniform"]
    assert len({r.params for r in records}) == 2 and all(r.valid for r in records)
    assert all(r.params < count_params(teacher) for r in records)
    best = max(records, key=lambda r: r.reward)
    assert result.stages[0].best.params == best.params
    assert count_params(result.student) == best.params
    assert result.summary["stages"][0]["name"] == "uniform"


def test_uniform_students_start_from_scratch_not_from_the_teachers_filters():
    teacher = conv4_teacher()
    config = SearchConfig(max_params=count_params(teacher) // 4)
    (proposal,) = uniform_students(teacher, torch.randn(1, 1, 28, 28), config)
    first = lambda model: next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d)).weight
    kept, original = first(proposal.rewrite.child).flatten(1), first(teacher).flatten(1)
    assert not any(torch.equal(filter_, teacher_filter) for filter_ in kept for teacher_filter in original)


def budget_run(method: str):
    """A quarter of the teacher's parameters as the budget: (budget, the run, its one scored student)."""
    budget = count_params(conv4_teacher()) // 4
    _, result = run(method, max_params=budget)
    (record,) = candidates(result)
    return budget, result, record


@pytest.mark.parametrize("method", ["uniform", "prune", "global", "kd"])
def test_each_baseline_meets_the_budget_close_under_it(method):
    budget, result, record = budget_run(method)
    assert record.valid and record.params <= budget
    assert record.params > budget * 0.8  # the widest within the budget, not far below it
    assert result.summary["student"]["params"] == count_params(result.student) == record.params


@pytest.mark.parametrize("method", ["uniform", "prune"])
def test_uniform_width_and_uniform_pruning_give_every_layer_one_ratio(method):
    _, result, _ = budget_run(method)
    (step,) = result.stages[0].rewrites
    assert len(set(step["ratios"])) == 1


def test_prune_without_a_budget_is_refused_up_front():
    teacher = conv4_teacher()
    train, val = labelled_by(teacher)
    with pytest.raises(ConfigError, match="--max-params"):
        compress(teacher, train, val, progress=False, method="prune")


def test_an_unreachable_pruning_budget_is_a_clear_error():
    with pytest.raises(Exception, match="prune baseline found no valid student"):
        run("prune", max_params=10)


def test_global_pruning_cuts_layers_unequally():
    _, result, _ = budget_run("global")
    ratios = result.stages[0].rewrites[0]["ratios"]
    assert len(set(ratios)) > 1  # a global ranking, not one ratio for every layer


def test_global_pruning_without_a_budget_is_refused_up_front():
    teacher = conv4_teacher()
    train, val = labelled_by(teacher)
    with pytest.raises(ConfigError, match="--method global needs a budget"):
        compress(teacher, train, val, progress=False, method="global")


def test_kd_distils_into_the_teachers_model_at_the_chosen_width():
    teacher, result = run("kd", student_width=0.5)
    (record,) = candidates(result)
    assert result.student_arch["name"] == "conv4"
    assert result.student_arch["kwargs"]["width_mult"] == pytest.approx(0.25)  # 0.5 of a 0.5-wide teacher
    assert count_params(result.student) == record.params < count_params(teacher)


def test_kd_with_a_budget_takes_the_widest_student_within_it():
    budget, result, _ = budget_run("kd")
    arch = result.student_arch["kwargs"]
    wider = create_model("conv4", **{**arch, "width_mult": arch["width_mult"] * 1.1})
    assert count_params(wider) > budget  # a tenth wider would not fit: the widest, not any fitting width


def test_kd_under_a_budget_the_teacher_already_meets_is_still_smaller_than_the_teacher():
    teacher, result = run("kd", max_params=2 * count_params(conv4_teacher()))
    (record,) = candidates(result)
    assert record.valid and count_params(teacher) * 0.8 < record.params < count_params(teacher)


def test_kd_at_a_given_width_over_the_budget_is_rejected_with_the_reason():
    config = SearchConfig(student_width=0.9, compression=20)
    (proposal,) = kd_students(conv4_teacher(), torch.randn(1, 1, 28, 28), config)
    assert proposal.rewrite.child is None and "over the budget" in proposal.rewrite.reason
    with pytest.raises(Exception, match="kd baseline found no valid student meeting compression 20"):
        run("kd", student_width=0.9, compression=20)


def test_kd_into_another_zoo_model_that_is_larger_is_rejected():
    with pytest.raises(Exception, match="kd baseline found no valid student"):
        run("kd", student_model="vgg11", student_width=1.0)


def test_an_unknown_method_names_the_choices():
    with pytest.raises(ConfigError, match="n2n, random, uniform, prune, global, kd"):
        run("greedy")


def test_cli_kd_run_folder_holds_a_student_that_rebuilds_from_its_own_spec(workspace, tmp_path):
    run = tmp_path / "kd"
    assert main(compress_args(workspace, run, "--method", "kd", "--student-width", "0.5")) == 0
    summary = json.loads((run / "summary.json").read_text())
    student = load_checkpoint(run / "student.pt")
    assert student.arch["name"] == "conv4" and student.arch["rewrites"] == []
    assert count_params(student.model) == summary["student"]["params"] < summary["teacher"]["params"]
    assert summary["stages"][0]["name"] == "kd"
    assert not (run / "policies").exists()  # kd trains no policy
    assert (run / "report.md").is_file()
    assert main(["--quiet", "evaluate", "--model", str(run / "student.pt"), "--data-dir", str(workspace["mnist"]),
                 "--no-latency"]) == 0


def test_cli_prune_without_a_budget_is_one_line_and_writes_nothing(workspace, tmp_path, capsys):
    err = run_error(compress_args(workspace, tmp_path / "prune", "--method", "prune"), capsys)
    assert "--max-params" in err
    assert not (tmp_path / "prune").exists()
