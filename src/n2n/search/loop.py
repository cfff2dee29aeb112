"""The two-stage N2N search: sample children, score them by distillation, reinforce the policy.

Reads top to bottom like an RL loop: for each stage, for each policy epoch, sample
`rollouts` action sequences, turn each into a child, score it (or take its score from
the cache), compute rewards, update the policy. The best child of a stage is the
parent of the next.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from ..arch import NetworkView, arch_signature, count_flops, count_params, rebuild
from ..arch.budget import Budget, budget_of
from ..config import SearchConfig
from ..distill.data import DistillData
from ..distill.trainer import distill
from ..errors import ConfigError, N2NError
from ..policies.io import policy_for_stage
from ..training import accuracy
from .cache import Score, ScoreCache
from .executors import Job, JobResult, choose_executor, make_executor
from .records import RECORD_KINDS, CandidateRecord, EpochRecord, TeacherRecord
from .reinforce import PolicyTrainer
from .reward import INVALID_REWARD, Constraints, reward
from .stages import Stage, make_stage
from .state import ResumePoint, SearchStore, candidate_key, weights_of

log = logging.getLogger(__name__)
POLICY_KIND = {"removal": "removal", "shrinkage": "shrink"}


@dataclass
class TeacherStats:
    params: int
    flops: int
    val_accuracy: float


@dataclass
class StageResult:
    name: str
    epochs: int
    candidates: int  # children actually trained (cache hits and rejections excluded)
    policy: nn.Module | None  # None for a baseline that samples nothing
    best: CandidateRecord | None = None
    best_child: nn.Module | None = None
    rewrites: list[dict[str, Any]] = field(default_factory=list)  # teacher -> best child
    arch: dict[str, Any] | None = None  # the best child's zoo spec, when it is no rewrite of the teacher

    def summary(self) -> dict[str, Any]:
        best = self.best
        return {
            "name": self.name, "epochs": self.epochs, "candidates": self.candidates,
            "best_reward": best.reward if best else None, "best_params": best.params if best else None,
            "best_val_accuracy": best.val_accuracy if best else None,
        }


@dataclass
class Child:
    """One rollout's child before it is scored: its record so far, the rewrite that made it, the
    cache key of its architecture (None when the rewrite was rejected) and its training seed."""

    record: CandidateRecord
    rewrite: Any
    steps: list[dict[str, Any]]  # the rewrites that make it from its parent
    key: str | None
    seed: int

    @property
    def name(self) -> str:
        return candidate_key(self.record.stage, self.record.epoch, self.record.rollout)

    def job(self, proxy: Any) -> Job:
        return Job(self.name, self.rewrite.child, proxy, self.seed)


class Search:
    """One search run. With a `store`, it snapshots itself at every policy epoch; with
    `resume` it continues a killed run exactly where it stopped."""

    def __init__(self, teacher: nn.Module, data: DistillData, example_input: torch.Tensor, config: SearchConfig,
                 *, on_record: Callable[[Any], None] | None = None, progress: bool = True,
                 store: SearchStore | None = None, resume: ResumePoint | None = None) -> None:
        self.teacher, self.data, self.example_input = teacher.eval(), data, example_input
        self.config = config.validate()
        self.cache = ScoreCache()
        # Every child of the run trains on the same proxy subset: a fair comparison, and
        # the subset is drawn once instead of once per child.
        # The teacher goes with the data to every worker only where it labels augmented batches.
        self.proxy_data = replace(data.subset(config.proxy.subset, config.seed),
                                  teacher=self.teacher if config.proxy.augment else None)
        self.proxy = replace(config.proxy, subset=None)
        # the inline executor distils with this module's `distill`, so a test can watch every child
        choice = choose_executor(config.executor, config.workers, data.train_images.device)
        self.executor = make_executor(choice.name, self.proxy_data, workers=choice.workers,
                                      ray_address=config.ray_address, train=distill)
        log.info("children train on the %s (%s)", self.executor.describe(), choice.why)
        if choice.name == "inline" and config.workers > 1:
            log.warning("--workers %d is ignored by the inline executor: choose --executor process or ray",
                        config.workers)
        self.on_record = on_record or (lambda record: None)
        self.progress = progress
        resume = resume or ResumePoint(snapshot=None)
        self.store, self.snapshot_state, self.replay = store, resume.snapshot, resume.replay
        self.history: list[Any] = list(resume.history)
        self.results: list[StageResult] = []
        self.teacher_stats = TeacherStats(
            params=count_params(teacher), flops=count_flops(teacher, example_input),
            val_accuracy=accuracy(teacher, data.val_images, data.val_labels),
        )
        if self.teacher_stats.val_accuracy <= 0:
            raise N2NError("the teacher gets no validation image right, so no student can be scored against it: "
                           "check that the teacher and the data set belong together")
        warn_if_near_chance(self.teacher_stats.val_accuracy, teacher, example_input)
        limits = budget_of(config, self.teacher_stats.params) or Budget()
        self.constraints = Constraints(limits.max_params, limits.max_flops, config.min_accuracy)
        # budget mode: every child is brought inside the limits instead of being penalised for them
        self.budget: Budget | None = limits if config.reward_kind == "accuracy" else None
        if self.budget is not None:
            log.info("budget mode: every child is fitted to %s", self.budget.describe())
        if not self.history:
            self.emit(TeacherRecord(**asdict(self.teacher_stats)))
        if self.snapshot_state is not None:
            self.cache.load_state_dict(self.snapshot_state["cache"])

    def run(self) -> list[StageResult]:
        try:
            for index, name in enumerate(self.config.stages):
                parent, rewrites = self.parent_of(index)
                stage = make_stage(name, self.config, self.budget)
                self.results.append(self.run_stage(index, stage, parent, rewrites))
        finally:
            self.close()
        return self.results

    def student_stage(self, stages: list[StageResult]) -> StageResult | None:
        """The stage whose best child becomes the student: the last that found one; in budget mode,
        where every child of every stage sits at the same budget, the one whose best scored highest."""
        found = [stage for stage in stages if stage.best_child is not None]
        if self.budget is None or not found:
            return found[-1] if found else None
        return max(reversed(found), key=lambda stage: stage.best.reward)  # a tie goes to the later stage

    def close(self) -> None:
        """Stop the executor's workers (they start again if more children need training)."""
        self.executor.close()

    def parent_of(self, index: int) -> tuple[nn.Module, list[dict[str, Any]]]:
        """The best child of the last stage that found one; the teacher before that.

        In budget mode the next stage starts from that child's layers at their full widths, with
        the teacher's weights, and fits each of its own children to the budget anew: its parent is
        chosen for what shrinking can make of it, and every child of both stages starts alike."""
        for result in reversed(self.results[:index]):
            if result.best_child is None:
                continue
            if self.budget is None:
                return result.best_child, result.rewrites
            removals = [step for step in result.rewrites if step.get("op") != "shrink"]
            torch.manual_seed(self.config.seed * 7919 + index)  # layers refitted after a removal start alike
            parent = rebuild(copy.deepcopy(self.teacher), self.example_input, removals)
            return parent.to(self.example_input.device), removals
        return self.teacher, []

    # ---- one stage -------------------------------------------------------------------------
    def run_stage(self, index: int, stage: Stage, parent: nn.Module, rewrites: list[dict]) -> StageResult:
        cfg = self.config
        view = NetworkView.build(parent, self.example_input, **cfg.view_options)
        if stage.name == "shrinkage" and not view.groups:  # every group fixed, e.g. by ignored_layers
            log.warning("the shrinkage stage is skipped: its parent has no channel group it may shrink")
            return StageResult(stage.name, 0, 0, None)
        # a fresh policy's weights come from the global generator: seed it here, so a resumed
        # run builds the same policy whatever it did (or skipped) before this stage
        torch.manual_seed(cfg.seed * 7919 + index)
        policy = self.initial_policy(stage)
        trainer = PolicyTrainer(policy, lr=cfg.stage_policy(stage.name).lr, algorithm=cfg.algorithm,
                                baseline_decay=cfg.baseline_decay, entropy_coef=cfg.entropy_coef)
        generator = torch.Generator().manual_seed(cfg.seed * 7919 + index)
        result = StageResult(stage.name, cfg.epochs_per_stage, 0, policy)
        first_epoch = self.restore_stage(index, parent, rewrites, trainer, generator, result)
        rollouts = cfg.stage_rollouts(stage.name)
        # counts policy epochs, advanced by each child that trains: cache hits take no time, so
        # counting them would make the remaining time look shorter or longer than it is
        bar = tqdm(total=cfg.epochs_per_stage, initial=first_epoch, desc=f"stage {index + 1} {stage.name}",
                   unit="epoch", bar_format="{l_bar}{bar}| {n:.1f}/{total} [{elapsed}<{remaining}{postfix}]",
                   disable=not self.progress)
        for epoch in range(first_epoch, cfg.epochs_per_stage):
            started = time.perf_counter()
            outputs = [stage.sample(policy, view, generator) for _ in range(rollouts)]
            children = [self.make_child(stage, index, parent, view, output.actions, epoch, rollout)
                        for rollout, output in enumerate(outputs)]
            records = self.score_epoch(children, result, rewrites, bar)
            # random search samples from the untrained initial policy: the same action
            # spaces and budget as N2N, without learning
            metrics = trainer.update(outputs, [r.reward for r in records]) if cfg.method == "n2n" else {}
            summary = self.emit(self.epoch_record(stage.name, epoch, records, metrics, result,
                                                  time.perf_counter() - started))
            self.snapshot(index, epoch + 1, trainer, generator, result)
            log.info("%s epoch %d/%d: mean reward %.3f, best %.3f (%s params, val accuracy %.2f%%)%s", stage.name,
                     epoch + 1, cfg.epochs_per_stage, summary.reward_mean, summary.best_reward,
                     f"{summary.best_params:,}", 100 * summary.best_val_accuracy, rejection_summary(records))
            bar.n = epoch + 1
            bar.set_postfix_str(progress_note(result))
        bar.close()
        return result

    def initial_policy(self, stage: Stage) -> nn.Module:
        value_head = self.config.algorithm == "actor-critic"
        source = self.config.policy_from
        if not source:
            return stage.make_policy(value_head)
        policy = policy_for_stage(source, POLICY_KIND[stage.name])
        if policy is None:
            log.info("no %s policy in %s: starting that stage from scratch", stage.name, source)
            return stage.make_policy(value_head)
        if value_head and policy.value is None:
            raise ConfigError(f"the {stage.name} policy in {source} has no value head, "
                              "which --algorithm actor-critic needs")
        log.info("starting %s from the policy in %s (transfer)", stage.name, source)
        return policy

    # ---- snapshots and resume --------------------------------------------------------------
    def snapshot(self, index: int, next_epoch: int, trainer: PolicyTrainer, generator: torch.Generator,
                 result: StageResult) -> None:
        if self.store is None:
            return
        stages = [self.stage_state(r, self.config.epochs_per_stage, None, None) for r in self.results]
        stages.append(self.stage_state(result, next_epoch, trainer, generator))
        self.store.save_snapshot({"stages": stages, "cache": self.cache.state_dict(), "records": len(self.history)})

    @staticmethod
    def stage_state(result: StageResult, next_epoch: int, trainer: PolicyTrainer | None,
                    generator: torch.Generator | None) -> dict[str, Any]:
        return {
            "name": result.name, "next_epoch": next_epoch, "candidates": result.candidates,
            "policy": result.policy.state_dict(), "trainer": trainer.state_dict() if trainer else None,
            "generator": generator.get_state() if generator is not None else None,
            "best": asdict(result.best) if result.best else None, "rewrites": result.rewrites,
            "best_child": weights_of(result.best_child),
        }

    def restore_stage(self, index: int, parent: nn.Module, rewrites: list[dict], trainer: PolicyTrainer,
                      generator: torch.Generator, result: StageResult) -> int:
        """Load this stage's state from the resume snapshot; returns the first epoch still to run."""
        stages = self.snapshot_state["stages"] if self.snapshot_state else []
        if index >= len(stages):
            return 0
        state = stages[index]
        result.policy.load_state_dict(state["policy"])
        if state["trainer"] is not None:
            trainer.load_state_dict(state["trainer"])
            generator.set_state(state["generator"])
        result.candidates, result.rewrites = state["candidates"], state["rewrites"]
        if state["best"] is not None:
            result.best = record_of(state["best"])
            result.best_child = self.rebuilt_child(state["rewrites"], state["best_child"])
        return state["next_epoch"]

    def rebuilt_child(self, rewrites: list[dict], weights: dict[str, torch.Tensor]) -> nn.Module:
        from ..arch import rebuild

        child = rebuild(copy.deepcopy(self.teacher), self.example_input, rewrites)
        child.load_state_dict(weights)
        return child.to(self.example_input.device)

    # ---- one policy epoch's children -------------------------------------------------------
    def make_child(self, stage: Stage, stage_index: int, parent: nn.Module, view: NetworkView,
                   actions: torch.Tensor, epoch: int, rollout: int) -> Child:
        seed = self.candidate_seed(stage_index, epoch, rollout)
        torch.manual_seed(seed)  # init="scratch" draws from the global generator: same child after a resume
        record = CandidateRecord(stage.name, epoch, rollout, actions.tolist(), INVALID_REWARD)
        rewrite, steps = stage.apply(parent, view, actions, self.example_input)
        # keyed by stage too: with inherited weights the same shapes in another stage are another child
        key = None if rewrite.child is None else f"{stage.name}:{arch_signature(rewrite.child, self.example_input)}"
        return Child(record, rewrite, steps, key, seed)

    def score_epoch(self, children: list[Child], result: StageResult, rewrites: list[dict],
                    bar: Any) -> list[CandidateRecord]:
        """The children that need training train together on the executor; then each is scored
        in rollout order, exactly as if they had been trained one after another."""
        jobs = self.jobs_for(children)
        trained = {r.name: r for r in self.executor.run(jobs, on_result=lambda _: bar.update(1 / len(jobs)))}
        return [self.score(child, result, rewrites, trained) for child in children]

    def jobs_for(self, children: list[Child]) -> list[Job]:
        """One job per architecture of the epoch that is neither in the cache nor replayed from a killed run."""
        jobs, planned = [], set()
        for child in children:
            if child.key is None or child.key in self.cache or child.key in planned:
                continue
            replayed = self.replay.get(child.name)
            if replayed is None:
                jobs.append(child.job(self.proxy))
            if replayed is None or replayed["valid"]:
                planned.add(child.key)  # a later child of the same architecture is a cache hit
        return jobs

    def score(self, child: Child, result: StageResult, rewrites: list[dict],
              trained: dict[str, JobResult]) -> CandidateRecord:
        record, rewrite = child.record, child.rewrite
        if rewrite.child is None:
            return self.emit(self.rejected(record, rewrite.reason or "rejected"))
        score = self.cache.get(child.key)
        record.cached = score is not None
        if score is None:
            replayed = self.replay.get(child.name)
            score, reason = self.replayed_score(replayed) if replayed else self.trained_score(child, trained)
            if score is None:
                return self.emit(self.rejected(record, reason))
            self.cache.put(child.key, score)
            result.candidates += 1
            record.seconds = score.seconds
        record.params, record.flops, record.val_accuracy = score.params, score.flops, score.val_accuracy
        record.reward = self.reward_of(score, record.epoch, self.config.stage_horizon(record.stage))
        if not record.cached and self.is_better(record, result):
            self.keep_best(record, child, result, rewrites + child.steps, trained)
        return self.emit(record)

    def trained_score(self, child: Child, trained: dict[str, JobResult]) -> tuple[Score | None, str]:
        if child.name not in trained:  # its architecture's first child of the epoch failed: this one trains now
            trained[child.name] = self.executor.run([child.job(self.proxy)])[0]
        return self.score_of(child.rewrite, trained[child.name])

    def train(self, rewrite: Any, seed: int, name: str = "candidate") -> tuple[Score | None, str]:
        """Train one child now, on the executor; the child keeps its trained weights."""
        outcome = self.executor.run([Job(name, rewrite.child, self.proxy, seed)])[0]
        if outcome.weights is not None:
            rewrite.child.load_state_dict(outcome.weights)
        return self.score_of(rewrite, outcome)

    @staticmethod
    def score_of(rewrite: Any, outcome: JobResult) -> tuple[Score | None, str]:
        if not outcome.ok:
            return None, outcome.error or "failed"
        return Score(outcome.val_accuracy, rewrite.params, rewrite.flops, outcome.seconds), ""

    @staticmethod
    def replayed_score(replayed: dict[str, Any]) -> tuple[Score | None, str]:
        """The score a killed run wrote for this candidate: it is not trained again."""
        if not replayed["valid"]:
            return None, replayed["reason"]
        return Score(replayed["val_accuracy"], replayed["params"], replayed["flops"], replayed["seconds"]), ""

    def keep_best(self, record: CandidateRecord, child: Child, result: StageResult, rewrites: list[dict],
                  trained: dict[str, JobResult]) -> None:
        ckey, module = child.name, child.rewrite.child
        if ckey in self.replay:
            weights = self.store.load_best(ckey) if self.store else None
            if weights is None:  # killed between scoring and storing it: its training is deterministic
                log.warning("retraining %s to recover its weights", ckey)
                weights = self.recovered_weights(child)
        else:
            weights = trained[ckey].weights
        module.load_state_dict(weights)  # inline, the child trained in place: loads its own weights
        if ckey not in self.replay and self.store is not None:
            self.store.save_best(ckey, weights_of(module))  # before its record: see state.py
        result.best, result.best_child, result.rewrites = record, module, rewrites

    def recovered_weights(self, child: Child) -> dict[str, torch.Tensor]:
        outcome = self.executor.run([child.job(self.proxy)])[0]
        if outcome.weights is None:
            raise N2NError(f"could not train {child.name} again to recover its weights: {outcome.error}")
        return outcome.weights

    def reward_of(self, score: Score, epoch: int, horizon: int) -> float:
        teacher = self.teacher_stats
        return reward(student_params=score.params, teacher_params=teacher.params, student_acc=score.val_accuracy,
                      teacher_acc=teacher.val_accuracy, student_flops=score.flops, constraints=self.constraints,
                      policy_epoch=epoch, horizon=horizon, kind=self.config.reward_kind)

    def hard_reward(self, record: CandidateRecord) -> float:
        """The reward of a scored child with every constraint hard, as after annealing."""
        return self.reward_of(Score(record.val_accuracy, record.params, record.flops, 0.0), 0, horizon=0)

    def is_better(self, record: CandidateRecord, result: StageResult) -> bool:
        """The best child meets every constraint (hard, as after annealing) and has the highest reward."""
        final = self.hard_reward(record)
        if final <= INVALID_REWARD:
            return False
        return result.best is None or final > self.hard_reward(result.best)

    def candidate_seed(self, stage_index: int, epoch: int, rollout: int) -> int:
        return self.config.seed * 1_000_003 + stage_index * 100_003 + epoch * 101 + rollout

    # ---- records ---------------------------------------------------------------------------
    def rejected(self, record: CandidateRecord, reason: str) -> CandidateRecord:
        record.valid, record.reason = False, reason
        log.debug("%s epoch %d rollout %d rejected: %s", record.stage, record.epoch, record.rollout, reason)
        return record

    def epoch_record(self, stage: str, epoch: int, records: list[CandidateRecord], metrics: dict[str, float],
                     result: StageResult, seconds: float) -> EpochRecord:
        rewards = [r.reward for r in records]
        best = result.best
        return EpochRecord(
            stage=stage, epoch=epoch, reward_mean=sum(rewards) / len(rewards), reward_max=max(rewards),
            baseline=metrics.get("baseline/value", math.nan), entropy=metrics.get("policy/entropy", math.nan),
            policy_loss=metrics.get("policy/loss", math.nan), best_reward=best.reward if best else INVALID_REWARD,
            best_params=best.params if best else 0, best_val_accuracy=best.val_accuracy if best else 0.0,
            seconds=seconds,
        )

    def emit(self, record: Any) -> Any:
        self.history.append(record)
        self.on_record(record)
        return record


def warn_if_near_chance(val_accuracy: float, teacher: nn.Module, example_input: torch.Tensor) -> None:
    """A teacher at less than twice chance on the validation data is most likely fed inputs
    prepared otherwise than for its training: every child would be scored against noise."""
    with torch.no_grad():
        classes = int(teacher(example_input).shape[-1])
    if classes > 1 and val_accuracy < 2 / classes:
        log.warning("the teacher scores %.1f%% on the validation data, near chance for %d classes: are the inputs "
                    "prepared (scaled, normalised) as for its training?", 100 * val_accuracy, classes)


def record_of(values: dict[str, Any]) -> Any:
    """A record back from its metrics.jsonl line."""
    kind = values.get("kind", "candidate")
    return RECORD_KINDS[kind](**{k: v for k, v in values.items() if k != "kind"})


def progress_note(result: StageResult) -> str:
    """The stage's best child so far and how many children it trained, for the progress bar."""
    best = result.best
    found = f"best {best.reward:.3f} ({best.params:,} params, {100 * best.val_accuracy:.2f}%)" if best else "none yet"
    return f"{found}, {result.candidates} trained"


def rejection_summary(records: list[CandidateRecord], shown: int = 3) -> str:
    """When most children of an epoch were rejected, how many and their commonest reasons; else "".

    Without it an epoch of rejections says only "mean reward -1.000" at INFO. Reasons that
    differ only in numbers (shapes, parameter counts) count as one, shown by its first instance.
    """
    counts: dict[str, int] = {}
    first: dict[str, str] = {}
    for record in records:
        if not record.valid:
            reason = ((record.reason or "rejected").splitlines() or ["rejected"])[0][:120]
            key = "".join("#" if char.isdigit() else char for char in reason)
            while "##" in key:
                key = key.replace("##", "#")
            counts[key] = counts.get(key, 0) + 1
            first.setdefault(key, reason)
    rejected = sum(counts.values())
    if 2 * rejected <= len(records):
        return ""
    commonest = sorted(counts, key=lambda key: -counts[key])[:shown]
    return f"; {rejected} of {len(records)} rejected: " + "; ".join(f"{first[key]} ({counts[key]}x)" for key in commonest)
