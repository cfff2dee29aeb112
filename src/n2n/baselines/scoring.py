"""Score a fixed list of students exactly as the search scores its children."""
from __future__ import annotations

import logging
import time

from ..search.loop import Search
from ..search.records import CandidateRecord
from ..search.reward import INVALID_REWARD
from ..search.scorer import StageResult, rejected
from .students import Proposal

log = logging.getLogger(__name__)


def score_candidates(search: Search, name: str, proposals: list[Proposal]) -> StageResult:
    """One record per proposal (its index is its 'epoch'), under the constraints as they are after annealing."""
    result = StageResult(name, len(proposals), 0, policy=None)
    for index, proposal in enumerate(proposals):
        started = time.perf_counter()
        record = score_one(search, name, index, proposal, result)
        search.emit(search.epoch_record(name, index, [record], {}, result, time.perf_counter() - started))
        log.info("%s %d/%d (%s): reward %.3f, %s params, val accuracy %.2f%%%s", name, index + 1, len(proposals),
                 proposal.label, record.reward, f"{record.params:,}", 100 * record.val_accuracy,
                 f" ({record.reason})" if record.reason else "")
    return result


def score_one(search: Search, name: str, index: int, proposal: Proposal, result: StageResult) -> CandidateRecord:
    record = CandidateRecord(name, index, 0, [], INVALID_REWARD)
    rewrite = proposal.rewrite
    if rewrite.child is None:
        return search.emit(rejected(record, rewrite.reason or "rejected"))
    score, reason = search.scorer.train(rewrite, search.candidate_seed(0, index, 0))
    if score is None:
        return search.emit(rejected(record, reason))
    result.candidates += 1
    record.params, record.flops, record.val_accuracy = score.params, score.flops, score.val_accuracy
    record.seconds = score.seconds
    record.reward = search.scorer.hard_reward(record)
    if search.scorer.is_better(record, result):
        result.best, result.best_child = record, rewrite.child
        result.rewrites = [rewrite.step] if rewrite.step is not None else []
        result.arch = proposal.arch
    return search.emit(record)
