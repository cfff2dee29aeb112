"""The per-epoch INFO line names why most children of an epoch were rejected."""

from __future__ import annotations

from n2n.search.loop import rejection_summary
from n2n.search.records import CandidateRecord


def record(reason: str | None = None) -> CandidateRecord:
    return CandidateRecord("removal", 0, 0, [], -1.0 if reason else 0.5, valid=reason is None, reason=reason)


def test_most_rejected_names_the_commonest_reasons_counting_numbers_as_one():
    records = [
        record("not smaller than its parent (120 >= 120 parameters)"),
        record("not smaller than its parent (98 >= 98 parameters)"),
        record("forward failed: RuntimeError: shapes 3 and 4\nTraceback follows"),
        record(),
    ]
    summary = rejection_summary(records)

    assert summary.startswith("; 3 of 4 rejected: ")
    assert "not smaller than its parent (120 >= 120 parameters) (2x)" in summary
    assert "forward failed: RuntimeError: shapes 3 and 4 (1x)" in summary
    assert summary.index("not smaller") < summary.index("forward failed")
    assert "Traceback" not in summary


def test_an_epoch_with_at_most_half_rejected_adds_nothing():
    assert rejection_summary([record("forward failed"), record()]) == ""
    assert rejection_summary([]) == ""
