"""The paper's experiments as files under experiments/, each run by `n2n experiment NAME`."""
from .runner import run_experiment
from .spec import list_experiments, load_experiment

__all__ = ["list_experiments", "load_experiment", "run_experiment"]
