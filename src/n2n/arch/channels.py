"""Which channels each tensor of a traced graph carries, by identities that survive a rewrite.

Every output channel of a conv or linear layer gets an identity (the layer's name, the
channel's index), the input's channels too; layers that keep their input's channels
(norms, activations, pools, dropout, sums and products) pass them on, a channel
concatenation joins its operands' and a flatten spreads them over the positions.
Elsewhere the channels are unknown (None).

After a removal, a layer may read other channels than it was built for (a DenseNet layer
taken out of a concatenation leaves its readers without its slice): comparing what the
layer read in the parent with what it reads in the child tells which of its input
weights still belong to a channel it reads.
"""
from __future__ import annotations

from typing import Hashable, Sequence

import torch.fx as fx
from torch import nn

from n2n.arch.graph import CONV_TYPES, NORM_TYPES, first_input, is_channel_concat, is_tensor_sum, module_of
from n2n.arch.widths import passes_width

ChannelIds = tuple[Hashable, ...] | None
_PRODUCTS = {"mul", "mul_"}


def output_ids(node: fx.Node, modules: dict[str, nn.Module], known: dict[str, ChannelIds],
               shape: Sequence[int] | None) -> ChannelIds:
    """The identities of the channels (dimension 1) of `node`'s output of `shape`, given
    `known`, those of the nodes before it by name."""
    if shape is None or len(shape) < 2:
        return None
    if node.op == "placeholder":
        return tuple(("input", c) for c in range(shape[1]))
    module = module_of(node, modules)
    if isinstance(module, (*CONV_TYPES, nn.Linear)):
        return tuple((str(node.target), c) for c in range(shape[1])) if len(shape) in (2, 4) else None
    if is_channel_concat(node):
        parts = [known.get(operand.name) for operand in node.args[0]]
        return None if any(part is None for part in parts) else sum(parts, ())
    source = first_input(node)
    ids = known.get(source.name) if source is not None else None
    if ids is None:
        return None
    if len(shape) == 2 and len(ids) < shape[1] and shape[1] % len(ids) == 0 and passes_width(node, modules):
        return tuple((channel, place) for channel in ids for place in range(shape[1] // len(ids)))  # flattened
    keeps = passes_width(node, modules) or is_tensor_sum(node) or _is_product(node)
    return ids if keeps and len(ids) == shape[1] else None


def reader_inputs(module: fx.GraphModule) -> dict[str, ChannelIds]:
    """For every conv, linear and norm layer of a shape-propagated graph, the channels it reads."""
    modules, known, read = dict(module.named_modules()), {}, {}
    for node in module.graph.nodes:
        meta = node.meta.get("tensor_meta")
        known[node.name] = output_ids(node, modules, known, getattr(meta, "shape", None))
        source = first_input(node)
        if isinstance(module_of(node, modules), (*CONV_TYPES, nn.Linear, *NORM_TYPES)) and source is not None:
            read[str(node.target)] = known.get(source.name)
    return read


def kept_inputs(before: ChannelIds, now: ChannelIds) -> list[int] | None:
    """For each channel a layer reads now, the index it had among those it read before; None
    where either is unknown or a channel it reads now is new to it."""
    if before is None or now is None:
        return None
    position = {identity: index for index, identity in enumerate(before)}
    if len(position) != len(before) or any(identity not in position for identity in now):
        return None
    return [position[identity] for identity in now]


def _is_product(node: fx.Node) -> bool:
    return (node.op == "call_function" and getattr(node.target, "__name__", "") in _PRODUCTS) or (
        node.op == "call_method" and node.target in _PRODUCTS)
