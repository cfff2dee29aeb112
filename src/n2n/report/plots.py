"""Pictures of a compression run, drawn from its run folder into run_dir/plots/ as PNG files.

Figures are built with matplotlib's object API on the Agg canvas: no display, no
global pyplot state, so drawing is safe from any thread or a headless machine.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from ..errors import N2NError
from .summary import PLOTS_DIR, RunData, final_student, is_valid, load_run, plot_slug

log = logging.getLogger(__name__)

_DPI = 110
_INVALID_COLOUR = "tab:red"
_STAGE_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown")


def make_plots(run_dir: str | Path) -> list[Path]:
    """Draw every plot of the run folder into `run_dir/plots/`; return the files written."""
    run = load_run(run_dir)
    folder = run.root / PLOTS_DIR
    folder.mkdir(exist_ok=True)
    paths = [plot_stage(run, stage, folder / f"stage_{plot_slug(stage)}.png") for stage in run.stages]
    paths.append(plot_accuracy_vs_params(run, folder / "accuracy_vs_params.png"))
    layers = plot_layers(run, folder / "layers.png")
    if layers is not None:
        paths.append(layers)
    return paths


def _save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=_DPI)
    log.info("wrote %s", path)
    return path


# ---- per stage: reward, accuracy, compression against policy epoch ------------------------------
@dataclass
class EpochSpread:
    """One value per rollout, gathered by policy epoch: what the mean line and the band are drawn from."""

    epochs: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    points: list[tuple[int, float]]


def epoch_spread(values_by_epoch: dict[int, list[float]]) -> EpochSpread:
    epochs = sorted(values_by_epoch)

    def each(reduce) -> np.ndarray:
        return np.array([reduce(values_by_epoch[e]) if values_by_epoch[e] else np.nan for e in epochs], dtype=float)

    points = [(epoch, value) for epoch in epochs for value in values_by_epoch[epoch]]
    return EpochSpread(np.array(epochs, dtype=float), each(np.mean), each(np.min), each(np.max), points)


def plot_stage(run: RunData, stage: str, path: Path) -> Path:
    """Reward, validation accuracy and compression of each rollout against policy epoch (the paper's Figs. 3-5)."""
    candidates = run.stage_candidates(stage)
    epochs = sorted({c["epoch"] for c in candidates})
    valid = [c for c in candidates if is_valid(c)]
    invalid = [c for c in candidates if not is_valid(c)]
    figure = Figure(figsize=(15, 4.2))
    reward_ax, accuracy_ax, compression_ax = figure.subplots(1, 3, sharex=True)
    figure.suptitle(f"Stage {stage}: {len(candidates)} children over {len(epochs)} policy epochs "
                    f"({len(invalid)} invalid)")

    _reward_panel(reward_ax, candidates, valid, invalid, epochs)
    accuracy = _by_epoch(valid, epochs, lambda c: 100 * float(c.get("val_accuracy") or 0.0))
    _spread_panel(accuracy_ax, epoch_spread(accuracy), "validation accuracy (%)", "tab:green")
    if run.teacher and run.teacher.get("val_accuracy") is not None:
        accuracy_ax.axhline(100 * run.teacher["val_accuracy"], color="black", ls="--", lw=1, label="teacher")
    teacher_params = (run.teacher or {}).get("params")
    if teacher_params:
        compression = _by_epoch(valid, epochs, lambda c: teacher_params / c["params"])
        _spread_panel(compression_ax, epoch_spread(compression), "compression (teacher params / params)",
                      "tab:purple")
    else:
        _no_data(compression_ax, "teacher size unknown:\nno summary.json and no teacher line\nin metrics.jsonl")
    if invalid:
        note = f"{len(invalid)} invalid {'child' if len(invalid) == 1 else 'children'} left out"
        for ax in (accuracy_ax, compression_ax) if teacher_params else (accuracy_ax,):
            ax.text(0.99, 0.02, note, transform=ax.transAxes,
                    ha="right", va="bottom", fontsize=8, color=_INVALID_COLOUR)
    for ax in (reward_ax, accuracy_ax, compression_ax):
        ax.set_xlabel("policy epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
    figure.tight_layout()
    return _save(figure, path)


def _by_epoch(candidates: list[dict[str, Any]], epochs: list[int], value) -> dict[int, list[float]]:
    grouped: dict[int, list[float]] = {epoch: [] for epoch in epochs}
    for candidate in candidates:
        grouped[candidate["epoch"]].append(value(candidate))
    return grouped


def _reward_panel(ax: Axes, candidates: list[dict[str, Any]], valid: list[dict[str, Any]],
                  invalid: list[dict[str, Any]], epochs: list[int]) -> None:
    # The band spans the scored children; the mean is over every rollout, invalid ones at
    # their reward of -1, because that is the mean the policy was trained on.
    spread = epoch_spread(_by_epoch(valid, epochs, lambda c: float(c["reward"])))
    mean = epoch_spread(_by_epoch(candidates, epochs, lambda c: float(c["reward"]))).mean
    _spread_panel(ax, spread, "reward", "tab:blue", mean=mean, mean_label="mean of all rollouts")
    if invalid:
        ax.scatter([c["epoch"] for c in invalid], [c["reward"] for c in invalid], marker="x",
                   color=_INVALID_COLOUR, s=30, label="invalid child", zorder=3)
        # Invalid children of one epoch share one spot; say how many lie there.
        spots = Counter((c["epoch"], c["reward"]) for c in invalid)
        for (epoch, value), count in spots.items():
            if count > 1:
                ax.annotate(f"{count}", (epoch, value), xytext=(5, 3), textcoords="offset points",
                            fontsize=8, color=_INVALID_COLOUR)


def _spread_panel(ax: Axes, spread: EpochSpread, label: str, colour: str, *,
                  mean: np.ndarray | None = None, mean_label: str = "mean") -> None:
    ax.set_ylabel(label)
    if not spread.points and mean is None:
        _no_data(ax, "no valid child")
        return
    if spread.points:
        ax.fill_between(spread.epochs, spread.low, spread.high, color=colour, alpha=0.2, lw=0, label="min-max")
        ax.scatter(*zip(*spread.points), color=colour, s=12, alpha=0.6, label="rollout", zorder=2)
    ax.plot(spread.epochs, spread.mean if mean is None else mean, color=colour, lw=2,
            marker="o" if len(spread.epochs) < 3 else None, label=mean_label)


def _no_data(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", fontsize=10, color="grey")
    ax.set_yticks([])


# ---- accuracy against parameters ------------------------------------------------------------------
def pareto_front(points: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (params, accuracy) points that no other point beats: none has as few params and more accuracy.

    Returned by increasing params, so accuracy increases strictly along the front.
    """
    front: list[tuple[float, float]] = []
    for params, accuracy in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or accuracy > front[-1][1]:
            front.append((params, accuracy))
    return front


def plot_accuracy_vs_params(run: RunData, path: Path) -> Path:
    return _save(accuracy_vs_params_figure(run), path)


def accuracy_vs_params_figure(run: RunData) -> Figure:
    """Every valid child by size and accuracy, coloured by stage, with the Pareto front, teacher and
    student, and the run's accuracy floor and parameter limit where it set them."""
    figure = Figure(figsize=(10, 5.5))
    ax = figure.subplots()
    everything: list[tuple[float, float]] = []
    for index, stage in enumerate(run.stages):
        valid = [c for c in run.stage_candidates(stage) if is_valid(c)]
        points = [(float(c["params"]), 100 * float(c.get("val_accuracy") or 0.0)) for c in valid]
        everything += points
        if points:
            ax.scatter(*zip(*points), s=18, alpha=0.6, color=_STAGE_COLOURS[index % len(_STAGE_COLOURS)],
                       label=f"{stage} ({len(points)} children)")
    front = pareto_front(everything)
    if front:
        xs, ys = zip(*front)
        ax.step(xs, ys, where="post", color="black", lw=1.2, alpha=0.8, label="Pareto front (search)")
    _mark_teacher_and_student(ax, run)
    _mark_limits(ax, run.config)
    if not everything:
        ax.text(0.5, 0.5, "no valid child was scored", transform=ax.transAxes, ha="center", color="grey")
    if ax.has_data():
        log_count_axis(ax)
    ax.set_xlabel("parameters (log scale)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Children scored by the search (proxy distillation)")
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    return figure


def log_count_axis(ax: Axes) -> None:
    """Log-scale parameter axis labelled in plain counts (70k, 1.2M), with more labels over a short range."""
    ax.set_xscale("log")
    low, high = ax.get_xlim()
    short = high / low < 30  # under about 1.5 decades the decade ticks alone leave the axis nearly bare
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: short_count(value)))
    if short:
        ax.xaxis.set_minor_locator(LogLocator(subs=(2.0, 3.0, 5.0)))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda value, _: short_count(value)))
    else:
        ax.xaxis.set_minor_formatter(NullFormatter())


def short_count(value: float) -> str:
    for divisor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= divisor:
            return f"{value / divisor:.3g}{suffix}"
    return f"{value:.3g}"


def _mark_teacher_and_student(ax: Axes, run: RunData) -> None:
    teacher = run.teacher or {}
    if teacher.get("params") and teacher.get("val_accuracy") is not None:
        ax.scatter([teacher["params"]], [100 * teacher["val_accuracy"]], marker="*", s=260, color="gold",
                   edgecolor="black", zorder=5, label="teacher")
    student, finished = final_student(run)
    if student and student.get("params") and student.get("val_accuracy") is not None:
        label = "final student (after final distillation)" if finished else "best child (run unfinished)"
        ax.scatter([student["params"]], [100 * student["val_accuracy"]], marker="D", s=80, color="crimson",
                   edgecolor="black", zorder=5, label=label)


def _mark_limits(ax: Axes, config: dict[str, Any]) -> None:
    """The --min-accuracy floor and --max-params limit: children beyond them were scored under the penalty."""
    if config.get("min_accuracy") is not None:
        floor = 100 * float(config["min_accuracy"])
        ax.axhline(floor, color="dimgrey", ls="--", lw=1, label=f"accuracy floor ({floor:.1f} %)")
    if config.get("max_params") is not None:
        limit = float(config["max_params"])
        ax.axvline(limit, color="dimgrey", ls=":", lw=1, label=f"max params ({short_count(limit)})")


# ---- the student's layers against the teacher's -----------------------------------------------------
@dataclass(frozen=True)
class LayerComparison:
    name: str
    kind: str
    teacher_width: int
    student_width: int | None  # None: removed

    @property
    def kept(self) -> bool:
        return self.student_width is not None

    @property
    def ratio(self) -> float:
        return (self.student_width or 0) / self.teacher_width if self.teacher_width else 0.0


def compare_layers(teacher_layers: Iterable[Any], student_layers: Iterable[Any]) -> list[LayerComparison]:
    """Match layer entries (objects with name, kind, out_channels) by name.

    A teacher layer the student lacks was removed: rewrites keep module names, and a removed
    layer is gone from (or an identity in) the student, so its view does not list it.
    """
    student_width = {layer.name: layer.out_channels for layer in student_layers}
    return [LayerComparison(layer.name, layer.kind, layer.out_channels, student_width.get(layer.name))
            for layer in teacher_layers]


def plot_layers(run: RunData, path: Path) -> Path | None:
    """Bars of teacher and student width per teacher layer; None (with a warning) when student.pt is unusable."""
    student_path = run.root / "student.pt"
    if not student_path.is_file():
        log.warning("%s has no student.pt (the run did not finish): the per-layer plot is skipped", run.root)
        return None
    try:
        layers = _layer_comparison(run, student_path)
    except N2NError as error:
        log.warning("per-layer plot skipped: %s", error)
        return None
    return _draw_layers(layers, path)


def _layer_comparison(run: RunData, student_path: Path) -> list[LayerComparison]:
    # Imported here: torch and the tracer are only needed for this one plot.
    from ..arch import NetworkView
    from ..checkpoint import load_checkpoint

    student = load_checkpoint(student_path)
    example = student.example_input
    teacher = _teacher_model(run, student.arch, example)
    return compare_layers(NetworkView.build(teacher, example).layers,
                          NetworkView.build(student.model, example).layers)


def _teacher_model(run: RunData, student_arch: dict[str, Any], example: Any) -> Any:
    """The teacher's architecture: from its checkpoint when still on disk, else the student's zoo model.

    A teacher that was itself a rewritten student keeps its own rewrites only in its checkpoint;
    the parameter count recorded for the teacher tells which candidate is the right one.
    """
    from ..arch import count_params
    from ..checkpoint import build_from_arch, read_checkpoint_file

    arches = []
    teacher_file = run.setup.get("teacher")
    if teacher_file and Path(teacher_file).is_file():
        try:
            arches.append(read_checkpoint_file(teacher_file)["arch"])
        except N2NError as error:
            log.debug("teacher checkpoint %s unreadable (%s); using the student's zoo model", teacher_file, error)
    arches.append({**student_arch, "rewrites": []})
    expected = (run.teacher or {}).get("params")
    models = []
    for arch in arches:
        model = build_from_arch(arch, example)
        if not expected or count_params(model) == expected:
            return model
        models.append(model)
    log.warning("no rebuilt teacher has the recorded %s parameters; the per-layer plot uses the zoo model", expected)
    return models[-1]


def _draw_layers(layers: list[LayerComparison], path: Path) -> Path:
    positions = np.arange(len(layers))
    figure = Figure(figsize=(min(40.0, max(7.0, 0.42 * len(layers) + 2)), 5.2))
    ax = figure.subplots()
    teacher_widths = [layer.teacher_width for layer in layers]
    student_widths = [layer.student_width or 0 for layer in layers]
    ax.bar(positions, teacher_widths, width=0.8, color="lightgrey", edgecolor="grey", label="teacher width")
    ax.bar(positions, student_widths, width=0.5, color="tab:blue", label="student width")
    top = max(teacher_widths, default=1)
    for x, layer in zip(positions, layers):
        if not layer.kept:
            ax.text(x, top * 0.02, "removed", rotation=90, ha="center", va="bottom", fontsize=8,
                    color=_INVALID_COLOUR)
        elif layer.ratio != 1.0:
            ax.text(x, layer.student_width, f"{layer.ratio:.2f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(positions)
    ax.set_xticklabels([f"{layer.name} ({layer.kind})" for layer in layers], rotation=60, ha="right", fontsize=8)
    for label, layer in zip(ax.get_xticklabels(), layers):
        if not layer.kept:
            label.set_color(_INVALID_COLOUR)
    kept = sum(layer.kept for layer in layers)
    ax.set_ylabel("output channels / units")
    ax.set_title(f"Student against teacher: {kept} of {len(layers)} layers kept\n"
                 "(number above a bar: student width / teacher width)", fontsize=10)
    ax.set_xlim(-0.7, len(layers) - 0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    return _save(figure, path)
