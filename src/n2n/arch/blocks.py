"""Finding residual blocks in a traced graph, whatever module layout wrote them.

A residual block is found at a tensor sum ``a + b``, or a channel concatenation
``cat([a, b], 1)`` (DenseNet's layer), whose two operands start from one common
tensor (the fork). The operand path with fewer conv/linear layers is the
shortcut (identity when it has no node at all), the other one the main path.
Removing the block leaves the shortcut: the sum's readers get a tensor of the
same shape, the concatenation's readers fewer channels, and are refitted to
them. Nothing here depends on module classes or attribute names.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.fx as fx
from torch import nn

from n2n.arch.graph import (
    first_input,
    is_activation,
    is_channel_concat,
    is_parametric_layer,
    is_tensor_sum,
    merged_operands,
    node_shape,
    single_user,
)
from n2n.arch.widths import width_blocker


@dataclass(frozen=True)
class ResidualBlock:
    name: str
    sum_node: str              # the addition (or channel concatenation) that closes the block
    output_node: str           # the addition, or the activation applied right after it
    fork_node: str             # the tensor both paths start from
    main: frozenset[str]       # node names on the main path
    shortcut: frozenset[str]   # node names on the shortcut path (empty: identity)
    shortcut_arg: int          # which operand of the sum carries the shortcut
    self_contained: bool       # no node inside the block is read from outside it
    readers_fit: bool          # the sum's readers can read the shortcut alone
    start: int                 # graph position of the block's first node

    @property
    def inside(self) -> frozenset[str]:
        return self.main | self.shortcut | {self.sum_node}

    @property
    def removable(self) -> bool:
        """Replacing the block by its shortcut leaves every other node valid."""
        return self.self_contained and self.readers_fit


def find_residual_blocks(graph: fx.Graph, modules: dict[str, nn.Module]) -> list[ResidualBlock]:
    """Every residual block of ``graph`` (shapes propagated), in network order."""
    position = {node: index for index, node in enumerate(graph.nodes)}
    ancestors = _ancestor_sets(graph)
    blocks = []
    taken_names: set[str] = set()
    for node in graph.nodes:
        if not is_tensor_sum(node) and not (is_channel_concat(node) and len(node.args[0]) == 2):
            continue
        block = _block_at(node, position, ancestors, modules, taken_names)
        if block is not None:
            blocks.append(block)
            taken_names.add(block.name)
    return sorted(blocks, key=lambda block: (block.start, -len(block.inside)))


def innermost_blocks(blocks: list[ResidualBlock]) -> dict[str, ResidualBlock]:
    """For every node inside some block, the smallest block holding it."""
    owner: dict[str, ResidualBlock] = {}
    for block in sorted(blocks, key=lambda block: -len(block.inside)):
        for name in block.inside:
            owner[name] = block  # smaller blocks come later and overwrite
    return owner


def _ancestor_sets(graph: fx.Graph) -> dict[fx.Node, frozenset[fx.Node]]:
    ancestors: dict[fx.Node, frozenset[fx.Node]] = {}
    for node in graph.nodes:
        collected: set[fx.Node] = set()
        for parent in node.all_input_nodes:
            collected.add(parent)
            collected |= ancestors[parent]
        ancestors[node] = frozenset(collected)
    return ancestors


def _block_at(
    sum_node: fx.Node,
    position: dict[fx.Node, int],
    ancestors: dict[fx.Node, frozenset[fx.Node]],
    modules: dict[str, nn.Module],
    taken_names: set[str],
) -> ResidualBlock | None:
    operands = merged_operands(sum_node)[:2]
    reach = [ancestors[operand] | {operand} for operand in operands]
    common = reach[0] & reach[1]
    if not common:
        return None  # e.g. a learned constant added to a feature map
    fork = max(common, key=position.__getitem__)
    # Only nodes computed from the fork belong to a path (not weights or other inputs).
    paths = [{node for node in nodes if node is not fork and fork in ancestors[node]} for nodes in reach]
    depths = [sum(is_parametric_layer(node, modules) for node in path) for path in paths]
    if max(depths) == 0:
        return None  # x + relu(x) and the like: no layer to skip
    shortcut_arg = 0 if depths[0] < depths[1] else 1
    main, shortcut = paths[1 - shortcut_arg], paths[shortcut_arg]
    inside = main | shortcut | {sum_node}
    self_contained = all(user in inside or _unused(user) for node in main | shortcut for user in node.users)
    after = single_user(sum_node)
    output = after if after is not None and is_activation(after, modules) and first_input(after) is sum_node else sum_node
    return ResidualBlock(
        name=_block_name(main | shortcut, sum_node, taken_names),
        sum_node=sum_node.name,
        output_node=output.name,
        fork_node=fork.name,
        main=frozenset(node.name for node in main),
        shortcut=frozenset(node.name for node in shortcut),
        shortcut_arg=shortcut_arg,
        self_contained=self_contained,
        readers_fit=_readers_fit(sum_node, operands[shortcut_arg], modules),
        start=min(position[node] for node in inside),
    )


def _readers_fit(join: fx.Node, shortcut: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """The join's readers can read its shortcut operand instead: the same shape, or (a concatenation)
    fewer channels that every reader can be refitted to."""
    if node_shape(shortcut) == node_shape(join):
        return True
    return is_channel_concat(join) and width_blocker(join, modules) is None


def _unused(node: fx.Node) -> bool:
    """A result nothing reads, e.g. the ``_`` of ``b, c, _, _ = x.size()``: dropped with the block."""
    return not node.users and not node.is_impure()


def _block_name(nodes: set[fx.Node], sum_node: fx.Node, taken_names: set[str]) -> str:
    """A module path for the block (e.g. "layer2.0"), else the sum's node name.

    First choice: the module whose forward wrote the sum, when it holds the
    block's layers. Otherwise the module path all the block's layers share.
    """
    targets = sorted(str(node.target) for node in nodes if node.op == "call_module")
    stack = sum_node.meta.get("nn_module_stack") or {}
    writer = list(stack.values())[-1][0] if stack else ""
    if writer and writer not in taken_names and targets and all(target.startswith(writer + ".") for target in targets):
        return writer
    prefix = _common_path_prefix(targets)
    if not prefix or prefix in targets or prefix in taken_names:
        return sum_node.name
    return prefix


def _common_path_prefix(paths: list[str]) -> str:
    if not paths:
        return ""
    shared: list[str] = []
    for parts in zip(*(path.split(".") for path in paths)):
        if any(part != parts[0] for part in parts):
            break
        shared.append(parts[0])
    return ".".join(shared)
