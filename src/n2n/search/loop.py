"""The two-stage N2N search: sample children, score them by distillation, reinforce the policy.

Reads top to bottom like an RL loop: for each stage, for each policy epoch, sample
`rollouts` action sequences, turn each into a child, score it (or take its score from
the cache), compute rewards, update the policy. The best child of a stage is the
parent of the next.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from ..arch import NetworkView, arch_signature, count_flops, count_params
from ..config import SearchConfig
from ..distill.data import DistillData
from ..distill.trainer import distill
from ..errors import ConfigError, N2NError
from ..report.run_folder import policy_for_stage
from ..training import NonFiniteLossError, accuracy
from .cache import Score, ScoreCache
from .records import CandidateRecord, EpochRecord, TeacherRecord
from .reinforce import PolicyTrainer
from .reward import INVALID_REWARD, Constraints, reward
from .stages import Stage, make_stage, policy_lr

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
    policy: nn.Module
    best: CandidateRecord | None = None
    best_child: nn.Module | None = None
    rewrites: list[dict[str, Any]] = field(default_factory=list)  # teacher -> best child

    def summary(self) -> dict[str, Any]:
        best = self.best
        return {
            "name": self.name, "epochs": self.epochs, "candidates": self.candidates,
            "best_reward": best.reward if best else None, "best_params": best.params if best else None,
            "best_val_accuracy": best.val_accuracy if best else None,
        }


class Search:
    def __init__(self, teacher: nn.Module, data: DistillData, example_input: torch.Tensor, config: SearchConfig,
                 *, on_record: Callable[[Any], None] | None = None, progress: bool = True) -> None:
        self.teacher, self.data, self.example_input = teacher.eval(), data, example_input
        self.config = config.validate()
        self.constraints = Constraints(config.max_params, config.max_flops, config.min_accuracy)
        self.cache = ScoreCache()
        # Every child of the run trains on the same proxy subset: a fair comparison, and
        # the subset is drawn once instead of once per child.
        self.proxy_data = data.subset(config.proxy.subset, config.seed)
        self.proxy = replace(config.proxy, subset=None)
        self.on_record = on_record or (lambda record: None)
        self.progress = progress
        self.history: list[Any] = []
        self.teacher_stats = TeacherStats(
            params=count_params(teacher), flops=count_flops(teacher, example_input),
            val_accuracy=accuracy(teacher, data.val_images, data.val_labels),
        )
        self.emit(TeacherRecord(**asdict(self.teacher_stats)))
        if self.teacher_stats.val_accuracy <= 0:
            raise N2NError("the teacher gets no validation image right, so no student can be scored against it: "
                           "check that the teacher and the data set belong together")

    def run(self) -> list[StageResult]:
        results: list[StageResult] = []
        parent, rewrites = self.teacher, []
        for index, name in enumerate(self.config.stages):
            result = self.run_stage(index, make_stage(name, self.config), parent, rewrites)
            results.append(result)
            if result.best_child is not None:
                parent, rewrites = result.best_child, result.rewrites
        return results

    # ---- one stage -------------------------------------------------------------------------
    def run_stage(self, index: int, stage: Stage, parent: nn.Module, rewrites: list[dict]) -> StageResult:
        cfg = self.config
        view = NetworkView.build(parent, self.example_input)
        policy = self.initial_policy(stage)
        trainer = PolicyTrainer(policy, lr=policy_lr(stage.name, cfg), algorithm=cfg.algorithm,
                                baseline_decay=cfg.baseline_decay, entropy_coef=cfg.entropy_coef)
        generator = torch.Generator().manual_seed(cfg.seed * 7919 + index)
        result = StageResult(stage.name, cfg.epochs_per_stage, 0, policy)
        bar = tqdm(total=cfg.epochs_per_stage * cfg.rollouts, desc=f"stage {index + 1} {stage.name}",
                   unit="child", disable=not self.progress)
        for epoch in range(cfg.epochs_per_stage):
            started = time.perf_counter()
            outputs = [stage.sample(policy, view, generator) for _ in range(cfg.rollouts)]
            records = []
            for rollout, output in enumerate(outputs):
                record = self.score(stage, index, parent, view, output.actions, epoch, rollout, result, rewrites)
                records.append(record)
                bar.update(1)
            metrics = trainer.update(outputs, [r.reward for r in records])
            self.emit(self.epoch_record(stage.name, epoch, records, metrics, result, time.perf_counter() - started))
            bar.set_postfix(best=f"{result.best.reward:.3f}" if result.best else "-", trained=result.candidates)
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

    # ---- one candidate ---------------------------------------------------------------------
    def score(self, stage: Stage, stage_index: int, parent: nn.Module, view: NetworkView, actions: torch.Tensor,
              epoch: int, rollout: int, result: StageResult, rewrites: list[dict]) -> CandidateRecord:
        record = CandidateRecord(stage.name, epoch, rollout, actions.tolist(), INVALID_REWARD)
        rewrite, step = stage.apply(parent, view, actions, self.example_input)
        if rewrite.child is None:
            return self.emit(self.rejected(record, rewrite.reason or "rejected"))
        # keyed by stage too: with inherited weights the same shapes in another stage are another child
        key = f"{stage.name}:{arch_signature(rewrite.child, self.example_input)}"
        cached = self.cache.get(key)
        if cached is None:
            try:
                outcome = distill(rewrite.child, self.proxy_data, self.proxy,
                                  seed=self.candidate_seed(stage_index, epoch, rollout))
            except NonFiniteLossError as error:
                return self.emit(self.rejected(record, f"distillation diverged ({error})"))
            cached = Score(outcome.val_accuracy, rewrite.params, rewrite.flops, outcome.seconds)
            self.cache.put(key, cached)
            result.candidates += 1
            record.seconds = outcome.seconds
        else:
            record.cached = True
        record.params, record.flops, record.val_accuracy = cached.params, cached.flops, cached.val_accuracy
        record.reward = self.reward_of(cached, epoch)
        if not record.cached and self.is_better(record, result):
            result.best, result.best_child, result.rewrites = record, rewrite.child, rewrites + [step]
        return self.emit(record)

    def reward_of(self, score: Score, epoch: int) -> float:
        teacher = self.teacher_stats
        return reward(student_params=score.params, teacher_params=teacher.params, student_acc=score.val_accuracy,
                      teacher_acc=teacher.val_accuracy, student_flops=score.flops, constraints=self.constraints,
                      policy_epoch=epoch, horizon=self.config.annealing_horizon)

    def is_better(self, record: CandidateRecord, result: StageResult) -> bool:
        """The best child meets every constraint (hard, as after annealing) and has the highest reward."""
        final = self.reward_of(Score(record.val_accuracy, record.params, record.flops, 0.0),
                               self.config.annealing_horizon)
        if final <= INVALID_REWARD:
            return False
        if result.best is None:
            return True
        best = result.best
        return final > self.reward_of(Score(best.val_accuracy, best.params, best.flops, 0.0),
                                      self.config.annealing_horizon)

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


def record_dict(record: Any) -> dict[str, Any]:
    return asdict(record)
