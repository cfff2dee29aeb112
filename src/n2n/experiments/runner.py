"""`n2n experiment NAME`: run every variant x seed of an experiment, then write its table and plots.

Each run is an ordinary run folder under OUT/runs/; a finished one is kept and not run
again, a killed one is resumed, so an interrupted experiment loses nothing.
"""
from __future__ import annotations

import fcntl
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..config import SearchConfig, from_dict
from ..errors import ConfigError, RunInUseError
from .manifold import write_manifold
from .results import RunRow, run_row, write_results
from .spec import Experiment, experiment_runs, fill, load_experiment, selected_runs, variant_settings

log = logging.getLogger(__name__)

# in the experiment's folder: the lock under which a missing teacher is trained
TEACHER_LOCK = ".teacher.lock"


def run_experiment(name: str, *, scale: str | None = None, out: str | Path | None = None,
                   data_dir: str | Path | None = None, device: str | None = None, progress: bool = True,
                   variants: list[str] | None = None, seeds: list[int] | None = None,
                   table_only: bool = False) -> Path:
    """Run experiment `name` (a file in experiments/, or a path) and return its output folder.

    `variants` and `seeds` pick some of its runs (several processes, or machines sharing the
    folder, can each take a part; a run another process holds is skipped); `table_only` runs
    nothing. The table and plots always show every finished run of the experiment."""
    experiment = load_experiment(name, scale)
    folder = Path(out) if out else default_folder(experiment)
    if experiment.kind == "reward-manifold":
        if variants or seeds or table_only:
            raise ConfigError(f"experiment {experiment.name} draws a figure and has no runs: "
                              "--variants, --seeds and --table-only do not apply")
        folder.mkdir(parents=True, exist_ok=True)
        write_manifold(folder, experiment)
        return folder
    chosen = selected_runs(experiment, variants, seeds)
    configs = {run: run_config(experiment, *run, folder) for run in chosen}  # all checked before any run
    if table_only and not (folder / "runs").is_dir():
        raise ConfigError(f"{folder} holds no runs of experiment {experiment.name} to tabulate")
    folder.mkdir(parents=True, exist_ok=True)
    if not table_only:
        run_all(experiment, configs, folder, data_dir, device, progress)
    write_results(folder, experiment, finished_rows(experiment, folder))
    return folder


def run_all(experiment: Experiment, configs: dict[tuple[str, int], tuple[str, str | None, SearchConfig]],
            folder: Path, data_dir: Any, device: str | None, progress: bool) -> None:
    """Each chosen run in turn: kept when finished, resumed when killed, skipped when another process
    holds it, started otherwise."""
    for number, ((variant, seed), (teacher, dataset, config)) in enumerate(configs.items(), start=1):
        log.info("experiment %s: run %d/%d (%s, seed %d)", experiment.name, number, len(configs), variant, seed)
        ensure_teacher(experiment, teacher, folder, data_dir, device, progress)
        try:
            run_once(run_folder(folder, variant, seed), teacher, dataset, config, experiment.limit, data_dir,
                     device, progress)
        except RunInUseError as error:
            log.warning("skipped, another process is running it: %s", error)


def run_folder(folder: Path, variant: str, seed: int) -> Path:
    return folder / "runs" / f"{variant}-seed{seed}"


def finished_rows(experiment: Experiment, folder: Path) -> list[RunRow]:
    """A row for each of the experiment's runs that has finished; the others are named in the log."""
    rows, waiting = [], []
    for variant, seed in experiment_runs(experiment):
        run_dir = run_folder(folder, variant, seed)
        if (run_dir / "summary.json").is_file():
            rows.append(run_row(run_dir, variant, seed))
        else:
            waiting.append(f"{variant}-seed{seed}")
    if waiting:
        log.warning("experiment %s: the table leaves out %d run(s) not finished: %s", experiment.name, len(waiting),
                    ", ".join(waiting))
    return rows


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
    """Train a missing teacher from the experiment's recipe for it; without one, say how to make it.
    Processes sharing the experiment's folder take turns, so the teacher is trained once."""
    if Path(teacher).is_file():
        return
    recipe = {fill(path, folder, 0): how for path, how in experiment.teachers.items()}.get(teacher)
    if recipe is None:
        raise ConfigError(f"teacher {teacher} does not exist: train it first with "
                          f"`n2n train-teacher --model MODEL --dataset DATASET --out {teacher}`")
    from ..teacher import train_teacher

    with waiting_for_lock(folder / TEACHER_LOCK):
        if Path(teacher).is_file():  # another process trained it while this one waited
            return
        log.info("training the missing teacher %s (%s)", teacher, recipe)
        options = dict(recipe)
        model, dataset = options.pop("model"), options.pop("dataset")
        Path(teacher).parent.mkdir(parents=True, exist_ok=True)
        train_teacher(model, dataset, out=teacher, data_dir=data_dir, device=device, limit=experiment.limit,
                      progress=progress, **options)


@contextmanager
def waiting_for_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `path`, waited for; the kernel drops it when its process ends, however."""
    with open(path, "a") as stream:
        fcntl.flock(stream, fcntl.LOCK_EX)
        yield


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
