"""The two-stage N2N search: sample children, score them by distillation, reinforce the policy.

Reads top to bottom like an RL loop: for each stage, for each policy epoch, sample
`rollouts` action sequences, turn each into a child, have the scorer score them
(scorer.py: training, cache, crash replay, rewards, the best child), update the
policy. The best child of a stage is the parent of the next. Random search is the
same loop with a trainer that never updates its policy.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict
from typing import Any, Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from ..arch import NetworkView, arch_signature, rebuild
from ..config import SearchConfig
from ..distill.data import DistillData
from ..errors import ConfigError
from ..policies.io import policy_for_stage
from .records import RECORD_KINDS, CandidateRecord, EpochRecord, TeacherRecord
from .reinforce import PolicyTrainer
from .reward import INVALID_REWARD
from .scorer import Child, Scorer, StageResult
from .stages import Stage, make_stage
from .state import ResumePoint, SearchStore, weights_of

log = logging.getLogger(__name__)
POLICY_KIND = {"removal": "removal", "shrinkage": "shrink"}


def candidate_seed(seed: int, stage_index: int, epoch: int, rollout: int) -> int:
    """The seed a child trains with: its own, so that a child made again trains alike."""
    return seed * 1_000_003 + stage_index * 100_003 + epoch * 101 + rollout


def unfitted_parent(teacher: nn.Module, example_input: torch.Tensor, rewrites: list[dict[str, Any]], seed: int,
                    index: int) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Budget mode's parent of stage `index`: the teacher with the layers an earlier stage's best child
    removed (its `rewrites`), at full widths; and those removals."""
    removals = [step for step in rewrites if step.get("op") != "shrink"]
    torch.manual_seed(seed * 7919 + index)  # layers refitted after a removal start alike
    parent = rebuild(copy.deepcopy(teacher), example_input, removals)
    return parent.to(example_input.device), removals


class Search:
    """One search run. With a `store`, it snapshots itself at every policy epoch; with
    `resume` it continues a killed run exactly where it stopped."""

    def __init__(self, teacher: nn.Module, data: DistillData, example_input: torch.Tensor, config: SearchConfig,
                 *, on_record: Callable[[Any], None] | None = None, progress: bool = True,
                 store: SearchStore | None = None, resume: ResumePoint | None = None) -> None:
        self.teacher, self.example_input = teacher.eval(), example_input
        self.config = config.validate()
        self.on_record = on_record or (lambda record: None)
        self.progress = progress
        resume = resume or ResumePoint(snapshot=None)
        self.store, self.snapshot_state = store, resume.snapshot
        self.history: list[Any] = list(resume.history)
        self.results: list[StageResult] = []
        self.scorer = Scorer(self.teacher, data, example_input, self.config, emit=self.emit, store=store,
                             replay=resume.replay)
        if not self.history:
            self.emit(TeacherRecord(**asdict(self.scorer.teacher_stats)))
        if self.snapshot_state is not None:
            self.scorer.cache.load_state_dict(self.snapshot_state["cache"])

    def run(self) -> list[StageResult]:
        try:
            for index, name in enumerate(self.config.stages):
                parent, rewrites = self.parent_of(index)
                stage = make_stage(name, self.config, self.scorer.budget)
                self.results.append(self.run_stage(index, stage, parent, rewrites))
        finally:
            self.close()
        return self.results

    def student_stage(self, stages: list[StageResult]) -> StageResult | None:
        """The stage whose best child becomes the student: the last that found one; in budget mode,
        where every child of every stage sits at the same budget, the one whose best scored highest."""
        found = [stage for stage in stages if stage.best_child is not None]
        if self.scorer.budget is None or not found:
            return found[-1] if found else None
        return max(reversed(found), key=lambda stage: stage.best.reward)  # a tie goes to the later stage

    def close(self) -> None:
        self.scorer.close()

    def parent_of(self, index: int) -> tuple[nn.Module, list[dict[str, Any]]]:
        """The best child of the last stage that found one; the teacher before that.

        In budget mode the next stage starts from that child's layers at their full widths, with
        the teacher's weights, and fits each of its own children to the budget anew: its parent is
        chosen for what shrinking can make of it, and every child of both stages starts alike."""
        for result in reversed(self.results[:index]):
            if result.best_child is None:
                continue
            if self.scorer.budget is None:
                return result.best_child, result.rewrites
            return unfitted_parent(self.teacher, self.example_input, result.rewrites, self.config.seed, index)
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
        # random search samples from the untrained initial policy: the same action spaces and
        # budget as N2N, without learning
        learner = PolicyTrainer if cfg.method == "n2n" else NonLearningTrainer
        trainer = learner(policy, lr=cfg.stage_policy(stage.name).lr, algorithm=cfg.algorithm,
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
            records = self.scorer.score_epoch(children, result, rewrites, on_trained=bar.update)
            metrics = trainer.update(outputs, [r.reward for r in records])
            summary = self.emit(self.epoch_record(stage.name, epoch, records, metrics, result,
                                                  time.perf_counter() - started))
            self.snapshot(index, epoch + 1, trainer, generator, result)
            log.info("%s epoch %d/%d: mean reward %.3f, best %.3f (%s params, val accuracy %.2f%%)%s", stage.name,
                     epoch + 1, cfg.epochs_per_stage, summary.reward_mean, summary.best_reward,
                     f"{summary.best_params:,}", 100 * summary.best_val_accuracy, rejection_summary(records))
            bar.n = epoch + 1
            bar.set_postfix_str(progress_note(result))
        bar.close()
        if cfg.rescore_top > 1 and result.rescored is None:
            self.rescore(index, stage, parent, view, rewrites, result)
            self.snapshot(index, cfg.epochs_per_stage, trainer, generator, result)
        return result

    def rescore(self, index: int, stage: Stage, parent: nn.Module, view: NetworkView, rewrites: list[dict],
                result: StageResult) -> None:
        """Multi-fidelity selection: the stage's `rescore_top` best distinct children (by their proxy
        reward, every constraint hard), each made again and trained from its start for
        `rescore_epochs` proxy epochs; the best of those becomes the stage's best child, and the
        next stage's parent."""
        scored = [r for r in self.history if isinstance(r, CandidateRecord) and r.stage == stage.name
                  and r.valid and not r.cached and self.scorer.hard_reward(r) > INVALID_REWARD]
        top = sorted(scored, key=lambda r: -self.scorer.hard_reward(r))[: self.config.rescore_top]
        children = [self.make_child(stage, index, parent, view, torch.tensor(r.actions), r.epoch, r.rollout)
                    for r in top]
        self.scorer.rescore(list(zip(top, children)), result, rewrites)

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
        self.store.save_snapshot({"stages": stages, "cache": self.scorer.cache.state_dict(),
                                  "records": len(self.history)})

    @staticmethod
    def stage_state(result: StageResult, next_epoch: int, trainer: PolicyTrainer | None,
                    generator: torch.Generator | None) -> dict[str, Any]:
        return {
            "name": result.name, "next_epoch": next_epoch, "candidates": result.candidates,
            "policy": result.policy.state_dict(), "trainer": trainer.state_dict() if trainer else None,
            "generator": generator.get_state() if generator is not None else None,
            "best": asdict(result.best) if result.best else None, "rewrites": result.rewrites,
            "best_child": weights_of(result.best_child), "rescored": result.rescored,
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
        result.rescored = state.get("rescored")  # absent from snapshots written before re-scoring existed
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

    def candidate_seed(self, stage_index: int, epoch: int, rollout: int) -> int:
        return candidate_seed(self.config.seed, stage_index, epoch, rollout)

    # ---- records ---------------------------------------------------------------------------
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


class NonLearningTrainer(PolicyTrainer):
    """Random search's trainer: the policy keeps its initial weights."""

    def update(self, outputs: Any, rewards: Any) -> dict[str, float]:
        return {}


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
