"""The N2N view of a network: its layer sequence, state vectors, and channel groups.

Built by tracing, so any torch.fx-traceable CNN classifier works; nothing here
knows the zoo. The sequence lists, in network order, every conv, linear and
pooling layer, plus one "block" entry per residual block placed just before the
layers inside it (which are listed too, so the states describe the whole
network). Stage 1 decides keep/remove per entry; stage 2 picks one width ratio
per channel group.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from dataclasses import dataclass, field

import torch
import torch.fx as fx
from torch import Tensor, nn

from n2n.arch.blocks import ResidualBlock, find_residual_blocks, innermost_blocks
from n2n.arch.channels import reader_inputs
from n2n.arch.graph import (
    CONV_TYPES,
    first_input,
    is_activation,
    is_norm,
    merged_operands,
    module_of,
    node_shape,
    output_layers,
    pool_kind,
    propagate_shapes,
    single_user,
    trace,
)
from n2n.arch.groups import GroupPlan, find_channel_groups
from n2n.arch.ignored import resolve_ignored
from n2n.arch.widths import width_blocker
from n2n.errors import ConfigError, ModelError

logger = logging.getLogger(__name__)

# "shortcut": a conv/linear on a residual block's shortcut path.
KINDS = ("conv", "shortcut", "linear", "maxpool", "avgpool", "block")
# Divisors that bring each numeric feature to about [0, 1] for usual CNNs.
_KERNEL_SCALE, _STRIDE_SCALE, _PADDING_SCALE, _LOG2_WIDTH_SCALE, _SKIP_SCALE = 8.0, 4.0, 4.0, 12.0, 8.0
STATE_DIM = len(KINDS) + 6


@dataclass(frozen=True)
class LayerInfo:
    """One entry of the N2N layer sequence.

    For a "block" entry, kernel and padding are those of the first conv on its
    main path, stride is its spatial down-sampling factor and out_channels its
    output width. skip_start/skip_end give the entry's position on the path it
    sits on inside its innermost residual block, counted from 1 at the start and
    at the end of that path (0 and 0 outside blocks; a nested block counts as one
    position of the block around it).
    """

    name: str
    kind: str
    kernel: int
    stride: int
    padding: int
    out_channels: int
    skip_start: int
    skip_end: int
    removable: bool


@dataclass(frozen=True)
class ShrinkGroup:
    """Output channels that must keep one width: ``layers`` are the convs/linears that produce them."""

    layers: tuple[str, ...]
    channels: int
    multiple: int = 1  # kept widths are multiples of it (a GroupNorm's num_groups, the user's round_to)


@dataclass(frozen=True)
class RemovalPlan:
    """Remove a layer by reading ``source``'s operand wherever ``replace`` was read."""

    replace: str
    source: str
    operand: int

    def apply(self, nodes: dict[str, fx.Node]) -> None:
        # The operand is looked up now, not when planned: an earlier removal may have rewired it.
        nodes[self.replace].replace_all_uses_with(merged_operands(nodes[self.source])[self.operand])


@dataclass
class _Entry:
    node: fx.Node | None         # None for a block entry
    block: ResidualBlock | None  # the block this entry stands for (block entries)
    kind: str
    position: float
    enclosing: ResidualBlock | None = None
    skip: tuple[int, int] = (0, 0)


@dataclass
class NetworkView:
    """What the policies see of a network, and what the rewrites need to change it.

    ``layers`` and ``groups`` are the public description; the other fields
    (removal plan per entry, channel-group prune plans, a copy of the traced
    graph, the output shape and a shape fingerprint) serve the rewrites. Build
    it with :meth:`build`; a view is tied to models with its parent's shapes.
    """

    layers: list[LayerInfo]
    groups: list[ShrinkGroup]
    plans: list[RemovalPlan | None] = field(repr=False)
    group_plans: list[GroupPlan] = field(repr=False)
    graph: fx.Graph = field(repr=False)
    output_shape: tuple[int, ...] = field(repr=False)
    fingerprint: tuple = field(repr=False)
    ignored: frozenset[str] = field(default=frozenset(), repr=False)  # module names left as they are
    options: dict = field(default_factory=dict, repr=False)  # the build's keywords, recorded in each rewrite
    reads: dict = field(default_factory=dict, repr=False)  # the channels each layer reads (channels.py)

    @classmethod
    def build(cls, model: nn.Module, example_input: Tensor, *, ignored_layers: tuple[str, ...] = (),
              round_to: int = 1) -> "NetworkView":
        """Trace ``model`` on ``example_input`` (a batch) and describe it; the model is not changed.

        Modules named in ``ignored_layers`` (and those inside them) are neither removed nor
        shrunk, nor are the channels they read; every kept width is a multiple of ``round_to``.
        Raises ModelError when the model cannot be traced or fails on the input, ConfigError
        for an ignored name that is no module of it.
        """
        ignored, options = resolve_ignored(model, ignored_layers), _options(ignored_layers, round_to)
        module = trace(model)
        try:
            output = propagate_shapes(module, example_input)
        except Exception as error:  # arbitrary user forward code
            raise ModelError(
                f"{type(model).__name__} fails on an example input of shape {tuple(example_input.shape)} "
                f"({type(error).__name__}: {error}); pass an input the model accepts."
            ) from error
        if not isinstance(output, Tensor):
            raise ModelError(f"{type(model).__name__} must return one tensor of logits, got {type(output).__name__}.")
        modules = dict(module.named_modules())
        kept = _nodes_of(module.graph, ignored)
        fixed = output_layers(module.graph, modules) | kept
        entries = _entries(module.graph, modules)
        layers = [_describe(entry, index, len(entries), modules, fixed) for index, entry in enumerate(entries)]
        plans = [_removal_plan(entry, modules) if info.removable and not _holds(entry, kept) else None
                 for entry, info in zip(entries, layers)]
        layers = [_with_removable(info, plan is not None) for info, plan in zip(layers, plans)]
        order = {
            str(entry.node.target): index
            for index, entry in enumerate(entries)
            if entry.node is not None and entry.node.op == "call_module"
        }
        fixed_modules = {str(node.target) for node in module.graph.nodes if node.name in fixed}
        found = find_channel_groups(model, example_input, fixed_modules, order)
        group_plans = [_rounded(plan, round_to) for plan in found
                       if not any(op.module in ignored for op in plan.ops)]  # nor the channels they read
        return cls(
            layers=layers,
            groups=[ShrinkGroup(plan.layers, plan.channels, plan.multiple) for plan in group_plans],
            plans=plans,
            group_plans=group_plans,
            graph=copy.deepcopy(module.graph),  # no reference to the model's modules
            output_shape=tuple(output.shape[1:]),
            fingerprint=fingerprint(model),
            ignored=ignored,
            options=options,
            reads=reader_inputs(module),
        )

    def layer_states(self) -> Tensor:
        """Float ``[len(layers), STATE_DIM]``: one N2N state vector per entry."""
        return torch.tensor([_state_vector(info) for info in self.layers], dtype=torch.float32).reshape(-1, STATE_DIM)

    def group_states(self) -> Tensor:
        """Float ``[len(groups), STATE_DIM]``: the state of each group's first layer."""
        by_name = {info.name: info for info in self.layers}
        rows = [_state_vector(by_name[group.layers[0]]) for group in self.groups]
        return torch.tensor(rows, dtype=torch.float32).reshape(-1, STATE_DIM)

    def removable_mask(self) -> Tensor:
        """Bool ``[len(layers)]``: which entries stage 1 may remove."""
        return torch.tensor([info.removable for info in self.layers], dtype=torch.bool)

    def index(self, name: str) -> int:
        """Position of the entry called ``name`` in :attr:`layers`."""
        for position, info in enumerate(self.layers):
            if info.name == name:
                return position
        raise KeyError(name)

    def describes(self, model: nn.Module) -> bool:
        """Whether ``model`` has the parameter and buffer shapes this view was built from."""
        return fingerprint(model) == self.fingerprint


def fingerprint(model: nn.Module) -> tuple:
    """Names and shapes of every parameter and buffer."""
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    return tuple((name, tuple(tensor.shape)) for name, tensor in tensors)


def _nodes_of(graph: fx.Graph, ignored: frozenset[str]) -> set[str]:
    """The nodes that call an ignored module."""
    return {node.name for node in graph.nodes if node.op == "call_module" and str(node.target) in ignored}


def _holds(entry: _Entry, nodes: set[str]) -> bool:
    """Whether removing ``entry`` (a residual block) would take one of ``nodes`` with it."""
    return entry.block is not None and not nodes.isdisjoint(entry.block.inside)


def _rounded(plan: GroupPlan, round_to: int) -> GroupPlan:
    return plan if round_to == 1 else dataclasses.replace(plan, multiple=math.lcm(plan.multiple, round_to))


def _options(ignored_layers: tuple[str, ...], round_to: int) -> dict:
    """The build's keywords that differ from the defaults, as plain data for a rewrite's record."""
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise ConfigError(f"round_to must be a whole number of at least 1, got {round_to!r}")
    options: dict = {"ignored_layers": list(ignored_layers)} if ignored_layers else {}
    return options | ({"round_to": round_to} if round_to != 1 else {})


def _entries(graph: fx.Graph, modules: dict[str, nn.Module]) -> list[_Entry]:
    blocks = find_residual_blocks(graph, modules)
    owner = innermost_blocks(blocks)
    entries = []
    for position, node in enumerate(graph.nodes):
        kind = _layer_kind(node, modules)
        if kind is None:
            continue
        enclosing = owner.get(node.name)
        if kind in ("conv", "linear") and enclosing is not None and node.name in enclosing.shortcut:
            kind = "shortcut"
        entries.append(_Entry(node, None, kind, float(position), enclosing))
    for block in blocks:
        # Just before its first node; a block holding another one comes first.
        position = block.start - 0.5 - 1e-6 * len(block.inside)
        entries.append(_Entry(None, block, "block", position, _parent(block, blocks)))
    entries.sort(key=lambda entry: entry.position)
    _number_paths(entries, blocks)
    return entries


def _parent(block: ResidualBlock, blocks: list[ResidualBlock]) -> ResidualBlock | None:
    holders = [other for other in blocks if other is not block and block.sum_node in other.inside]
    return min(holders, key=lambda other: len(other.inside), default=None)


def _number_paths(entries: list[_Entry], blocks: list[ResidualBlock]) -> None:
    """Set each entry's (skip_start, skip_end) on the path of its innermost block."""
    for block in blocks:
        for path in (block.main, block.shortcut):
            members = [entry for entry in entries if entry.enclosing is block and _anchor(entry) in path]
            for index, entry in enumerate(members):
                entry.skip = (index + 1, len(members) - index)


def _anchor(entry: _Entry) -> str:
    return entry.block.sum_node if entry.block is not None else entry.node.name


def _layer_kind(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    module = module_of(node, modules)
    if isinstance(module, CONV_TYPES):
        return "conv"
    if isinstance(module, nn.Linear):
        return "linear"
    return pool_kind(node, modules)


def _describe(entry: _Entry, index: int, count: int, modules: dict[str, nn.Module], fixed: set[str]) -> LayerInfo:
    kernel, stride, padding, width = _geometry(entry, modules)
    at_an_end = index == 0 or index == count - 1 or (entry.node is not None and entry.node.name in fixed)
    return LayerInfo(
        name=entry.block.name if entry.block is not None else _node_label(entry.node),
        kind=entry.kind,
        kernel=kernel,
        stride=stride,
        padding=padding,
        out_channels=width,
        skip_start=entry.skip[0],
        skip_end=entry.skip[1],
        removable=not at_an_end and entry.enclosing is None,
    )


def _with_removable(info: LayerInfo, removable: bool) -> LayerInfo:
    return info if info.removable == removable else LayerInfo(**{**info.__dict__, "removable": removable})


def _node_label(node: fx.Node) -> str:
    return str(node.target) if node.op == "call_module" else node.name


def _geometry(entry: _Entry, modules: dict[str, nn.Module]) -> tuple[int, int, int, int]:
    """(kernel, stride, padding, output width) of an entry."""
    if entry.block is not None:
        return _block_geometry(entry.block, modules)
    node = entry.node
    module = module_of(node, modules)
    shape = node_shape(node) or ()
    if isinstance(module, nn.Linear):
        return 0, 0, 0, module.out_features  # as the reference: no spatial extent
    width = shape[1] if len(shape) > 1 else 0
    if isinstance(module, CONV_TYPES):
        return _first(module.kernel_size), _first(module.stride), _padding(module), module.out_channels
    if module is not None and hasattr(module, "kernel_size"):
        kernel = _first(module.kernel_size)
        stride = _first(module.stride) if module.stride is not None else kernel
        return kernel, stride, _first(module.padding), width
    factor = _downsampling(first_input(node), node)  # adaptive or functional pooling
    return factor, factor, 0, width


def _block_geometry(block: ResidualBlock, modules: dict[str, nn.Module]) -> tuple[int, int, int, int]:
    nodes = {node.name: node for node in modules[""].graph.nodes}  # the root is the traced GraphModule
    convs = [node for name, node in nodes.items() if name in block.main and isinstance(module_of(node, modules), CONV_TYPES)]
    kernel = padding = 0
    if convs:
        first_conv = module_of(convs[0], modules)
        kernel, padding = _first(first_conv.kernel_size), _padding(first_conv)
    total = nodes[block.sum_node]
    width = (node_shape(total) or (0, 0))[1]
    return kernel, _downsampling(nodes[block.fork_node], total), padding, width


def _downsampling(source: fx.Node | None, result: fx.Node) -> int:
    """Spatial reduction from ``source`` to ``result`` (1 when unknown)."""
    before = node_shape(source) if source is not None else None
    after = node_shape(result)
    if not before or not after or len(before) < 3 or len(after) < 3 or after[2] == 0:
        return 1
    return max(1, round(before[2] / after[2]))


def _first(value) -> int:
    return int(value[0]) if isinstance(value, (tuple, list)) else int(value)


def _padding(conv: nn.Module) -> int:
    if isinstance(conv.padding, str):
        return _first(conv.kernel_size) // 2 if conv.padding == "same" else 0
    return _first(conv.padding)


def _removal_plan(entry: _Entry, modules: dict[str, nn.Module]) -> RemovalPlan | None:
    """How to take the entry out of the graph, or None when it must stay."""
    if entry.block is not None:
        block = entry.block
        return RemovalPlan(block.sum_node, block.sum_node, block.shortcut_arg) if block.removable else None
    node = entry.node
    if first_input(node) is None:
        return None
    if entry.kind == "maxpool":
        return RemovalPlan(node.name, node.name, 0)
    module = module_of(node, modules)
    if entry.kind != "conv" or module.transposed or any(step != 1 for step in module.stride):
        return None  # strided convs set the resolution of everything after them
    end = _conv_unit_end(node, modules)
    blocker = width_blocker(end, modules) if module.in_channels != module.out_channels else None
    if blocker is not None:
        logger.debug("%s stays: %s cannot read its input's %d channels instead of its %d.",
                     node.target, _node_label(blocker), module.in_channels, module.out_channels)
        return None
    return RemovalPlan(end.name, node.name, 0)


def _conv_unit_end(conv: fx.Node, modules: dict[str, nn.Module]) -> fx.Node:
    """Last node of conv -> [norm] -> [activation] when each reads only the one before."""
    end = conv
    for belongs in (is_norm, is_activation):
        reader = single_user(end)
        if reader is not None and first_input(reader) is end and len(reader.all_input_nodes) == 1 and belongs(reader, modules):
            end = reader
    return end


def _state_vector(info: LayerInfo) -> list[float]:
    one_hot = [1.0 if info.kind == kind else 0.0 for kind in KINDS]
    return one_hot + [
        info.kernel / _KERNEL_SCALE,
        info.stride / _STRIDE_SCALE,
        info.padding / _PADDING_SCALE,
        math.log2(max(1, info.out_channels)) / _LOG2_WIDTH_SCALE,
        info.skip_start / _SKIP_SCALE,
        info.skip_end / _SKIP_SCALE,
    ]
