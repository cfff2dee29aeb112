"""`n2n experiment NAME`: run every variant x seed of an experiment, then write its table and plots.

Each run is an ordinary run folder under OUT/runs/; a finished one is kept and not run
again, a killed one is resumed, so an interrupted experiment loses nothing.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..config import SearchConfig, from_dict
from ..errors import ConfigError
from .manifold import write_manifold
from .results import RunRow, run_row, write_results
from .spec import Experiment, fill, load_experiment, variant_seeds, variant_settings

log = logging.getLogger(__name__)


def run_experiment(name: str, *, scale: str | None = None, out: str | Path | None = None,
                   data_dir: str | Path | None = None, device: str | None = None,
                   progress: bool = True) -> Path:
    """Run experiment `name` (a file in experiments/, or a path) and return its output folder."""
    experiment = load_experiment(name, scale)
    folder = Path(out) if out else default_folder(experiment)
    folder.mkdir(parents=True, exist_ok=True)
    if experiment.kind == "reward-manifold":
        write_manifold(folder, experiment)
        return folder
    configs = {(variant, seed): run_config(experiment, variant, seed, folder)
               for variant in experiment.variants for seed in variant_seeds(experiment, variant)}  # all checked before any run
    rows: list[RunRow] = []
    for number, ((variant, seed), (teacher, dataset, config)) in enumerate(configs.items(), start=1):
        log.info("experiment %s: run %d/%d (%s, seed %d)", experiment.name, number, len(configs), variant, seed)
        run_dir = folder / "runs" / f"{variant}-seed{seed}"
        ensure_teacher(experiment, teacher, folder, data_dir, device, progress)
        run_once(run_dir, teacher, dataset, config, experiment.limit, data_dir, device, progress)
        rows.append(run_row(run_dir, variant, seed))
    write_results(folder, experiment, rows)
    return folder


def default_folder(experiment: Experiment) -> Path:
    suffix = "" if experiment.scale == "default" else f"-{experiment.scale}"
    return Path("results") / f"{experiment.name}{suffix}"


def run_config(experiment: Experiment, variant: str, seed: int,
               folder: Path) -> tuple[str, str | None, SearchConfig]:
    teacher, dataset, options = variant_settings(experiment, variant, seed, folder)
    where = f"experiment {experiment.name}, variant {variant}"
    try:
        config = from_dict(SearchConfig, options, where).validate()
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    return teacher, dataset, config


def ensure_teacher(experiment: Experiment, teacher: str, folder: Path, data_dir: Any, device: str | None,
                   progress: bool) -> None:
    """Train a missing teacher from the experiment's recipe for it; without one, say how to make it."""
    if Path(teacher).is_file():
        return
    recipe = {fill(path, folder, 0): how for path, how in experiment.teachers.items()}.get(teacher)
    if recipe is None:
        raise ConfigError(f"teacher {teacher} does not exist: train it first with "
                          f"`n2n train-teacher --model MODEL --dataset DATASET --out {teacher}`")
    from ..teacher import train_teacher

    log.info("training the missing teacher %s (%s)", teacher, recipe)
    options = dict(recipe)
    model, dataset = options.pop("model"), options.pop("dataset")
    Path(teacher).parent.mkdir(parents=True, exist_ok=True)
    train_teacher(model, dataset, out=teacher, data_dir=data_dir, device=device, limit=experiment.limit,
                  progress=progress, **options)


def run_once(run_dir: Path, teacher: str, dataset: str | None, config: SearchConfig, limit: int | None,
             data_dir: Any, device: str | None, progress: bool) -> None:
    from ..run import compress_checkpoint, resume_run

    if (run_dir / "summary.json").is_file():
        log.info("%s has finished already: kept", run_dir)
    elif (run_dir / "config.yaml").is_file():
        log.info("%s was interrupted: resuming it", run_dir)
        resume_run(run_dir, progress=progress)
    else:
        compress_checkpoint(teacher, run_dir, config, dataset=dataset, data_dir=data_dir, device=device,
                            limit=limit, force=run_dir.exists(), progress=progress)
