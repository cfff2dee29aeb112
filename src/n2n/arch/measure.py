"""Size measures of a network: parameters, multiply-accumulates, and an architecture key."""

from __future__ import annotations

import hashlib

import torch.fx as fx
from torch import Tensor, nn

from n2n.arch.graph import CONV_TYPES, inference_mode, trace
from n2n.arch.resize import layer_macs
from n2n.models.stats import count_parameters


def count_params(model: nn.Module) -> int:
    """Number of parameters (each shared tensor once), trainable or not; buffers excluded."""
    return count_parameters(model)


def count_flops(model: nn.Module, example_input: Tensor) -> int:
    """Multiply-accumulates of one example through every conv and linear call.

    Counted: for a conv, output elements x (input channels / groups) x kernel
    area; for a linear layer, output elements x input features; a layer called
    twice counts twice. Not counted: biases, normalisation, activations,
    pooling, sums, and convolutions written as functional calls. The result is
    per example: it does not depend on the batch size of ``example_input``.
    """
    return forward_with_macs(model, example_input)[1]


def forward_with_macs(model: nn.Module, example_input: Tensor) -> tuple[object, int]:
    """The model's output on ``example_input`` (eval mode, no autograd) and its MACs per example."""
    total = 0

    def count(module: nn.Module, inputs: tuple, output: object) -> None:
        nonlocal total
        total += layer_macs(module, inputs, output)

    handles = [
        module.register_forward_hook(count)
        for module in model.modules()
        if isinstance(module, (*CONV_TYPES, nn.Linear))
    ]
    try:
        with inference_mode(model):
            output = model(example_input)
    finally:
        for handle in handles:
            handle.remove()
    return output, total


def arch_signature(model: nn.Module, example_input: Tensor) -> str:
    """A key equal for two models with the same architecture and different otherwise.

    It hashes the traced graph: each operation with its layer type,
    hyper-parameters and parameter shapes, and how operations connect, plus the
    shape of one example. Weights and module names do not enter it, so a model
    and any rewrite of it into the same shapes share the key.
    """
    module = trace(model)
    modules = dict(module.named_modules())
    numbers: dict[fx.Node, int] = {}
    lines = [f"example {tuple(example_input.shape[1:])} {example_input.dtype}"]
    for number, node in enumerate(module.graph.nodes):
        numbers[node] = number
        lines.append(_describe_node(node, modules, module, numbers))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:32]


def _describe_node(node: fx.Node, modules: dict[str, nn.Module], root: nn.Module, numbers: dict[fx.Node, int]) -> str:
    arguments = fx.node.map_arg((node.args, dict(sorted(node.kwargs.items()))), lambda parent: f"%{numbers[parent]}")
    if node.op == "call_module":
        layer = modules[str(node.target)]
        shapes = [tuple(tensor.shape) for _, tensor in layer.named_parameters(recurse=True)]
        what = f"{type(layer).__module__}.{type(layer).__qualname__}({layer.extra_repr()}) {shapes}"
    elif node.op == "call_function":
        what = f"{getattr(node.target, '__module__', '')}.{getattr(node.target, '__qualname__', str(node.target))}"
    elif node.op == "get_attr":
        attribute = _attribute(root, str(node.target))
        what = f"attribute {tuple(attribute.shape) if isinstance(attribute, Tensor) else repr(attribute)}"
    else:
        what = str(node.target) if node.op == "call_method" else ""
    return f"{node.op} {what} {arguments!r}"


def _attribute(root: nn.Module, target: str) -> object:
    value: object = root
    for part in target.split("."):
        value = getattr(value, part)
    return value
