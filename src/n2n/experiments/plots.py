"""Figures of an experiment, drawn with matplotlib's object API on the Agg canvas."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..report.plots import log_count_axis, pareto_front

SEARCH_STAGES = ("removal", "shrinkage")
QUANTITIES = (("reward", "mean reward"), ("accuracy", "val accuracy of valid children"),
              ("compression", "compression of valid children (x)"))


def plot_curves(path: Path, title: str, rows: list[Any]) -> Path | None:
    """Reward, accuracy and compression against policy epoch, one line per variant (mean over
    seeds, shaded from the lowest to the highest seed); None when no run has a policy stage."""
    stages = [s for s in SEARCH_STAGES if any(s in r.curves for r in rows)]
    if not stages:
        return None
    variants = list(dict.fromkeys(r.variant for r in rows))
    figure = Figure(figsize=(5.5 * len(stages), 9), constrained_layout=True)
    axes = figure.subplots(len(QUANTITIES), len(stages), squeeze=False)
    for column, stage in enumerate(stages):
        for row, (key, label) in enumerate(QUANTITIES):
            ax = axes[row][column]
            for variant in variants:
                draw_band(ax, [r.curves.get(stage, []) for r in rows if r.variant == variant], key, variant)
            ax.set_xlabel("policy epoch")
            ax.set_ylabel(label)
            ax.set_title(stage if row == 0 else "")
            ax.grid(alpha=0.3)
        axes[0][column].legend(fontsize="small")
    figure.suptitle(title)
    return save(figure, path)


def plot_students(path: Path, title: str, rows: list[Any]) -> Path | None:
    """Test accuracy against parameters of every run's final student, one colour per variant,
    the front no other student beats, and each teacher; None when no student has a test accuracy."""
    measured = [r for r in rows if r.test_accuracy is not None]
    if not measured:
        return None
    figure = Figure(figsize=(9, 5.5), constrained_layout=True)
    ax = figure.subplots()
    for variant in dict.fromkeys(r.variant for r in measured):
        group = [r for r in measured if r.variant == variant]
        ax.scatter([r.params for r in group], [100 * r.test_accuracy for r in group], s=40, alpha=0.8,
                   label=f"{variant} ({len(group)} seed(s))")
    front = pareto_front((r.params, 100 * r.test_accuracy) for r in measured)
    ax.step(*zip(*front), where="post", color="black", lw=1, alpha=0.6, label="front of all students")
    teachers = {(r.teacher_params, r.teacher_test_accuracy) for r in measured if r.teacher_test_accuracy is not None}
    for params, accuracy in sorted(teachers):
        ax.axhline(100 * accuracy, color="goldenrod", ls="--", lw=1)
        ax.scatter([params], [100 * accuracy], marker="*", s=220, color="gold", edgecolor="black", zorder=5,
                   label=f"teacher ({100 * accuracy:.2f} %)")
    log_count_axis(ax)
    ax.set_xlabel("student parameters (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save(figure, path)


def draw_band(ax: Any, curves: list[list[dict[str, float]]], key: str, label: str) -> None:
    by_epoch: dict[int, list[float]] = {}
    for curve in curves:
        for point in curve:
            if point.get(key) is not None:
                by_epoch.setdefault(point["epoch"], []).append(point[key])
    if not by_epoch:
        return
    epochs = sorted(by_epoch)
    values = [np.array(by_epoch[e]) for e in epochs]
    line = ax.plot(epochs, [v.mean() for v in values], label=f"{label} ({len(curves)} seed(s))")[0]
    if len(curves) > 1:
        ax.fill_between(epochs, [v.min() for v in values], [v.max() for v in values], color=line.get_color(),
                        alpha=0.2)


def plot_manifold(path: Path, title: str, axis: np.ndarray, surfaces: dict[str, np.ndarray]) -> Path:
    figure = Figure(figsize=(5.5 * len(surfaces), 4.8), constrained_layout=True)
    axes = figure.subplots(1, len(surfaces), squeeze=False)[0]
    for ax, (name, surface) in zip(axes, surfaces.items()):
        image = ax.contourf(axis, axis, surface, levels=20, cmap="viridis")
        ax.contour(axis, axis, surface, levels=10, colors="white", linewidths=0.5)
        ax.set_xlabel("compression C = 1 - params(student)/params(teacher)")
        ax.set_ylabel("accuracy ratio A = acc(student)/acc(teacher)")
        ax.set_title(name)
        figure.colorbar(image, ax=ax)
    figure.suptitle(title)
    return save(figure, path)


def save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=110)
    return path
