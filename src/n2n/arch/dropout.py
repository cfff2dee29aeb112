"""Functional dropout of a traced graph given back its live training flag.

``F.dropout(x, training=self.training)`` is traced with the flag's value at
tracing time as a constant, so a child made from the graph would drop units in
eval mode (or never in training). Each such call becomes a dropout module at
the root of the child, whose own training flag follows ``train()``/``eval()``.
A flag that differs from the caller's mode at tracing was written as a
constant by the user (e.g. dropout kept on at test time) and stays.
"""

from __future__ import annotations

import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.fx.operator_schemas import normalize_function

_MODULES = {
    F.dropout: nn.Dropout,
    F.dropout1d: nn.Dropout1d,
    F.dropout2d: nn.Dropout2d,
    F.dropout3d: nn.Dropout3d,
    F.alpha_dropout: nn.AlphaDropout,
    F.feature_alpha_dropout: nn.FeatureAlphaDropout,
}


def make_dropout_live(module: fx.GraphModule, traced: nn.Module) -> None:
    """Replace the frozen functional dropout calls of ``module`` (a graph traced from ``traced``,
    whose modules' modes are those at tracing) by dropout modules; recompile afterwards."""
    for node in list(module.graph.nodes):
        if node.op != "call_function" or node.target not in _MODULES:
            continue
        arguments = _arguments(node)
        mode = _caller(node, traced).training
        if arguments is None or arguments.get("training") is not mode:
            continue  # a flag computed in the graph, or a constant the user chose
        layer = _MODULES[node.target](p=float(arguments.get("p", 0.5)))
        layer.train(mode)
        name = _free_name(module, f"{node.name}_module")
        module.add_submodule(name, layer)
        with module.graph.inserting_before(node):
            replacement = module.graph.call_module(name, (arguments["input"],))
        replacement.meta = dict(node.meta)
        node.replace_all_uses_with(replacement)
        module.graph.erase_node(node)


def _arguments(node: fx.Node) -> dict | None:
    normalized = normalize_function(node.target, node.args, node.kwargs, normalize_to_only_use_kwargs=True)
    if normalized is None or "input" not in normalized.kwargs or isinstance(normalized.kwargs.get("p"), fx.Node):
        return None
    return normalized.kwargs


def _caller(node: fx.Node, traced: nn.Module) -> nn.Module:
    """The module whose forward made the call (the root when unknown)."""
    stack = node.meta.get("nn_module_stack") or {}
    path = list(stack.values())[-1][0] if stack else ""
    try:
        return traced.get_submodule(path) if path else traced
    except AttributeError:
        return traced


def _free_name(module: nn.Module, name: str) -> str:
    candidate, number = name, 1
    while hasattr(module, candidate):
        candidate, number = f"{name}_{number}", number + 1
    return candidate
