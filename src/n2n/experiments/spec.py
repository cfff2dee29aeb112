"""An experiment file: what to run (variants x seeds of a compression run) at which scale.

    title: REINFORCE against actor-critic
    figure: paper Figs. 6 and 7
    teacher: teachers/conv4-fashion-mnist.pt
    search: experiments/conv4-floor.yaml          # a search config file, or a mapping of options
    overrides: {epochs_per_stage: 10}      # on top of `search` for every run
    variants: {reinforce: {}, actor-critic: {algorithm: actor-critic}}
    seeds: [0, 1, 2]
    scales:                                # --scale NAME replaces or deepens the keys above
      tiny: {limit: 600, overrides: {...}}
      paper: {teacher: teachers/vgg19-cifar10.pt, dataset: cifar10}

A variant maps search options; it may also name its own `teacher`, `dataset` and `seeds`, and
its values may use {out} (the experiment folder) and {seed}, so one variant can start
from another's policies. `teachers` maps a teacher path to how to train it when missing.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import load_yaml
from ..errors import ConfigError

KINDS = ("runs", "reward-manifold")
RUN_KEYS = ("teacher", "dataset")


@dataclass
class Experiment:
    name: str
    title: str
    kind: str = "runs"
    figure: str | None = None
    teacher: str | None = None
    dataset: str | None = None
    limit: int | None = None
    search: dict[str, Any] = field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    teachers: dict[str, dict[str, Any]] = field(default_factory=dict)
    table: list[str] | None = None  # variants shown in the table (default: all)
    scale: str = "default"
    note: str | None = None


def find_experiment(name: str, folder: str | Path = "experiments") -> Path:
    """The file of experiment `name` in `folder` (or `name` itself when it is a path)."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    candidate = Path(folder) / f"{name}.yaml"
    if candidate.is_file():
        return candidate
    known = ", ".join(list_experiments(folder)) or "none"
    raise ConfigError(f"no experiment {name!r} in {folder}/ (known: {known})")


def list_experiments(folder: str | Path = "experiments") -> list[str]:
    """Names of the experiment files in `folder` (search configs such as conv4-floor.yaml are not experiments)."""
    names = []
    for path in sorted(Path(folder).glob("*.yaml")):
        values = load_yaml(path)
        if "title" in values:
            names.append(path.stem)
    return names


def load_experiment(name: str, scale: str | None = None, folder: str | Path = "experiments") -> Experiment:
    path = find_experiment(name, folder)
    values = load_yaml(path)
    scales = values.pop("scales", {}) or {}
    if scale and scale != "default":
        if scale not in scales:
            raise ConfigError(f"experiment {path.stem} has no scale {scale!r} (it has: "
                              f"{', '.join(['default', *scales]) or 'default'})")
        values = merged(values, scales[scale])
    values["search"] = search_options(values.get("search"), values.pop("overrides", None), path)
    unknown = sorted(set(values) - set(Experiment.__dataclass_fields__))
    if unknown:
        raise ConfigError(f"unknown key(s) in {path}: {', '.join(unknown)}")
    experiment = Experiment(name=path.stem, scale=scale or "default", **values)
    return checked(experiment, path)


def merged(base: dict[str, Any], scale: dict[str, Any]) -> dict[str, Any]:
    """`base` with `scale` on top; the option mappings (`overrides`) merge one level deeper."""
    out = copy.deepcopy(base)
    for key, value in scale.items():
        if key == "overrides" and isinstance(value, dict):
            out[key] = {**(out.get(key) or {}), **value}
        else:
            out[key] = value
    return out


def search_options(search: Any, overrides: Any, path: Path) -> dict[str, Any]:
    if isinstance(search, str):
        search = load_yaml(search)
    if search is not None and not isinstance(search, dict):
        raise ConfigError(f"{path}: search must name a config file or map options")
    if overrides is not None and not isinstance(overrides, dict):
        raise ConfigError(f"{path}: overrides must map options")
    return deep_merge(search or {}, overrides or {})


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in top.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def checked(experiment: Experiment, path: Path) -> Experiment:
    if experiment.kind not in KINDS:
        raise ConfigError(f"{path}: kind must be one of {', '.join(KINDS)}")
    if experiment.kind == "runs":
        if not experiment.variants:
            raise ConfigError(f"{path}: an experiment of runs needs at least one variant")
        if not experiment.seeds or any(not isinstance(s, int) for s in experiment.seeds):
            raise ConfigError(f"{path}: seeds must be a list of whole numbers")
        if any(not isinstance(v, dict) for v in experiment.variants.values()):
            raise ConfigError(f"{path}: each variant maps search options")
    return experiment


def variant_seeds(experiment: Experiment, variant: str) -> list[int]:
    """The variant's own `seeds` (e.g. one for a deterministic baseline), else the experiment's."""
    return list(experiment.variants[variant].get("seeds", experiment.seeds))


def experiment_runs(experiment: Experiment) -> list[tuple[str, int]]:
    """Every (variant, seed) the experiment runs, in its order."""
    return [(variant, seed) for variant in experiment.variants for seed in variant_seeds(experiment, variant)]


def selected_runs(experiment: Experiment, variants: list[str] | None = None,
                  seeds: list[int] | None = None) -> list[tuple[str, int]]:
    """The experiment's runs of the given variants and seeds (None: all); a name the experiment does
    not have, or a choice that leaves no run, is an error that says what it has."""
    if (variants is not None and not variants) or (seeds is not None and not seeds):
        raise ConfigError("pick at least one variant and one seed, or leave the choice out to run them all")
    unknown = [name for name in variants or [] if name not in experiment.variants]
    if unknown:
        raise ConfigError(f"experiment {experiment.name} has no variant {', '.join(unknown)}; "
                          f"it has {', '.join(experiment.variants)}")
    picked = [run for run in experiment_runs(experiment) if variants is None or run[0] in variants]
    runs = [run for run in picked if seeds is None or run[1] in seeds]
    if not runs:
        have = sorted({seed for _, seed in picked})
        raise ConfigError(f"experiment {experiment.name} has no run of seed(s) {', '.join(map(str, seeds or []))} "
                          f"among the variants picked; their seeds: {', '.join(map(str, have)) or 'none'}")
    return runs


def variant_settings(experiment: Experiment, variant: str, seed: int, out: Path) -> tuple[str, str | None, dict]:
    """(teacher, dataset, search options) of one run, with {out} and {seed} filled in."""
    values = {key: fill(value, out, seed) for key, value in experiment.variants[variant].items() if key != "seeds"}
    teacher = fill(values.pop("teacher", experiment.teacher), out, seed)
    dataset = values.pop("dataset", experiment.dataset)
    if teacher is None:
        raise ConfigError(f"experiment {experiment.name}: variant {variant} names no teacher")
    return teacher, dataset, deep_merge(experiment.search, {**values, "seed": seed})


def fill(value: Any, out: Path, seed: int) -> Any:
    if isinstance(value, str):
        return value.replace("{out}", str(out)).replace("{seed}", str(seed))
    if isinstance(value, dict):
        return {key: fill(item, out, seed) for key, item in value.items()}
    return value
