"""Simpler ways to a small student, scored like N2N's children, to compare the search against.

`--method random` is the N2N loop with a policy that never learns (see search/loop.py);
the methods here score a fixed list of students with the search's scorer instead:

* uniform: the teacher with every layer at one width ratio, trained from scratch (the
  hand-designed "reduced" student): the widest within the budget, or a grid of ratios;
* prune: L1-norm filter pruning (Li et al.) of every layer by the same ratio, the
  largest within the budget, keeping the pruned weights;
* global: L1-norm filter pruning ranked across the whole network (each layer's norms over
  their mean, as Torch-Pruning's global pruning), the weakest cut until the budget is met;
* kd: one hand-picked small zoo model (--student-model, --student-width; without a width,
  the widest within the budget).

Each candidate gets the search's proxy distillation and reward; the best one goes
on to the same final distillation as an N2N student.
"""
from __future__ import annotations

from ..search.loop import Search
from ..search.scorer import StageResult
from .scoring import score_candidates
from .students import globally_pruned_students, kd_students, pruned_students, uniform_students

BUILDERS = {"uniform": uniform_students, "prune": pruned_students, "global": globally_pruned_students,
            "kd": kd_students}


def run_baseline(method: str, search: Search) -> list[StageResult]:
    """Score the students of baseline `method` with `search`'s proxy and reward: one stage named after it."""
    candidates = BUILDERS[method](search.teacher, search.example_input, search.config)
    return [score_candidates(search, method, candidates)]


__all__ = ["BUILDERS", "run_baseline"]
