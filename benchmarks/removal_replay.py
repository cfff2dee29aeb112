"""How often does the removal policy learn? Replays stage 1 of a finished run many times.

Training children is what makes a search slow; the removal stage of a small teacher has
only a few dozen distinct children, and a run folder's metrics.jsonl holds the validation
accuracy of each one it trained. This script reuses those scores: for every seed it
builds a fresh removal policy, samples children, looks their scores up (a child the run
never trained is scored -1 and counted as unknown), computes the search's own reward and
updates the policy with the search's own trainer.
It prints, per setting, in how many seeds the mean reward of the last 5 policy epochs
beats that of the first 5, which is what one demo run can show only once.

    python benchmarks/removal_replay.py --run runs/demo-XXXX --seeds 20

Children of the same architecture (e.g. removing either of two equal convolutions) share
a score, as in the search's cache; the run's teacher and its config.yaml settings
(accuracy floor, policy step, annealing, epochs, rollouts) are used unless overridden.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import yaml

from n2n.arch import STATE_DIM, NetworkView, arch_signature, remove_layers
from n2n.checkpoint import load_checkpoint
from n2n.config import SearchConfig, from_dict, load_yaml
from n2n.errors import N2NError
from n2n.policies import RemovalPolicy
from n2n.search.reinforce import PolicyTrainer
from n2n.search.reward import INVALID_REWARD, Constraints, reward


def recorded_scores(run: Path) -> tuple[dict[str, tuple[int, float]], float, int]:
    """Architecture signature -> (params, val accuracy) of every removal child the run trained,
    with the teacher's validation accuracy and parameter count."""
    scores, teacher = {}, None
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("kind") == "teacher":
            teacher = (record["val_accuracy"], record["params"])
        elif record.get("kind") == "candidate" and record["stage"] == "removal" and record["valid"]:
            scores[tuple(record["actions"])] = (record["params"], record["val_accuracy"])
    if teacher is None:
        raise N2NError(f"{run}/metrics.jsonl has no teacher line")
    return scores, teacher[0], teacher[1]


class ReplayedStage:
    """Scores removal actions from a run's records; a child the run never trained counts as unknown."""

    def __init__(self, run: Path, config: SearchConfig) -> None:
        settings = load_yaml(run / "config.yaml")
        teacher = load_checkpoint(settings["teacher"])
        self.model, self.example = teacher.model, teacher.example_input
        self.view = NetworkView.build(self.model, self.example)
        self.config = config
        by_actions, self.teacher_acc, self.teacher_params = recorded_scores(run)
        self.by_signature = {self.signature(list(a)): s for a, s in by_actions.items()}
        self.unknown = 0

    def signature(self, actions: list[int]) -> str | None:
        rewrite = remove_layers(self.model, self.view, [bool(a) for a in actions], self.example)
        return None if rewrite.child is None else arch_signature(rewrite.child, self.example)

    def reward(self, actions: list[int], epoch: int) -> float:
        signature = self.signature(actions)
        if signature is None:
            return INVALID_REWARD
        if signature not in self.by_signature:
            self.unknown += 1
            return INVALID_REWARD
        params, acc = self.by_signature[signature]
        cfg = self.config
        return reward(student_params=params, teacher_params=self.teacher_params, student_acc=acc,
                      teacher_acc=self.teacher_acc, constraints=Constraints(cfg.max_params, None, cfg.min_accuracy),
                      policy_epoch=epoch, horizon=cfg.stage_horizon("removal"))


def replay(stage: ReplayedStage, seed: int) -> list[float]:
    """Mean reward per policy epoch of one replayed removal stage, seeded as the search seeds stage 1."""
    cfg = stage.config
    torch.manual_seed(seed * 7919)
    spec = cfg.removal_policy
    policy = RemovalPolicy(STATE_DIM, spec.hidden_size, spec.num_layers)
    trainer = PolicyTrainer(policy, lr=spec.lr, baseline_decay=cfg.baseline_decay, entropy_coef=cfg.entropy_coef)
    generator = torch.Generator().manual_seed(seed * 7919)
    states, mask = stage.view.layer_states(), stage.view.removable_mask()
    means = []
    for epoch in range(cfg.epochs_per_stage):
        outputs = [policy.act(states, mask, generator=generator) for _ in range(cfg.stage_rollouts("removal"))]
        rewards = [stage.reward(o.actions.tolist(), epoch) for o in outputs]
        trainer.update(outputs, rewards)
        means.append(sum(rewards) / len(rewards))
    return means


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a finished run folder (its removal stage is replayed)")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=YAML",
                        help="override a search option, e.g. --set annealing_horizon=0 --set removal_policy.lr=0.05")
    args = parser.parse_args(argv)
    run = Path(args.run)
    settings = load_yaml(run / "config.yaml")
    options = settings["search"]
    for item in args.set:
        key, _, value = item.partition("=")
        target = options
        *parents, leaf = key.split(".")
        for name in parents:
            target = target.setdefault(name, {})
        target[leaf] = yaml.safe_load(value)
    config = from_dict(SearchConfig, options, "options").validate()
    torch.set_num_threads(1)
    stage = ReplayedStage(run, config)
    gains = []
    for seed in range(args.seeds):
        means = replay(stage, seed)
        gains.append(statistics.fmean(means[-5:]) - statistics.fmean(means[:5]))
        print(f"seed {seed:3d}: first 5 {statistics.fmean(means[:5]):+.3f}, last 5 {statistics.fmean(means[-5:]):+.3f}")
    improved = sum(gain > 0 for gain in gains)
    print(f"\n{improved}/{args.seeds} seeds improve; mean gain {statistics.fmean(gains):+.3f}; "
          f"{stage.unknown} sampled children had no recorded score (scored -1)")
    return {"improved": improved, "seeds": args.seeds, "gains": gains, "unknown": stage.unknown}


if __name__ == "__main__":
    try:
        main()
    except N2NError as error:
        sys.exit(f"removal_replay: error: {error}")
