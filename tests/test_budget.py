"""Budget mode: every child brought inside a size budget, rewarded by its accuracy."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from n2n.arch import DEFAULT_MIN_WIDTH, NetworkView, count_flops, count_params, rebuild, shrink_layers
from n2n.arch.budget import Budget, budget_for, fit_by_global_ranking, fit_to_budget
from n2n.config import SearchConfig
from n2n.errors import ConfigError
from n2n.models import create_model
from n2n.search.reward import reward
from n2n.search.stages import make_stage
from test_compress import labelled_by, quiet_compress, small_teacher

pytestmark = pytest.mark.usefixtures("one_thread")
INPUT = torch.randn(1, 1, 12, 12, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def teacher():
    return small_teacher()


@pytest.fixture(scope="module")
def view(teacher):
    return NetworkView.build(teacher, INPUT)


def test_budget_from_a_compression_factor_is_the_tighter_limit():
    assert budget_for(1000, compression=10) == Budget(100, None)
    assert budget_for(1000, max_params=80, compression=10) == Budget(80, None)
    assert budget_for(1000, max_params=300, compression=10) == Budget(100, None)
    assert budget_for(1000, max_flops=5000) == Budget(None, 5000)
    assert budget_for(1000) is None


def test_accuracy_reward_is_the_accuracy_ratio_and_paper_reward_is_unchanged():
    # hand-computed: C = 1 - 25/100 = 0.75, C(2 - C) = 0.9375, A = 0.8 / 0.9
    assert reward(student_params=25, teacher_params=100, student_acc=0.8, teacher_acc=0.9,
                  kind="accuracy") == pytest.approx(0.8 / 0.9)
    assert reward(student_params=25, teacher_params=100, student_acc=0.8, teacher_acc=0.9) == pytest.approx(
        0.9375 * 0.8 / 0.9)
    with pytest.raises(ValueError):
        reward(student_params=25, teacher_params=100, student_acc=0.8, teacher_acc=0.9, kind="size")


@settings(max_examples=25, deadline=None)
@given(ratios=st.lists(st.sampled_from(SearchConfig().ratios), min_size=8, max_size=8),
       factor=st.floats(min_value=1.5, max_value=12))
def test_a_fitted_child_meets_the_budget(teacher, view, ratios, factor):
    budget = budget_for(count_params(teacher), compression=factor)
    rewrite = fit_to_budget(teacher, view, ratios[: len(view.groups)], INPUT, budget)
    if rewrite.child is None:
        assert "exceeds the budget" in rewrite.reason
    else:
        assert rewrite.params == count_params(rewrite.child) <= budget.max_params


@pytest.mark.parametrize("factor", [2, 4, 9])
def test_uniform_ratios_give_the_widest_uniform_child_within_the_budget(teacher, view, factor):
    budget = budget_for(count_params(teacher), compression=factor)
    widest = max(r.params for r in (shrink_layers(teacher, view, [k / 400] * len(view.groups), INPUT)
                                    for k in range(1, 400)) if r.child is not None and r.params <= budget.max_params)
    for ratio in (0.25, 0.5, 1.0):
        assert fit_to_budget(teacher, view, [ratio] * len(view.groups), INPUT, budget).params == widest


@pytest.mark.parametrize("ratios", [[0.25, 1.0, 0.5, 1.0, 0.9], [1.0] * 5, [0.5] * 5])
def test_fitting_meets_a_flop_budget_too(teacher, view, ratios):
    budget = Budget(max_params=None, max_flops=count_flops(teacher, INPUT) // 4)
    rewrite = fit_to_budget(teacher, view, ratios[: len(view.groups)], INPUT, budget)
    assert rewrite.child is not None
    assert count_flops(rewrite.child, INPUT) == rewrite.flops <= budget.max_flops


def test_a_budget_below_the_narrowest_child_is_a_rejection_with_its_reason(teacher, view):
    rewrite = fit_to_budget(teacher, view, [0.5] * len(view.groups), INPUT, Budget(max_params=10))
    assert rewrite.child is None and "narrowest widths" in rewrite.reason
    rewrite = fit_by_global_ranking(teacher, view, INPUT, Budget(max_params=10))
    assert rewrite.child is None and "narrowest widths" in rewrite.reason


@pytest.mark.parametrize("limits", [{"compression": 3}, {"compression": 10}, {"max_flops": 0.3}])
def test_global_ranking_keeps_the_strongest_filters_of_the_whole_network_within_the_budget(teacher, view, limits):
    from n2n.arch.groups import filter_l1

    flops = limits.get("max_flops")
    budget = budget_for(count_params(teacher), compression=limits.get("compression"),
                        max_flops=None if flops is None else int(flops * count_flops(teacher, INPUT)))
    rewrite = fit_by_global_ranking(teacher, view, INPUT, budget)
    assert rewrite.child is not None and budget.fits(rewrite.params, rewrite.flops)
    assert rewrite.params == count_params(rewrite.child)
    modules = dict(teacher.named_modules())
    ranked = [(filter_l1(plan, modules) / filter_l1(plan, modules).mean()).sort(descending=True).values
              for plan in view.group_plans]
    kept = [round(ratio * group.channels) for ratio, group in zip(rewrite.step["ratios"], view.groups)]
    # one threshold for the whole network: every filter cut ranks below every filter kept in a
    # group the minimum width did not hold up
    cut = [float(scores[width]) for scores, width in zip(ranked, kept) if width < len(scores)]
    free = [float(scores[width - 1]) for scores, width in zip(ranked, kept) if width > DEFAULT_MIN_WIDTH]
    assert cut and free and max(cut) < min(free)


@pytest.mark.parametrize("remove", [[False] * 20, [True] * 20])
def test_removal_children_in_budget_mode_fit_the_budget_and_keep_the_teacher_a_candidate(teacher, view, remove):
    budget = budget_for(count_params(teacher), compression=5)
    stage = make_stage("removal", SearchConfig(), budget)
    rewrite, steps = stage.apply(teacher, view, torch.tensor(remove[: len(view.layers)]), INPUT)
    assert rewrite.child is not None and rewrite.params <= budget.max_params
    assert steps[-1]["op"] == "shrink"
    if not any(remove):  # nothing removed: the teacher fitted to the budget, one rewrite
        assert len(steps) == 1
    rebuilt = rebuild(small_teacher(), INPUT, steps)
    assert count_params(rebuilt) == rewrite.params


def test_accuracy_reward_needs_a_budget_and_compression_is_a_factor_above_one():
    with pytest.raises(ConfigError, match="needs a budget"):
        SearchConfig(reward="accuracy").validate()
    for bad in (1, 0.5, -3, float("inf"), True, "10"):
        with pytest.raises(ConfigError, match="compression"):
            SearchConfig(compression=bad).validate()
    assert SearchConfig(compression=10).reward_kind == "accuracy"
    assert SearchConfig(max_params=10, reward="paper").reward_kind == "paper"
    assert SearchConfig().reward_kind == "paper"


@pytest.mark.parametrize("limits", [{"compression": 4.0}, {"max_params": 2000}])
def test_a_budget_mode_student_always_meets_the_budget(limits):
    teacher = small_teacher()
    train, val, test = labelled_by(teacher)
    result = quiet_compress(teacher, train, val, test_data=test, **limits)
    limit = limits.get("max_params") or count_params(teacher) // 4
    assert count_params(result.student) <= limit
    scored = [r for r in result.history if getattr(r, "kind", "") == "candidate" and r.valid]
    assert scored and all(r.params <= limit for r in scored)
    # every scored child's reward is its accuracy relative to the teacher's
    teacher_acc = result.history[0].val_accuracy
    assert all(r.reward == pytest.approx(r.val_accuracy / teacher_acc) for r in scored)
    rebuilt = rebuild(small_teacher(), train[0][:1], result.rewrites)
    rebuilt.load_state_dict(result.student.state_dict(), strict=True)
    # every child of both stages sits at the budget: the student is the best of either stage
    assert result.final_stage.best.reward == max(stage.best.reward for stage in result.stages if stage.best)


def test_the_zoo_resnet_fits_a_tenth_of_its_parameters():
    model = create_model("resnet18", in_channels=1, num_classes=10, width_mult=0.125).eval()
    inputs = torch.randn(1, 1, 28, 28)
    view = NetworkView.build(model, inputs)
    budget = budget_for(count_params(model), compression=10)
    rewrite = fit_to_budget(model, view, ([0.5, 1.0] * len(view.groups))[: len(view.groups)], inputs, budget)
    assert rewrite.child is not None and rewrite.params <= budget.max_params
    assert rewrite.child(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_in_budget_mode_removing_a_pool_alone_is_a_child_fitted_to_the_budget(teacher, view):
    pool = next(i for i, layer in enumerate(view.layers) if layer.removable and layer.kind == "maxpool")
    remove = torch.tensor([i == pool for i in range(len(view.layers))])
    assert make_stage("removal", SearchConfig()).apply(teacher, view, remove, INPUT)[0].child is None
    budget = budget_for(count_params(teacher), compression=4)
    rewrite, steps = make_stage("removal", SearchConfig(), budget).apply(teacher, view, remove, INPUT)
    assert rewrite.child is not None and rewrite.params <= budget.max_params
    assert [step["op"] for step in steps] == ["remove", "shrink"]
    assert count_params(rebuild(small_teacher(), INPUT, steps)) == rewrite.params
