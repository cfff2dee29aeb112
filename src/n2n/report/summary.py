"""A run folder read back (metrics lines, summary, config) and the report.md written from it.

Everything here works from metrics.jsonl alone when the run stopped before writing
summary.json: the tables then show what the search logged, and say what is unknown.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import N2NError
from ..files import atomic_write_text
from ..search.records import well_formed

log = logging.getLogger(__name__)

PLOTS_DIR = "plots"
REPORT_FILE = "report.md"
_CANDIDATE_KEYS = ("stage", "epoch", "reward")
_EPOCH_KEYS = ("stage", "epoch")


# ---- reading ---------------------------------------------------------------------------------
def read_metrics(path: str | Path) -> tuple[list[dict[str, Any]], list[int]]:
    """Every JSON object in a metrics.jsonl file, and the 1-based numbers of the lines skipped.

    A run that stops while writing leaves a torn last line; it is skipped with a warning
    rather than failing, so a crashed run can still be reported and resumed.
    """
    path = Path(path)
    if not path.is_file():
        raise N2NError(f"{path} does not exist: give the folder a compression run wrote (it holds metrics.jsonl)")
    lines = path.read_text(errors="replace").split("\n")
    last = max((number for number, line in enumerate(lines, start=1) if line.strip()), default=0)
    records: list[dict[str, Any]] = []
    dropped: list[int] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if well_formed(record):
            records.append(record)
            continue
        dropped.append(number)
        if number == last and record is None:
            log.warning("%s: line %d is cut short (the run stopped while writing it); skipped", path, number)
        else:
            log.warning("%s: line %d is no record a run writes (damaged); skipped", path, number)
    return records, dropped


@dataclass
class RunData:
    """What a run folder holds, in plain Python values."""

    root: Path
    candidates: list[dict[str, Any]]
    epochs: list[dict[str, Any]]
    teacher: dict[str, Any] | None   # params, flops, val_accuracy (and test_accuracy from summary.json)
    summary: dict[str, Any] | None   # summary.json; None when the run did not finish
    config: dict[str, Any]           # the search configuration
    setup: dict[str, Any]            # config.yaml: teacher path, data set, versions
    dropped: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.root.resolve().name

    @property
    def stages(self) -> list[str]:
        """Stage names in the order the search ran them."""
        names: list[str] = []
        for record in self.candidates + self.epochs:
            if record["stage"] not in names:
                names.append(record["stage"])
        configured = [name for name in self.config.get("stages") or [] if name in names]
        return configured + [name for name in names if name not in configured]

    def stage_candidates(self, stage: str) -> list[dict[str, Any]]:
        return [record for record in self.candidates if record["stage"] == stage]

    def stage_epochs(self, stage: str) -> list[dict[str, Any]]:
        return [record for record in self.epochs if record["stage"] == stage]


def load_run(run_dir: str | Path) -> RunData:
    """Read a run folder; raise N2NError when it is not one."""
    root = Path(run_dir)
    if not root.is_dir():
        raise N2NError(f"run folder {root} does not exist: give the --out folder of a compression run")
    if not (root / "metrics.jsonl").is_file():
        raise N2NError(f"{root} has no metrics.jsonl: it is not a run folder, or its run has not logged anything yet")
    records, dropped = read_metrics(root / "metrics.jsonl")
    summary = _read_json(root / "summary.json")
    setup = _read_yaml(root / "config.yaml")
    config = (summary or {}).get("config") or setup.get("search") or {}
    return RunData(
        root=root,
        candidates=_latest(_of_kind(records, "candidate", _CANDIDATE_KEYS), ("stage", "epoch", "rollout")),
        epochs=_latest(_of_kind(records, "epoch", _EPOCH_KEYS), ("stage", "epoch")),
        teacher=_teacher(records, summary), summary=summary, config=config, setup=setup, dropped=dropped,
    )


def _of_kind(records: list[dict[str, Any]], kind: str, required: tuple[str, ...]) -> list[dict[str, Any]]:
    chosen = []
    for record in records:
        if record.get("kind") != kind:
            continue
        if any(key not in record for key in required):
            log.warning("a %s line in metrics.jsonl lacks %s; skipped", kind, ", ".join(required))
            continue
        chosen.append(record)
    return chosen


def _latest(records: list[dict[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """One record per key, the last one logged: a resumed run may log an epoch again."""
    by_key: dict[tuple, dict[str, Any]] = {}
    for record in records:
        slot = tuple(record.get(key) for key in keys)
        by_key.pop(slot, None)  # re-insert so the order follows the latest line
        by_key[slot] = record
    return list(by_key.values())


def _teacher(records: list[dict[str, Any]], summary: dict[str, Any] | None) -> dict[str, Any] | None:
    """The teacher line of metrics.jsonl, completed by summary.json (which alone knows test accuracy)."""
    from_summary = (summary or {}).get("teacher") or {}
    line = next((record for record in records if record.get("kind") == "teacher"), {})
    merged = {**from_summary, **{key: value for key, value in line.items() if key != "kind"}}
    return merged or None


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        log.warning("%s is not valid JSON; reporting from metrics.jsonl alone", path)
        return None
    return payload if isinstance(payload, dict) else None


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        payload = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError):
        log.warning("%s is not valid YAML; the report leaves its settings out", path)
        return {}
    return payload if isinstance(payload, dict) else {}


# ---- what the tables show -----------------------------------------------------------------------
def is_valid(candidate: dict[str, Any]) -> bool:
    """A child that was built, ran and was scored (rejected ones carry reward -1 and no size)."""
    return bool(candidate.get("valid", True)) and int(candidate.get("params") or 0) > 0


def best_candidate(run: RunData, stage: str) -> dict[str, Any] | None:
    """The stage's best child as the search chose it (the last epoch line names it), else the top reward."""
    valid = [c for c in run.stage_candidates(stage) if is_valid(c)]
    epochs = run.stage_epochs(stage)
    if epochs and int(epochs[-1].get("best_params") or 0) > 0:
        named = epochs[-1]
        for candidate in valid:
            if (candidate["params"] == named["best_params"]
                    and candidate.get("val_accuracy") == named.get("best_val_accuracy")):
                return candidate
    return max(valid, key=lambda c: c["reward"], default=None)


def final_student(run: RunData) -> tuple[dict[str, Any] | None, bool]:
    """(student row, whether it is the finished run's distilled student rather than a search candidate)."""
    if run.summary and run.summary.get("student"):
        return run.summary["student"], True
    for stage in reversed(run.stages):
        best = best_candidate(run, stage)
        if best is not None:
            return {key: best.get(key) for key in ("params", "flops", "val_accuracy")} | {"test_accuracy": None}, False
    return None, False


@dataclass
class StageRow:
    name: str
    epochs: int
    trained: int
    cached: int
    invalid: int
    best_reward: float | None
    best_params: int | None
    best_val_accuracy: float | None


def stage_rows(run: RunData) -> list[StageRow]:
    from_summary = {stage.get("name"): stage for stage in (run.summary or {}).get("stages") or []}
    rows = []
    for name in run.stages:
        candidates = run.stage_candidates(name)
        valid = [c for c in candidates if is_valid(c)]
        logged = {c["epoch"] for c in candidates} | {e["epoch"] for e in run.stage_epochs(name)}
        best = best_candidate(run, name)
        finished = from_summary.get(name, {})
        rows.append(StageRow(
            name=name,
            epochs=finished.get("epochs", len(logged)),
            trained=finished.get("candidates", sum(not c.get("cached") for c in valid)),
            cached=sum(bool(c.get("cached")) for c in valid),
            invalid=len(candidates) - len(valid),
            best_reward=finished.get("best_reward", best["reward"] if best else None),
            best_params=finished.get("best_params", best["params"] if best else None),
            best_val_accuracy=finished.get("best_val_accuracy", best.get("val_accuracy") if best else None),
        ))
    return rows


# ---- report.md ------------------------------------------------------------------------------
def write_report(run_dir: str | Path) -> Path:
    """Write `run_dir/report.md`: result table, per-stage table, key settings, and the plots found in plots/."""
    run = load_run(run_dir)
    sections = [_title(run), _result_section(run), _stage_section(run), _config_section(run), _plot_section(run)]
    path = run.root / REPORT_FILE
    atomic_write_text(path, "\n\n".join(section for section in sections if section) + "\n")
    log.info("wrote %s", path)
    return path


def _title(run: RunData) -> str:
    lines = [f"# Compression run `{run.name}`"]
    teacher, dataset = run.setup.get("teacher"), run.setup.get("dataset") or (run.summary or {}).get("dataset")
    if teacher or dataset:
        lines.append(f"Teacher `{teacher or 'unknown'}` on data set `{dataset or 'unknown'}`.")
    if run.summary is None:
        lines.append("**The run did not finish** (no summary.json): every figure below comes from metrics.jsonl. "
                     "The student row is the best candidate the search scored, before final distillation; "
                     "its test accuracy is unknown.")
    if run.dropped:
        numbers = ", ".join(str(n) for n in run.dropped)
        lines.append(f"metrics.jsonl line(s) {numbers} could not be read and were skipped.")
    return "\n\n".join(lines)


def _result_section(run: RunData) -> str:
    student, finished = final_student(run)
    label = "student" if finished else "best candidate (search)"
    rows = [("teacher", run.teacher), (label, student)]
    table = ["| | params | FLOPs | val accuracy | test accuracy |", "|---|---:|---:|---:|---:|"]
    for name, row in rows:
        row = row or {}
        table.append(f"| {name} | {format_count(row.get('params'))} | {format_flops(row.get('flops'))} | "
                     f"{format_percent(row.get('val_accuracy'))} | {format_percent(row.get('test_accuracy'))} |")
    return "## Result\n\n" + "\n".join(table) + "\n\n" + _compression_line(run.teacher, student)


def _compression_line(teacher: dict[str, Any] | None, student: dict[str, Any] | None) -> str:
    params = ratio((teacher or {}).get("params"), (student or {}).get("params"))
    if params is None:
        return "Compression: unknown (the teacher's size is not recorded in this run folder)."
    flops = ratio((teacher or {}).get("flops"), (student or {}).get("flops"))
    flops_text = f", {flops:.2f}x fewer FLOPs" if flops is not None else ""
    return f"Compression: **{params:.2f}x** fewer parameters{flops_text}."


def _stage_section(run: RunData) -> str:
    rows = stage_rows(run)
    if not rows:
        return "## Search stages\n\nNo candidate was logged yet."
    table = ["| stage | policy epochs | children trained | cached | invalid | best reward | best params "
             "| best val accuracy |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        reward = "–" if _missing(row.best_reward) else f"{row.best_reward:.4f}"
        table.append(f"| {row.name} | {row.epochs} | {row.trained} | {row.cached} | {row.invalid} | {reward} | "
                     f"{format_count(row.best_params, '–')} | {format_percent(row.best_val_accuracy, '–')} |")
    note = ("Validation accuracies here come from the short proxy distillation that scores each child; "
            "\"cached\" children repeat an architecture already scored, \"invalid\" ones could not be built "
            "or run (reward -1).")
    return "## Search stages\n\n" + "\n".join(table) + "\n\n" + note + _rescored_lines(run)


def _rescored_lines(run: RunData) -> str:
    """Where a stage re-scored its best children longer: what each scored, at both fidelities."""
    lines = []
    for stage in (run.summary or {}).get("stages") or []:
        for child in stage.get("rescored") or []:
            lines.append(f"| {stage.get('name')} | {child.get('name')} | "
                         f"{format_percent(child.get('proxy_accuracy'), '–')} | "
                         f"{format_percent(child.get('rescored_accuracy'), '–')} |")
    if not lines:
        return ""
    epochs = (run.config or {}).get("rescore_epochs", "more")
    images = (run.config or {}).get("rescore_subset")
    on = f" on {images:,} training images" if isinstance(images, int) else ""
    return ("\n\nThe best children of each stage, trained again from their start for "
            f"{epochs} proxy epochs{on} before the best was chosen (its best val accuracy above is the longer "
            "one):\n\n"
            "| stage | child | proxy val accuracy | re-scored val accuracy |\n|---|---|---:|---:|\n" + "\n".join(lines))


def _config_section(run: RunData) -> str:
    cfg = run.config
    if not cfg:
        return "## Settings\n\nNo configuration was found (neither summary.json nor config.yaml)."
    limits = [f"{name} {cfg[key]}" for name, key in
              (("max params", "max_params"), ("max FLOPs", "max_flops"), ("min accuracy", "min_accuracy"))
              if cfg.get(key) is not None]
    proxy = cfg.get("proxy") or {}
    settings = [
        ("seed", cfg.get("seed")),
        ("stages", ", ".join(cfg.get("stages") or []) or None),
        ("policy epochs per stage", cfg.get("epochs_per_stage")),
        ("rollouts per epoch", _rollouts(cfg)),
        ("algorithm", cfg.get("algorithm")),
        ("child weights", cfg.get("init")),
        ("channels kept when shrinking", cfg.get("keep_channels")),
        ("constraints", ", ".join(limits) or "none"),
        ("proxy distillation", f"{proxy.get('loss')} loss, {proxy.get('epochs')} epoch(s), "
                               f"subset {proxy.get('subset')}{_calibration(proxy)}" if proxy else None),
        ("policy transferred from", cfg.get("policy_from")),
    ]
    table = ["| setting | value |", "|---|---|"]
    table += [f"| {name} | {value} |" for name, value in settings if value is not None]
    return "## Settings\n\n" + "\n".join(table)


def _calibration(distill: dict[str, Any]) -> str:
    images = distill.get("calibrate")
    return f", BatchNorm recalibrated on {images} images" if images else ""


def _rollouts(cfg: dict) -> str | None:
    """'5', or '5 (removal 10)' where a stage samples its own number."""
    if cfg.get("rollouts") is None:
        return None
    own = [(stage, (cfg.get(key) or {}).get("rollouts")) for stage, key in
           (("removal", "removal_policy"), ("shrinkage", "shrink_policy"))]
    named = [f"{stage} {count}" for stage, count in own if count]
    return f"{cfg['rollouts']}" + (f" ({', '.join(named)})" if named else "")


_PLOT_TITLES = {"accuracy_vs_params.png": "Accuracy against parameters",
                "layers.png": "Layers of the student against the teacher"}


def _plot_section(run: RunData) -> str:
    folder = run.root / PLOTS_DIR
    names = [f"stage_{plot_slug(stage)}.png" for stage in run.stages] + list(_PLOT_TITLES)
    present = [name for name in names if (folder / name).is_file()]
    if not present:
        return ""
    parts = ["## Plots"]
    for name in present:
        title = _PLOT_TITLES.get(name) or f"Stage {name.removeprefix('stage_').removesuffix('.png')}"
        parts.append(f"### {title}\n\n![{title}]({PLOTS_DIR}/{name})")
    return "\n\n".join(parts)


# ---- formatting ------------------------------------------------------------------------------
def plot_slug(stage: str) -> str:
    """A stage name made safe for a file name."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in stage) or "stage"


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return float(numerator) / float(denominator)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def format_count(value: float | None, missing: str = "unknown") -> str:
    return missing if _missing(value) else f"{int(value):,}"


def format_flops(value: float | None, missing: str = "unknown") -> str:
    return missing if _missing(value) else f"{float(value) / 1e6:,.2f} M"


def format_percent(value: float | None, missing: str = "unknown") -> str:
    return missing if _missing(value) else f"{100 * float(value):.2f} %"
