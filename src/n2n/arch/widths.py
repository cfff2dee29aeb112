"""Whether a layer's output may take another number of channels.

Removing a conv whose input and output widths differ hands its readers a tensor
of its input width. resize.py refits plain convs, linear layers and BatchNorm to
it; a grouped or depthwise conv, a GroupNorm, a residual sum or an elementwise
gate cannot be refitted, so such a conv must stay. The walk goes through layers
that keep the width (activations, pooling, dropout, flattening) and answers with
the first reader that cannot take another width.
"""

from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn

from n2n.arch.graph import (
    BATCHNORM_TYPES,
    CONV_TYPES,
    DROPOUT_FUNCTIONS,
    DROPOUT_MODULES,
    first_input,
    is_activation,
    is_channel_concat,
    module_of,
    node_shape,
    pool_kind,
)

_PASS_MODULES = (*DROPOUT_MODULES, *BATCHNORM_TYPES, nn.Identity, nn.Flatten)
_PASS_FUNCTIONS = {*DROPOUT_FUNCTIONS, torch.flatten}
_PASS_METHODS = {"flatten", "view", "reshape", "contiguous"}


def width_blocker(node: fx.Node, modules: dict[str, nn.Module]) -> fx.Node | None:
    """The first node reading ``node``'s channels (directly or through width-keeping layers)
    that cannot take another width, or None when every reader can be refitted."""
    stack, seen = list(node.users), set()
    while stack:
        reader = stack.pop()
        if reader in seen:
            continue
        seen.add(reader)
        if reader.op == "call_method" and reader.target == "size":
            continue  # shapes read in forward follow the new width
        if is_channel_concat(reader):
            stack.extend(reader.users)  # joined to other channels: its readers see the change
            continue
        if not _reads_first(reader) or not _takes_width(reader, modules):
            return reader
        if passes_width(reader, modules):
            stack.extend(reader.users)
    return None


def _reads_first(reader: fx.Node) -> bool:
    """Reads one tensor, as its first operand; other operands are plain values such as sizes."""
    source = first_input(reader)
    return source is not None and all(other is source or node_shape(other) is None for other in reader.all_input_nodes)


def _takes_width(reader: fx.Node, modules: dict[str, nn.Module]) -> bool:
    module = module_of(reader, modules)
    if isinstance(module, CONV_TYPES):
        return module.groups == 1 and not module.transposed
    return isinstance(module, nn.Linear) or passes_width(reader, modules)


def passes_width(reader: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if is_activation(reader, modules) or pool_kind(reader, modules) is not None:
        return True
    if isinstance(module_of(reader, modules), _PASS_MODULES):
        return True
    if reader.op == "call_function":
        return reader.target in _PASS_FUNCTIONS
    return reader.op == "call_method" and reader.target in _PASS_METHODS
