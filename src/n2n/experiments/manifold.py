"""The reward manifold (paper Fig. 14): N2N's reward against a naive symmetric one over
(compression, accuracy), computed from the reward functions the search uses; nothing is trained.

Naive symmetric reward, as we read the figure: R = C * R_a, which scores a model with
compression 0.9 and accuracy ratio 0.5 exactly like one with 0.5 and 0.9. N2N's
R = C (2 - C) * R_a gives the small inaccurate model less than the large accurate one.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..files import atomic_write_text
from ..search.reward import accuracy_reward, compression_reward
from .plots import plot_manifold
from .spec import Experiment

# (C, R_a) pairs for the table: mirrored pairs show the (a)symmetry
POINTS = ((0.9, 0.5), (0.5, 0.9), (0.8, 0.95), (0.95, 0.8), (0.5, 0.5), (0.99, 0.99))
GRID = 101


def n2n_reward(compression: float, accuracy_ratio: float) -> float:
    """R_c * R_a through the search's own functions, for a teacher of 1,000,000 parameters."""
    teacher = 1_000_000
    student = round((1 - compression) * teacher)
    return compression_reward(student, teacher) * accuracy_reward(accuracy_ratio, 1.0)


def naive_reward(compression: float, accuracy_ratio: float) -> float:
    return compression * accuracy_ratio


def write_manifold(folder: Path, experiment: Experiment) -> None:
    axis = np.linspace(0.0, 1.0, GRID)
    surfaces = {
        "N2N: C(2-C) x A": np.array([[n2n_reward(c, a) for c in axis] for a in axis]),
        "naive: C x A": np.array([[naive_reward(c, a) for c in axis] for a in axis]),
    }
    plot_manifold(folder / "manifold.png", experiment.title, axis, surfaces)
    lines = [f"# {experiment.title}", "", f"Reproduces {experiment.figure}." if experiment.figure else "", "",
             "C: relative compression (1 - student/teacher params); A: student/teacher accuracy.", "",
             "| C | A | N2N reward | naive reward |", "|---|---|---|---|"]
    lines += [f"| {c:g} | {a:g} | {n2n_reward(c, a):.3f} | {naive_reward(c, a):.3f} |" for c, a in POINTS]
    atomic_write_text(folder / "table.md", "\n".join(lines) + "\n")
