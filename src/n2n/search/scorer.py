"""Scoring children: proxy distillation on an executor, a cache by architecture, rewards.

The search loop and the baselines hand children to a `Scorer`; it trains the
ones whose architecture it has not scored yet (together, on the executor), takes
a killed run's scores instead of training again, turns each score into a reward
against the teacher, and keeps the best child of each stage with its weights.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch
from torch import nn

from ..arch import count_flops, count_params
from ..arch.budget import Budget, budget_of, fitting_budget
from ..config import SearchConfig
from ..distill.data import DistillData
from ..errors import N2NError
from ..training import accuracy
from .cache import Score, ScoreCache
from .executors import Job, JobResult, choose_executor, make_executor
from .records import CandidateRecord
from .reward import INVALID_REWARD, Constraints, reward
from .state import SearchStore, candidate_key, weights_of

log = logging.getLogger(__name__)


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
    # the children re-scored longer before the best was chosen (None: not re-scored)
    rescored: list[dict[str, Any]] | None = None

    def summary(self) -> dict[str, Any]:
        best = self.best
        return {
            "name": self.name, "epochs": self.epochs, "candidates": self.candidates,
            "best_reward": best.reward if best else None, "best_params": best.params if best else None,
            "best_val_accuracy": best.val_accuracy if best else None, "rescored": self.rescored,
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

    def job(self, proxy: Any, images: int | None) -> Job:
        return Job(self.name, self.rewrite.child, proxy, self.seed, images)


def training_images(config: SearchConfig) -> tuple[int | None, int | None, int | None]:
    """The training subset the workers hold (None: every image), and the first how many of it the
    proxy and the re-score train on (None: all of it)."""
    screen = config.proxy.subset
    rescore = screen if config.rescore_subset is None else config.rescore_subset
    held = None if screen is None or rescore is None else max(screen, rescore)
    first = lambda size: None if size == held else size  # noqa: E731
    return held, first(screen), first(rescore)


class Scorer:
    """Scores children by proxy distillation against one teacher, under one configuration."""

    def __init__(self, teacher: nn.Module, data: DistillData, example_input: torch.Tensor, config: SearchConfig,
                 *, emit: Callable[[Any], Any], store: SearchStore | None = None,
                 replay: dict[str, dict[str, Any]] | None = None) -> None:
        self.config, self.emit, self.store, self.replay = config, emit, store, replay or {}
        self.cache = ScoreCache()
        # Every child of the run trains on the same proxy subset: a fair comparison, and
        # the subset is drawn once instead of once per child. A re-score on more images draws the
        # larger subset, which starts with the proxy's (see DistillData.head).
        # The teacher goes with the data to every worker only where it labels augmented batches.
        held, self.proxy_images, self.rescore_images = training_images(config)
        # a score that trains on the start of the held images needs them in a random order
        starts = self.proxy_images is not None or self.rescore_images is not None
        held_data = data.permuted(config.seed, held) if starts else data.subset(held, config.seed)
        proxy_data = replace(held_data, teacher=teacher if config.proxy.augment else None)
        self.proxy = replace(config.proxy, subset=None)
        choice = choose_executor(config.executor, config.workers, data.train_images.device)
        self.executor = make_executor(choice.name, proxy_data, workers=choice.workers, ray_address=config.ray_address)
        log.info("children train on the %s (%s)", self.executor.describe(), choice.why)
        if choice.name == "inline" and config.workers > 1:
            log.warning("--workers %d is ignored by the inline executor: choose --executor process or ray",
                        config.workers)
        self.teacher_stats = teacher_stats(teacher, data, example_input)
        limits = budget_of(config, self.teacher_stats.params) or Budget()
        self.constraints = Constraints(limits.max_params, limits.max_flops, config.min_accuracy)
        # budget mode: every child is brought inside the limits instead of being penalised for them
        self.budget = fitting_budget(config, self.teacher_stats.params)
        if self.budget is not None:
            log.info("budget mode: every child is fitted to %s", self.budget.describe())

    def close(self) -> None:
        """Stop the executor's workers (they start again if more children need training)."""
        self.executor.close()

    # ---- a policy epoch's children -------------------------------------------------------------
    def score_epoch(self, children: list[Child], result: StageResult, rewrites: list[dict],
                    on_trained: Callable[[float], None]) -> list[CandidateRecord]:
        """The children that need training train together on the executor; then each is scored
        in rollout order, exactly as if they had been trained one after another. `on_trained`
        hears the fraction of the epoch's training each finished child was."""
        jobs = self.jobs_for(children)
        trained = {r.name: r for r in self.executor.run(jobs, on_result=lambda _: on_trained(1 / len(jobs)))}
        return [self.score(child, result, rewrites, trained) for child in children]

    def jobs_for(self, children: list[Child]) -> list[Job]:
        """One job per architecture of the epoch that is neither in the cache nor replayed from a killed run."""
        jobs, planned = [], set()
        for child in children:
            if child.key is None or child.key in self.cache or child.key in planned:
                continue
            replayed = self.replay.get(child.name)
            if replayed is None:
                jobs.append(child.job(self.proxy, self.proxy_images))
            if replayed is None or replayed["valid"]:
                planned.add(child.key)  # a later child of the same architecture is a cache hit
        return jobs

    def score(self, child: Child, result: StageResult, rewrites: list[dict],
              trained: dict[str, JobResult]) -> CandidateRecord:
        record, rewrite = child.record, child.rewrite
        if rewrite.child is None:
            return self.emit(rejected(record, rewrite.reason or "rejected"))
        score = self.cache.get(child.key)
        record.cached = score is not None
        if score is None:
            replayed = self.replay.get(child.name)
            score, reason = replayed_score(replayed) if replayed else self.trained_score(child, trained)
            if score is None:
                return self.emit(rejected(record, reason))
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
            trained[child.name] = self.executor.run([child.job(self.proxy, self.proxy_images)])[0]
        return score_of(child.rewrite, trained[child.name])

    def train(self, rewrite: Any, seed: int, name: str = "candidate") -> tuple[Score | None, str]:
        """Train one child now, on the executor; the child keeps its trained weights."""
        outcome = self.executor.run([Job(name, rewrite.child, self.proxy, seed, self.proxy_images)])[0]
        if outcome.weights is not None:
            rewrite.child.load_state_dict(outcome.weights)
        return score_of(rewrite, outcome)

    # ---- the best child of a stage --------------------------------------------------------------
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
        outcome = self.executor.run([child.job(self.proxy, self.proxy_images)])[0]
        if outcome.weights is None:
            raise N2NError(f"could not train {child.name} again to recover its weights: {outcome.error}")
        return outcome.weights

    def rescore(self, candidates: list[tuple[CandidateRecord, Child]], result: StageResult,
                rewrites: list[dict]) -> None:
        """Train each (record, child made again) for `rescore_epochs` proxy epochs from its start, all
        together on the executor; the one with the highest reward at that fidelity becomes the
        stage's best. The list of what was re-scored goes into the stage's result."""
        config = replace(self.proxy, epochs=self.config.rescore_epochs)
        log.info("%s: re-scoring its %d best children with %d proxy epochs", result.name, len(candidates),
                 config.epochs)
        jobs = [child.job(config, self.rescore_images) for _, child in candidates]
        outcomes = self.executor.run(jobs)
        result.rescored = [{"name": child.name, "proxy_accuracy": record.val_accuracy,
                            "rescored_accuracy": outcome.val_accuracy if outcome.ok else None}
                           for (record, child), outcome in zip(candidates, outcomes)]
        rescored = [replace(record, val_accuracy=outcome.val_accuracy) if outcome.ok else None
                    for (record, _), outcome in zip(candidates, outcomes)]
        for record in filter(None, rescored):
            record.reward = self.hard_reward(record)
        # the highest reward at the longer fidelity; a tie goes to the child the proxy ranked higher
        kept = [(record.reward, -place) for place, record in enumerate(rescored)
                if record is not None and record.reward > INVALID_REWARD]
        if not kept:
            return
        place = -max(kept)[1]
        best, child = rescored[place], candidates[place][1]
        child.rewrite.child.load_state_dict(outcomes[place].weights)
        log.info("%s: %s kept (%.2f%% after %d epochs; proxy %.2f%%)", result.name, child.name,
                 100 * best.val_accuracy, config.epochs, 100 * candidates[place][0].val_accuracy)
        result.best, result.best_child, result.rewrites = best, child.rewrite.child, rewrites + child.steps

    # ---- rewards ---------------------------------------------------------------------------------
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


def teacher_stats(teacher: nn.Module, data: DistillData, example_input: torch.Tensor) -> TeacherStats:
    """What every child is scored against; a teacher that gets nothing right is refused, one near
    chance warned about."""
    stats = TeacherStats(params=count_params(teacher), flops=count_flops(teacher, example_input),
                         val_accuracy=accuracy(teacher, data.val_images, data.val_labels))
    if stats.val_accuracy <= 0:
        raise N2NError("the teacher gets no validation image right, so no student can be scored against it: "
                       "check that the teacher and the data set belong together")
    warn_if_near_chance(stats.val_accuracy, teacher, example_input)
    return stats


def warn_if_near_chance(val_accuracy: float, teacher: nn.Module, example_input: torch.Tensor) -> None:
    """A teacher at less than twice chance on the validation data is most likely fed inputs
    prepared otherwise than for its training: every child would be scored against noise."""
    with torch.no_grad():
        classes = int(teacher(example_input).shape[-1])
    if classes > 1 and val_accuracy < 2 / classes:
        log.warning("the teacher scores %.1f%% on the validation data, near chance for %d classes: are the inputs "
                    "prepared (scaled, normalised) as for its training?", 100 * val_accuracy, classes)


def score_of(rewrite: Any, outcome: JobResult) -> tuple[Score | None, str]:
    if not outcome.ok:
        return None, outcome.error or "failed"
    return Score(outcome.val_accuracy, rewrite.params, rewrite.flops, outcome.seconds), ""


def replayed_score(replayed: dict[str, Any]) -> tuple[Score | None, str]:
    """The score a killed run wrote for this candidate: it is not trained again."""
    if not replayed["valid"]:
        return None, replayed["reason"]
    return Score(replayed["val_accuracy"], replayed["params"], replayed["flops"], replayed["seconds"]), ""


def rejected(record: CandidateRecord, reason: str) -> CandidateRecord:
    record.valid, record.reason = False, reason
    log.debug("%s epoch %d rollout %d rejected: %s", record.stage, record.epoch, record.rollout, reason)
    return record
