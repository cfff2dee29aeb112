"""A run's plots and report.md, made again from its folder."""
from __future__ import annotations

from pathlib import Path

from .summary import write_report


def rebuild_report(run_dir: str | Path) -> Path:
    """Draw the plots and write report.md; works from metrics.jsonl alone when summary.json is missing."""
    from .plots import make_plots  # matplotlib is loaded only when pictures are drawn

    make_plots(run_dir)
    return write_report(run_dir)
