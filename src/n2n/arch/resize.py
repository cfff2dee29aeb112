"""Fitting layers to a new input width after the layer that fed them was removed.

After a removal the next conv/linear/BatchNorm may read a tensor with a
different number of channels than it was built for. Running the rewritten graph
once, we replace each such layer by a copy with the right input width. Where the
channels it still reads are known (see channels.py: a DenseNet layer removed from a
concatenation), it keeps exactly their weights; otherwise cut inputs keep the
layer's strongest input slices (L1 norm of their weights) and added inputs get
freshly initialised weights.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.fx as fx
from torch import Tensor, nn

from n2n.arch.channels import ChannelIds, kept_inputs, output_ids
from n2n.arch.graph import BATCHNORM_TYPES, CONV_TYPES, first_input, inference_mode


class UnfittableLayer(Exception):
    """A layer that cannot be given a different input width (e.g. a grouped convolution)."""


def layer_macs(module: nn.Module, inputs: tuple, output: object) -> int:
    """Multiply-accumulates of one call of a conv or linear layer, per example (0 for other modules)."""
    if not isinstance(output, Tensor) or output.dim() == 0:
        return 0
    batch = output.shape[0] if output.dim() > 1 else 1
    if isinstance(module, CONV_TYPES):
        kernel = math.prod(module.kernel_size)
        if module.transposed:
            source = inputs[0]
            return source.numel() // batch * (module.out_channels // module.groups) * kernel
        return output.numel() // batch * (module.in_channels // module.groups) * kernel
    if isinstance(module, nn.Linear):
        return output.numel() // batch * module.in_features
    return 0


def fitted_to_input(module: nn.Module, source: Tensor, keep: list[int] | None = None) -> nn.Module | None:
    """A copy of ``module`` resized to read ``source``, or None when it already fits. `keep`, where
    known, names for each input channel it reads now the one it read before."""
    if isinstance(module, CONV_TYPES) and not module.transposed and source.dim() >= 2:
        width = source.shape[1]
        if width == module.in_channels:
            return None
        if module.groups != 1:
            raise UnfittableLayer(f"grouped convolution expects {module.in_channels} input channels, gets {width}")
        return _with_input_width(module, width, "in_channels", keep)
    if isinstance(module, nn.Linear) and source.dim() >= 1:
        width = source.shape[-1]
        return None if width == module.in_features else _with_input_width(module, width, "in_features", keep)
    if isinstance(module, BATCHNORM_TYPES) and source.dim() >= 2:
        width = source.shape[1]
        return None if width == module.num_features else _norm_with_width(module, width, keep)
    return None


def _with_input_width(module: nn.Module, width: int, attribute: str, keep: list[int] | None = None) -> nn.Module:
    old = module.weight.detach()
    if keep is None or len(keep) != width:
        kept = min(width, old.shape[1])
        strongest = old.transpose(0, 1).flatten(1).abs().sum(1).argsort(descending=True, stable=True)[:kept]
        keep = strongest.sort().values.tolist()
    kept = len(keep)
    resized = copy.deepcopy(module)
    setattr(resized, attribute, width)
    shape = list(old.shape)
    shape[1] = width
    resized.weight = nn.Parameter(torch.empty(shape, dtype=old.dtype, device=old.device))
    resized.reset_parameters()  # fresh weights for added inputs, with the new fan-in
    with torch.no_grad():
        resized.weight[:, :kept] = old[:, keep]
        if module.bias is not None:
            resized.bias.copy_(module.bias)
    return resized


def _norm_with_width(module: nn.Module, width: int, keep: list[int] | None = None) -> nn.Module:
    """BatchNorm over ``width`` channels: those in `keep` (else the first ones) keep their
    statistics, new ones start fresh."""
    resized = copy.deepcopy(module)
    resized.num_features = width
    if keep is None or len(keep) != width:
        keep = list(range(min(width, module.num_features)))
    kept = len(keep)
    for name, fill in (("weight", 1.0), ("bias", 0.0)):
        old = getattr(module, name)
        if old is not None:
            fresh = torch.full((width,), fill, dtype=old.dtype, device=old.device)
            fresh[:kept] = old.detach()[keep]
            setattr(resized, name, nn.Parameter(fresh))
    for name, fill in (("running_mean", 0.0), ("running_var", 1.0)):
        old = getattr(module, name)
        if old is not None:
            fresh = torch.full((width,), fill, dtype=old.dtype, device=old.device)
            fresh[:kept] = old[keep]
            setattr(resized, name, fresh)
    return resized


class _InputFitter(fx.Interpreter):
    """Runs the graph once, resizing each layer whose input width changed, and counts MACs.
    `read_before` holds the channels each layer read in the parent (see channels.py)."""

    def __init__(self, module: fx.GraphModule, read_before: dict[str, ChannelIds]) -> None:
        super().__init__(module)
        self.replaced: list[tuple[nn.Module, nn.Module]] = []
        self.macs = 0
        self.read_before, self.modules = read_before, dict(module.named_modules())
        self.ids: dict[str, ChannelIds] = {}
        self.node: fx.Node | None = None

    def run_node(self, node: fx.Node):
        self.node = node
        output = super().run_node(node)
        shape = tuple(output.shape) if isinstance(output, Tensor) else None
        self.ids[node.name] = output_ids(node, self.modules, self.ids, shape)
        return output

    def call_module(self, target, args, kwargs):
        module = self.fetch_attr(target)
        if args and isinstance(args[0], Tensor):
            source = first_input(self.node)
            now = self.ids.get(source.name) if source is not None else None
            fitted = fitted_to_input(module, args[0], kept_inputs(self.read_before.get(target), now))
            if fitted is not None:
                _set_submodule(self.module, target, fitted)
                self.replaced.append((module, fitted))
                module = fitted
        output = module(*args, **kwargs)
        self.macs += layer_macs(module, args, output)
        return output


def fit_to_inputs(module: fx.GraphModule, example_input: Tensor,
                  read_before: dict[str, ChannelIds] | None = None) -> tuple[Tensor, int]:
    """Resize every layer of ``module`` to its actual input width; return the output and MACs per example.

    Raises whatever the forward pass raises when the graph cannot run.
    """
    fitter = _InputFitter(module, read_before or {})
    with inference_mode(module):
        output = fitter.run(example_input)
    for old, new in fitter.replaced:
        new.train(old.training)  # the copies were made in eval mode
    return output, fitter.macs


def _set_submodule(root: nn.Module, target: str, module: nn.Module) -> None:
    parent_path, _, name = target.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, module)
