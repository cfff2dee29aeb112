"""Finding residual blocks in a traced graph, whatever module layout wrote them.

A residual block is found at a tensor sum ``a + b`` whose two operands start
from one common tensor (the fork). The operand path with fewer conv/linear
layers is the shortcut (identity when it has no node at all), the other one the
main path. Nothing here depends on module classes or attribute names.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.fx as fx
from torch import nn

from n2n.arch.graph import first_input, is_activation, is_parametric_layer, is_tensor_sum, node_shape, single_user


@dataclass(frozen=True)
class ResidualBlock:
    name: str
    sum_node: str              # the addition that closes the block
    output_node: str           # the addition, or the activation applied right after it
    fork_node: str             # the tensor both paths start from
    main: frozenset[str]       # node names on the main path
    shortcut: frozenset[str]   # node names on the shortcut path (empty: identity)
    shortcut_arg: int          # which operand of the sum carries the shortcut
    self_contained: bool       # no node inside the block is read from outside it
    shape_preserving: bool     # the shortcut alone has the sum's shape
    start: int                 # graph position of the block's first node

    @property
    def inside(self) -> frozenset[str]:
        return self.main | self.shortcut | {self.sum_node}

    @property
    def removable(self) -> bool:
        """Replacing the block by its shortcut leaves every other node valid."""
        return self.self_contained and self.shape_preserving


def find_residual_blocks(graph: fx.Graph, modules: dict[str, nn.Module]) -> list[ResidualBlock]:
    """Every residual block of ``graph`` (shapes propagated), in network order."""
    position = {node: index for index, node in enumerate(graph.nodes)}
    ancestors = _ancestor_sets(graph)
    blocks = []
    taken_names: set[str] = set()
    for node in graph.nodes:
        if not is_tensor_sum(node):
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
    operands = list(sum_node.args[:2])
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
        shape_preserving=node_shape(operands[shortcut_arg]) == node_shape(sum_node),
        start=min(position[node] for node in inside),
    )


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
