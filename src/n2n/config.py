"""The configuration of a compression run: dataclasses with their defaults, YAML in and out."""
from __future__ import annotations

import importlib.util
import math
import sys
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from .arch.groups import CRITERIA
from .arch.rewrite import DEFAULT_MIN_WIDTH, INIT_MODES
from .checks import check_real, check_seed, check_whole, is_real_number, is_whole_number
from .distill.losses import LOSSES
from .distill.trainer import DistillConfig
from .errors import ConfigError
from .policies.shrink import DEFAULT_RATIOS
from .search.executors import EXECUTOR_CHOICES
from .search.reinforce import ALGORITHMS
from .search.reward import DEFAULT_HORIZON, REWARDS

STAGES = ("removal", "shrinkage")
# Upper bounds that refuse a typo of many zeros at once, before it costs memory or time:
# policy epochs, rollouts and proxy epochs far beyond any real search; layer widths and
# batches far beyond any CNN this tool compresses.
MAX_COUNT = 10_000
MAX_WIDTH = 65_536
MAX_LAYERS = 64
MAX_BATCH = 1 << 20
MAX_WORKERS = 1024  # processes or Ray tasks at once: beyond any machine or cluster this runs on
# A config file is a few dozen options: a bound on its nodes, aliases expanded, refuses a
# "billion laughs" file (a few hundred bytes whose aliases expand to millions of nodes)
# before any Python object is built from it.
MAX_YAML_NODES = 100_000
# n2n: the two-stage policy search; random: the same search without policy updates;
# uniform, prune, global, kd: the baselines of n2n.baselines
METHODS = ("n2n", "random", "uniform", "prune", "global", "kd")
# auto: "accuracy" when a budget (max_params, max_flops or compression) is given, else "paper"
REWARD_CHOICES = ("auto", *REWARDS)
# Every SearchConfig field with a fixed set of values, and that set: validation and the
# command line's choices both read it, so a value added in its owning module shows up in both.
CHOICES: dict[str, tuple[str, ...]] = {
    "method": METHODS, "algorithm": ALGORITHMS, "init": INIT_MODES, "keep_channels": CRITERIA,
    "reward": REWARD_CHOICES, "executor": EXECUTOR_CHOICES,
}


@dataclass
class PolicyConfig:
    hidden_size: int
    num_layers: int = 2
    lr: float = 0.003
    # children sampled per policy epoch of this stage (None: the search's `rollouts`);
    # the removal stage of a small teacher has few distinct children, so once the cache
    # holds them more rollouts cost policy steps only
    rollouts: int | None = None
    # epochs over which this stage's constraints harden (None: the search's annealing_horizon)
    annealing_horizon: int | None = None


@dataclass
class SearchConfig:
    method: str = "n2n"
    stages: tuple[str, ...] = STAGES
    # The defaults are the settings measured best on two CPU cores (conv4 on Fashion-MNIST, see
    # docs/RESULTS.md); experiments/paper.yaml holds the paper's, for its scale.
    epochs_per_stage: int = 10
    rollouts: int = 5
    algorithm: str = "reinforce"  # or "actor-critic"
    init: str = "inherit"  # or "scratch"
    # the channels a shrunk layer keeps: "contribution" (what the next layer gets from each) or
    # "l1" (the largest filter norms, Li et al.; the choice before the contribution measure)
    keep_channels: str = "contribution"
    seed: int = 0
    baseline_decay: float = 0.9
    entropy_coef: float = 0.0
    # With 10 policy epochs instead of the paper's 100+, larger policy steps (paper: 0.003 and
    # 0.1; 0.1 collapses the shrinking policy onto one child within a few epochs at this scale).
    removal_policy: PolicyConfig = field(default_factory=lambda: PolicyConfig(hidden_size=30, lr=0.02))
    shrink_policy: PolicyConfig = field(default_factory=lambda: PolicyConfig(hidden_size=50, lr=0.03))
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    min_width: int = DEFAULT_MIN_WIDTH
    # modules left exactly as they are (e.g. the classifier): never removed, never shrunk
    ignored_layers: tuple[str, ...] = ()
    round_to: int = 1  # kept widths are multiples of it (e.g. 8: unaligned widths can run slower)
    max_params: int | None = None
    max_flops: int | None = None
    compression: float | None = None  # at most teacher params / compression
    min_accuracy: float | None = None
    # accuracy: every child is brought inside the budget and rewarded by its accuracy relative
    # to the teacher's; paper: C(2-C) * accuracy ratio, limits as soft-then-hard constraints
    reward: str = "auto"
    annealing_horizon: int = DEFAULT_HORIZON
    # lr 5e-3: from inherited weights one epoch at 1e-3 left removal children 15-30 points
    # below where 5e-3 brings them (measured on conv4 / Fashion-MNIST); Hinton's loss on 15,000
    # images ranks children as the demo measured; the student gets 5 epochs on every image,
    # augmented and labelled by the teacher batch by batch
    proxy: DistillConfig = field(default_factory=lambda: DistillConfig(loss="kd", lr=5e-3, subset=15_000))
    final: DistillConfig = field(
        default_factory=lambda: DistillConfig(loss="kd", lr=3e-3, epochs=5, subset=None, augment=True))
    # multi-fidelity selection: before a stage's best child becomes its best (and the next
    # stage's parent), its `rescore_top` best distinct children are trained again from their
    # start for `rescore_epochs` proxy epochs on `rescore_subset` training images (None: the
    # proxy's) and the best of those kept (0: off). With a cheap proxy (a small subset, BatchNorm
    # recalibrated) as the screen, the re-score is the longer look at the few it passes.
    rescore_top: int = 0
    rescore_epochs: int = 3
    rescore_subset: int | None = None
    policy_from: str | None = None
    executor: str = "auto"
    workers: int = 1  # worker processes, or Ray tasks at once
    ray_address: str | None = None  # None: a local Ray instance
    # --method kd: the hand-picked student, a zoo model (default: the teacher's own) at this width
    # (None: the widest within the budget; 0.4 without one)
    student_model: str | None = None
    student_width: float | None = None

    def validate(self) -> "SearchConfig":
        """Every option by type and range, before any folder, data or teacher pass exists."""
        self.check_stages()
        self.check_choices()
        self.check_counts()
        for name in ("removal_policy", "shrink_policy"):
            check_policy(name, getattr(self, name))
        for name in ("proxy", "final"):
            check_distill(name, getattr(self, name))
        self.check_budget()
        self.check_pruning()
        self.check_executor()
        for name in ("policy_from", "student_model"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"{name.replace('_', '-')} must be a name or path, got {value!r}")
        if self.student_width is not None:
            check_real("student-width (a width multiplier)", self.student_width, 0, 1, open_low=True)
        return self

    def check_stages(self) -> None:
        stages = self.stages if isinstance(self.stages, tuple) else ()
        unknown = [s for s in stages if not isinstance(s, str) or s not in STAGES]
        if unknown or not stages:
            raise ConfigError(f"unknown stage(s) {unknown or self.stages}: choose from {', '.join(STAGES)}")
        if len(set(stages)) != len(stages):
            raise ConfigError(f"stages must each be named once, got {', '.join(stages)}")

    def check_counts(self) -> None:
        """Counts that size the search: bounded, so a typo of many zeros is refused at once."""
        for name in ("epochs_per_stage", "rollouts"):
            check_whole(name.replace("_", "-"), getattr(self, name), 1, MAX_COUNT)
        check_whole("min-width", self.min_width, 1, MAX_WIDTH)
        check_whole("annealing-horizon", self.annealing_horizon, 0, MAX_COUNT)
        check_whole("rescore-top", self.rescore_top, 0, MAX_COUNT)
        check_whole("rescore-epochs", self.rescore_epochs, 1, MAX_COUNT)
        if self.rescore_subset is not None:
            check_whole("rescore-subset", self.rescore_subset, 1)
        check_seed("seed", self.seed)
        check_real("baseline-decay", self.baseline_decay, 0, 1)
        check_real("entropy-coef", self.entropy_coef, -math.inf)
        ratios = self.ratios if isinstance(self.ratios, tuple) else None
        if not ratios or len(ratios) > MAX_COUNT or not all(is_real_number(r) and 0 < r <= 1 for r in ratios):
            raise ConfigError(f"shrink ratios must be a list of numbers in (0, 1], got {self.ratios!r}")

    def check_budget(self) -> None:
        for name in ("max_params", "max_flops"):
            value = getattr(self, name)
            if value is not None and not is_whole_number(value, 1):
                raise ConfigError(f"--{name.replace('_', '-')} must be a whole number of at least 1, got {value!r}")
        if self.compression is not None and not (is_real_number(self.compression) and self.compression > 1):
            raise ConfigError(f"--compression is a factor above 1 (e.g. 10 for a student 10x smaller), "
                              f"got {self.compression!r}")
        if self.reward == "accuracy" and not self.has_budget:
            raise ConfigError("--reward accuracy needs a budget: --max-params, --max-flops or --compression")
        if self.min_accuracy is not None and not (is_real_number(self.min_accuracy) and 0 <= self.min_accuracy <= 1):
            raise ConfigError("--min-accuracy is a fraction between 0 and 1 (e.g. 0.9)")
        if self.method in ("prune", "global") and not self.has_budget:
            raise ConfigError(f"--method {self.method} needs a budget to prune the teacher to: --max-params, "
                              "--max-flops or --compression")

    def check_pruning(self) -> None:
        names = self.ignored_layers if isinstance(self.ignored_layers, tuple) else None
        if names is None or not all(isinstance(name, str) and name.strip() for name in names):
            raise ConfigError(f"ignored-layers must be module names (e.g. fc,layer4.1), got {self.ignored_layers!r}")
        if isinstance(self.round_to, bool) or not isinstance(self.round_to, int) or not 1 <= self.round_to <= 4096:
            raise ConfigError(f"round-to must be a whole number from 1 to 4096, got {self.round_to!r}")

    @property
    def view_options(self) -> dict[str, Any]:
        """What NetworkView.build takes of this config."""
        return {"ignored_layers": self.ignored_layers, "round_to": self.round_to}

    def check_choices(self) -> None:
        """Every option with a fixed set of values holds one of them. Named as a config file
        spells it: a flag's bad value never gets here, argparse's choices refuse it first."""
        for name, allowed in CHOICES.items():
            check_choice(name, getattr(self, name), allowed)
        for name in ("proxy", "final"):
            check_choice(f"{name}.loss", getattr(self, name).loss, LOSSES)

    @property
    def has_budget(self) -> bool:
        return any(limit is not None for limit in (self.max_params, self.max_flops, self.compression))

    @property
    def reward_kind(self) -> str:
        """The reward the search uses: "accuracy" (budget mode) or "paper"."""
        if self.reward == "auto":
            return "accuracy" if self.has_budget else "paper"
        return self.reward

    def stage_policy(self, stage: str) -> PolicyConfig:
        """The policy settings of stage `stage` ("removal" or "shrinkage")."""
        return self.removal_policy if stage == "removal" else self.shrink_policy

    def stage_rollouts(self, stage: str) -> int:
        """Children sampled per policy epoch of stage `stage`."""
        return self.stage_policy(stage).rollouts or self.rollouts

    def stage_horizon(self, stage: str) -> int:
        """Policy epochs over which the constraints of stage `stage` harden (0: hard at once)."""
        own = self.stage_policy(stage).annealing_horizon
        return self.annealing_horizon if own is None else own

    def check_executor(self) -> None:
        check_whole("--workers", self.workers, 1, MAX_WORKERS)
        if self.ray_address is not None and not isinstance(self.ray_address, str):
            raise ConfigError(f"--ray-address must be an address (host:port or ray://host:port), got {self.ray_address!r}")
        if self.executor == "ray" and importlib.util.find_spec("ray") is None:
            raise ConfigError("--executor ray needs Ray: pip install 'n2n[ray]'")


def check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


def check_policy(name: str, policy: PolicyConfig) -> None:
    check_whole(f"{name}.hidden_size", policy.hidden_size, 1, MAX_WIDTH)
    check_whole(f"{name}.num_layers", policy.num_layers, 1, MAX_LAYERS)
    check_real(f"{name}.lr", policy.lr, 0, open_low=True)
    for field_name, least in (("rollouts", 1), ("annealing_horizon", 0)):
        value = getattr(policy, field_name)
        if value is not None:
            check_whole(f"{name}.{field_name}", value, least, MAX_COUNT)


def check_distill(name: str, config: DistillConfig) -> None:
    """A proxy or final training: how long, on how much, at what step size. The proxy may train
    for 0 epochs (a child scored on its inherited weights, BatchNorm recalibrated where asked)."""
    check_whole(f"{name}.epochs", config.epochs, 0 if name == "proxy" else 1, MAX_COUNT)
    check_whole(f"{name}.calibrate", config.calibrate, 0)
    if config.subset is not None:
        check_whole(f"{name}.subset", config.subset, 1)
    check_whole(f"{name}.batch_size", config.batch_size, 1, MAX_BATCH)
    check_real(f"{name}.lr", config.lr, 0, open_low=True)
    check_real(f"{name}.weight_decay", config.weight_decay, 0)
    check_real(f"{name}.temperature", config.temperature, 0, open_low=True)
    check_real(f"{name}.alpha", config.alpha, 0, 1)


def to_dict(config: Any) -> dict[str, Any]:
    """Plain dict (tuples as lists) fit for YAML and JSON."""
    return _plain(asdict(config))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def from_dict(cls: type, values: dict[str, Any], where: str = "config", base: Any = None) -> Any:
    """Dataclass `cls` from a nested dict over `base` (default: cls()), refusing unknown keys by name."""
    if isinstance(values, cls):
        return values
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping of option names to values")
    base = cls() if base is None else base
    unknown = sorted(map(str, set(values) - {f.name for f in fields(cls)}))  # YAML keys may be numbers
    if unknown:
        raise ConfigError(f"unknown option(s) in {where}: {', '.join(unknown)}")
    changes = {name: coerce(f"{where}.{name}", getattr(base, name), value) for name, value in values.items()}
    return replace(base, **changes)


def coerce(where: str, current: Any, value: Any) -> Any:
    """`value` in the type of the option's current value, or a ConfigError naming the option."""
    if is_dataclass(current):
        return from_dict(type(current), value, where, base=current)
    if current is None or value is None:
        return value  # optional limits and paths: checked by validate()
    if isinstance(current, tuple):
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        if isinstance(value, (list, tuple)):
            return tuple(value)
    elif isinstance(current, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(current, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(current, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) <= sys.float_info.max:
            return float(value)  # a bigger int has no float: float() would raise OverflowError
    elif isinstance(current, str):
        if isinstance(value, str):
            return value
    raise ConfigError(f"{where} must be a {type(current).__name__}, got {value!r}")


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder, not a YAML file")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path} is not a YAML file: it is not UTF-8 text (byte {error.start})") from None
    if "\x00" in text:
        raise ConfigError(f"{path} is not a YAML file: it holds binary data")
    try:
        values = safe_load_bounded(text, path) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML ({error.__class__.__name__})") from error
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold a mapping of option names to values")
    return values


def safe_load_bounded(text: str, path: Path) -> Any:
    """yaml.safe_load, refusing a document of more than MAX_YAML_NODES nodes before it is built."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if count_nodes(node, MAX_YAML_NODES) > MAX_YAML_NODES:
            raise ConfigError(f"{path} expands to more than {MAX_YAML_NODES:,} YAML nodes (its aliases "
                              "repeat whole sections): no config is that large; write it out plainly")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def count_nodes(root: yaml.Node, bound: int) -> int:
    """Nodes of the document with every alias expanded, counting stops once past `bound`
    (so a self-referencing or exponential document costs `bound` steps at most)."""
    count, stack = 0, [root]
    while stack and count <= bound:
        node = stack.pop()
        count += 1
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            stack.extend(part for pair in node.value for part in pair)
    return count


def dump_yaml(values: dict[str, Any]) -> str:
    return yaml.safe_dump(values, sort_keys=False)
