"""Channels that must shrink together, found by Torch-Pruning's dependency graph.

The dependency graph (built once per view) says, for each conv/linear output,
which parameters of which modules hold the same channels: BatchNorm after it,
consumers' input slices, every layer tied to it by a residual sum, flattened
linear inputs. We record that as a plan of (module name, TP prune function,
indices) so that a rewrite can replay it on a deep copy without tracing again.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch_pruning as tp
from torch import Tensor, nn

from n2n.arch.graph import CONV_TYPES

logger = logging.getLogger(__name__)

PruneFunction = Callable[[nn.Module, Sequence[int]], nn.Module]


@dataclass(frozen=True)
class PruneOp:
    """One coupled dimension of one module: prune ``indices`` with ``prune``."""

    module: str
    prune: PruneFunction
    indices: tuple[int, ...]   # channel numbers in the module's own dimension
    roots: tuple[int, ...]     # the group channel each of those belongs to
    is_output: bool            # prunes the module's output channels (its filters)


@dataclass(frozen=True)
class GroupPlan:
    layers: tuple[str, ...]    # conv/linear modules whose outputs are the group's channels
    channels: int
    ops: tuple[PruneOp, ...]


def find_channel_groups(
    model: nn.Module, example_input: Tensor, fixed_layers: set[str], order: dict[str, int]
) -> list[GroupPlan]:
    """Every shrinkable channel group of ``model``, in network order.

    ``fixed_layers`` (module names) keep their output width, and so does every
    layer coupled to them; ``order`` gives each module's position in the network.
    """
    work = copy.deepcopy(model).eval()  # TP runs a forward pass with autograd on it
    graph = tp.DependencyGraph().build_dependency(work, example_inputs=example_input)
    names = {module: name for name, module in work.named_modules()}
    ignored = [module for module, name in names.items() if name in fixed_layers]
    plans = []
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=(*CONV_TYPES, nn.Linear)):
        plan = _plan_of(group, graph, names, order)
        if plan is not None:
            plans.append(plan)
    return sorted(plans, key=lambda plan: order[plan.layers[0]])


def _plan_of(group, graph: tp.DependencyGraph, names: dict[nn.Module, str], order: dict[str, int]) -> GroupPlan | None:
    ops = []
    for item in group:
        target = item.dep.target.module
        if isinstance(target, nn.Parameter):
            logger.debug("Channel group with a bare parameter is left at full width.")
            return None
        name = names.get(target)
        if name is None:
            continue  # TP's stand-ins for sums, concatenations, reshapes: nothing to prune
        roots = tuple(item.root_idxs)
        if any(root is None for root in roots):
            logger.debug("Channel group through %s has no index mapping; left at full width.", name)
            return None
        ops.append(PruneOp(name, item.dep.handler, tuple(item.idxs), roots, graph.is_out_channel_pruning_fn(item.dep.handler)))
    producers = sorted(
        {op.module for op in ops if op.is_output and op.module in order},
        key=order.__getitem__,
    )
    if not producers:
        return None
    return GroupPlan(layers=tuple(producers), channels=len(group[0].idxs), ops=tuple(ops))


def filter_l1(plan: GroupPlan, modules: dict[str, nn.Module]) -> Tensor:
    """Per group channel: L1 norm of its filters, summed over the group's conv/linear producers."""
    scores = torch.zeros(plan.channels, dtype=torch.float64)
    for op in plan.ops:
        module = modules[op.module]
        if not op.is_output or not isinstance(module, (*CONV_TYPES, nn.Linear)):
            continue
        weight = module.weight.detach()
        if getattr(module, "transposed", False):
            weight = weight.transpose(0, 1)
        norms = weight.flatten(1).abs().sum(1).to(device="cpu", dtype=torch.float64)[list(op.indices)]
        scores.index_add_(0, torch.tensor(op.roots), norms)
    return scores


def prune_groups(model: nn.Module, plans: Sequence[GroupPlan], widths: Sequence[int]) -> None:
    """Shrink each group to its width in place, keeping its strongest channels (by :func:`filter_l1`)."""
    modules = dict(model.named_modules())
    dropped: dict[tuple[str, PruneFunction], set[int]] = {}
    for plan, width in zip(plans, widths):
        if width >= plan.channels:
            continue
        scores = filter_l1(plan, modules)  # scored on the unpruned weights
        drop = set(torch.argsort(scores, stable=True)[: plan.channels - width].tolist())
        for op in plan.ops:
            indices = {index for index, root in zip(op.indices, op.roots) if root in drop}
            if indices:
                dropped.setdefault((op.module, op.prune), set()).update(indices)
    # All indices are in the original numbering, so each dimension is pruned once.
    for (name, prune), indices in dropped.items():
        prune(modules[name], sorted(indices))
