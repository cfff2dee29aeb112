"""In-place operations of a rewritten graph made out-of-place.

torchvision-style models apply one ``nn.ReLU(inplace=True)`` twice per block and
write ``out += identity``. That is safe in the network as written, but once a
removal splices two such operations onto one tensor (a removed block's ReLU
applied to the previous block's in-place ReLU output), autograd finds a tensor
it saved overwritten. Out-of-place versions compute the same values.
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx

_OPERATORS = {
    operator.iadd: operator.add,
    operator.isub: operator.sub,
    operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
}


def make_out_of_place(module: fx.GraphModule) -> None:
    """Turn every in-place module, function and method call of ``module`` out-of-place (in place)."""
    for layer in module.modules():
        if getattr(layer, "inplace", None) is True:
            layer.inplace = False
    for node in module.graph.nodes:
        if node.op == "call_function":
            _function_out_of_place(node)
        elif node.op == "call_method":
            _method_out_of_place(node)


def _function_out_of_place(node: fx.Node) -> None:
    if node.target in _OPERATORS:
        node.target = _OPERATORS[node.target]
    elif node.kwargs.get("inplace") is True:
        node.kwargs = {**node.kwargs, "inplace": False}
    else:
        name = getattr(node.target, "__name__", "")
        plain = getattr(torch, name[:-1], None) if _is_inplace_name(name) else None
        if plain is not None and getattr(torch, name, None) is node.target:
            node.target = plain  # torch.relu_ -> torch.relu


def _method_out_of_place(node: fx.Node) -> None:
    name = str(node.target)
    if _is_inplace_name(name) and hasattr(torch.Tensor, name[:-1]):
        node.target = name[:-1]  # x.relu_() -> x.relu(), x.add_(y) -> x.add(y)


def _is_inplace_name(name: str) -> bool:
    return name.endswith("_") and not name.startswith("_") and len(name) > 1

