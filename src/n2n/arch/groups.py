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
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch_pruning as tp
from torch import Tensor, nn

from n2n.arch.graph import BATCHNORM_TYPES, CONV_TYPES

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
    multiple: int = 1          # every width must be a multiple of it (GroupNorm's num_groups)


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
        if _split_into_groups(target):
            logger.debug("Channel group through grouped convolution %s is left at full width.", name)
            return None
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
    channels, multiple = len(group[0].idxs), math.lcm(*_norm_groups(group))
    return GroupPlan(layers=tuple(producers), channels=channels, ops=tuple(ops), multiple=multiple)


def _split_into_groups(module: nn.Module) -> bool:
    """A grouped conv other than depthwise: its channels cannot be dropped one by one
    (Torch-Pruning shrinks a depthwise conv with its producer)."""
    if not isinstance(module, CONV_TYPES) or module.groups == 1:
        return False
    return not module.groups == module.in_channels == module.out_channels


def _norm_groups(group) -> list[int]:
    """num_groups of every GroupNorm on the group's channels (1 when none)."""
    return [1] + [item.dep.target.module.num_groups for item in group if isinstance(item.dep.target.module, nn.GroupNorm)]


CRITERIA = ("contribution", "l1")


def channel_contribution(plan: GroupPlan, modules: dict[str, nn.Module]) -> Tensor:
    """Per group channel: how much the layers that read it get from it.

    Its spread (the |scale| of the BatchNorm after it, which undoes the filter's own
    norm; the filter's L1 norm where no BatchNorm follows) times the L1 norm of the
    consumers' weights on it.
    """
    spread = _per_channel(plan, modules, _norm_scales)
    if spread is None:
        spread = filter_l1(plan, modules)
    reads = _per_channel(plan, modules, _input_norms)
    return spread if reads is None else spread * reads


def filter_l1(plan: GroupPlan, modules: dict[str, nn.Module]) -> Tensor:
    """Per group channel: L1 norm of its filters, summed over the group's conv/linear producers (Li et al.)."""
    scores = _per_channel(plan, modules, _filter_norms)
    return torch.zeros(plan.channels, dtype=torch.float64) if scores is None else scores


def _per_channel(plan: GroupPlan, modules: dict[str, nn.Module],
                 measure: Callable[[nn.Module, PruneOp], Tensor | None]) -> Tensor | None:
    """``measure`` of each op (a value per index of the op's dimension) summed per group channel;
    None when it measures none of the group's ops."""
    scores, measured = torch.zeros(plan.channels, dtype=torch.float64), False
    for op in plan.ops:
        values = measure(modules[op.module], op)
        if values is not None:
            values = values.detach().to(device="cpu", dtype=torch.float64)[list(op.indices)]
            scores.index_add_(0, torch.tensor(op.roots), values)
            measured = True
    return scores if measured else None


def _filter_norms(module: nn.Module, op: PruneOp) -> Tensor | None:
    if not op.is_output or not isinstance(module, (*CONV_TYPES, nn.Linear)):
        return None
    return _weight_by_output(module).flatten(1).abs().sum(1)


def _input_norms(module: nn.Module, op: PruneOp) -> Tensor | None:
    if op.is_output or not isinstance(module, (*CONV_TYPES, nn.Linear)) or getattr(module, "groups", 1) != 1:
        return None  # a grouped conv's weight has no row per input channel
    return _weight_by_output(module).transpose(0, 1).flatten(1).abs().sum(1)


def _norm_scales(module: nn.Module, op: PruneOp) -> Tensor | None:
    if not isinstance(module, BATCHNORM_TYPES) or module.weight is None:
        return None
    return module.weight.abs()


def _weight_by_output(module: nn.Module) -> Tensor:
    """The weight with output channels first (transposed convolutions store inputs first)."""
    weight = module.weight.detach()
    return weight.transpose(0, 1) if getattr(module, "transposed", False) else weight


def prune_groups(model: nn.Module, plans: Sequence[GroupPlan], widths: Sequence[int],
                 criterion: str = "contribution") -> None:
    """Shrink each group to its width in place, keeping its channels that score highest by
    ``criterion``: :func:`channel_contribution` or :func:`filter_l1` ("l1")."""
    score = channel_contribution if criterion == "contribution" else filter_l1
    modules = dict(model.named_modules())
    dropped: dict[tuple[str, PruneFunction], set[int]] = {}
    for plan, width in zip(plans, widths):
        if width >= plan.channels:
            continue
        scores = score(plan, modules)  # scored on the unpruned weights
        drop = set(torch.argsort(scores, stable=True)[: plan.channels - width].tolist())
        for op in plan.ops:
            indices = {index for index, root in zip(op.indices, op.roots) if root in drop}
            if indices:
                dropped.setdefault((op.module, op.prune), set()).update(indices)
    # All indices are in the original numbering, so each dimension is pruned once.
    for (name, prune), indices in dropped.items():
        prune(modules[name], sorted(indices))
