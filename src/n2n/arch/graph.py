"""Tracing a model into a torch.fx graph, and small questions asked of its nodes."""

from __future__ import annotations

import copy
import operator
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn
from torch.fx.passes.shape_prop import ShapeProp

from n2n.errors import ModelError

CONV_TYPES = (nn.modules.conv._ConvNd,)
# Norms whose per-channel parameters and statistics refit to any width (see resize.py).
BATCHNORM_TYPES = (nn.modules.batchnorm._BatchNorm,)
# Every norm that goes with the conv before it when that conv is removed.
NORM_TYPES = (*BATCHNORM_TYPES, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm, nn.LayerNorm)
DROPOUT_MODULES = (nn.modules.dropout._DropoutNd,)
DROPOUT_FUNCTIONS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout}
MAXPOOL_MODULES = (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd)
AVGPOOL_MODULES = (nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd)
ACTIVATION_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Hardswish, nn.Hardtanh, nn.PReLU, nn.Tanh, nn.Sigmoid,
)
MAXPOOL_FUNCTIONS = {
    F.max_pool1d, F.max_pool2d, F.max_pool3d,
    F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
}
AVGPOOL_FUNCTIONS = {
    F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
}
ACTIVATION_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.leaky_relu, F.gelu, F.silu, F.elu, F.hardswish, F.mish, F.hardtanh,
}
ACTIVATION_METHODS = {"relu", "relu_"}
ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
ADD_METHODS = {"add", "add_"}


def trace(model: nn.Module) -> fx.GraphModule:
    """A GraphModule over ``model``'s own submodules (shared, not copied).

    Standard torch.nn layers are leaves; user modules are traced through, so
    the graph names every conv/linear/norm by its module path. A GraphModule
    (a child made by layer removal) is its own graph: it is reused with its
    node metadata rather than traced again.
    """
    if isinstance(model, fx.GraphModule):
        return fx.GraphModule(model, copy.deepcopy(model.graph))
    try:
        graph = fx.Tracer().trace(model)
    except Exception as error:  # tracing runs arbitrary user code
        raise ModelError(
            f"{type(model).__name__} cannot be traced by torch.fx ({type(error).__name__}: {error}); "
            "N2N needs a forward pass without data-dependent Python control flow."
        ) from error
    return fx.GraphModule(model, graph)


@contextmanager
def inference_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and no autograd for the duration, then every module's own mode back.

    Eval mode keeps BatchNorm running statistics untouched, so a forward pass
    here never changes the model.
    """
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, mode in modes.items():
            module.training = mode


def propagate_shapes(module: fx.GraphModule, example_input: Tensor) -> Tensor:
    """Run ``example_input`` through the graph, storing each node's tensor shape in ``node.meta``."""
    with inference_mode(module):
        return ShapeProp(module).propagate(example_input)


def node_shape(node: fx.Node) -> tuple[int, ...] | None:
    """The output shape recorded by :func:`propagate_shapes`, or None for non-tensor nodes."""
    meta = node.meta.get("tensor_meta")
    shape = getattr(meta, "shape", None)
    return tuple(shape) if shape is not None else None


def module_of(node: fx.Node, modules: dict[str, nn.Module]) -> nn.Module | None:
    """The module a ``call_module`` node calls, else None."""
    return modules.get(node.target) if node.op == "call_module" else None  # type: ignore[arg-type]


def is_parametric_layer(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """A conv or linear call: the layers that carry a network's weights and widths."""
    return isinstance(module_of(node, modules), CONV_TYPES + (nn.Linear,))


def is_norm(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    return isinstance(module_of(node, modules), NORM_TYPES)


def is_activation(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if isinstance(module_of(node, modules), ACTIVATION_MODULES):
        return True
    if node.op == "call_function":
        return node.target in ACTIVATION_FUNCTIONS
    return node.op == "call_method" and node.target in ACTIVATION_METHODS


def pool_kind(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    """"maxpool" / "avgpool" for a pooling call (module or functional), else None."""
    module = module_of(node, modules)
    if isinstance(module, MAXPOOL_MODULES) or (node.op == "call_function" and node.target in MAXPOOL_FUNCTIONS):
        return "maxpool"
    if isinstance(module, AVGPOOL_MODULES) or (node.op == "call_function" and node.target in AVGPOOL_FUNCTIONS):
        return "avgpool"
    return None


def is_tensor_sum(node: fx.Node) -> bool:
    """``a + b`` of two traced tensors (not a tensor plus a constant)."""
    is_add = (node.op == "call_function" and node.target in ADD_FUNCTIONS) or (
        node.op == "call_method" and node.target in ADD_METHODS
    )
    if not is_add or len(node.args) < 2:
        return False
    return all(isinstance(arg, fx.Node) and node_shape(arg) is not None for arg in node.args[:2])


def is_channel_concat(node: fx.Node) -> bool:
    """``torch.cat([a, b, ...], 1)`` of traced tensors: DenseNet's and Inception's join."""
    if node.op != "call_function" or node.target is not torch.cat or not node.args:
        return False
    tensors, dim = node.args[0], node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
    return (isinstance(tensors, (list, tuple)) and len(tensors) >= 2 and dim in (1, -3)
            and all(isinstance(t, fx.Node) and len(node_shape(t) or ()) == 4 for t in tensors))


def merged_operands(node: fx.Node) -> list:
    """What a join reads: the concatenated tensors of a torch.cat, else the node's arguments."""
    return list(node.args[0]) if is_channel_concat(node) else list(node.args)


def single_user(node: fx.Node) -> fx.Node | None:
    """The only node that reads ``node``'s output, else None."""
    return next(iter(node.users)) if len(node.users) == 1 else None


def first_input(node: fx.Node) -> fx.Node | None:
    """The tensor a layer node reads (its first positional argument)."""
    return node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None


def output_layers(graph: fx.Graph, modules: dict[str, nn.Module]) -> set[str]:
    """Conv/linear nodes that feed the network's output with no other conv/linear between.

    These produce the logits: their widths and existence are fixed.
    """
    found: set[str] = set()
    seen: set[fx.Node] = set()
    stack = [node for node in graph.nodes if node.op == "output"]
    while stack:
        node = stack.pop()
        for parent in node.all_input_nodes:
            if parent in seen:
                continue
            seen.add(parent)
            if is_parametric_layer(parent, modules):
                found.add(parent.name)
            else:
                stack.append(parent)
    return found
