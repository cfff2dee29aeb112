"""Turning N2N actions into a child network, and replaying them on a fresh model.

Both rewrites work on a deep copy and answer with a :class:`Rewrite`: either a
child that runs forward and backward on the example input, keeps the output
shape and has strictly fewer parameters than its parent, or no child and the
reason. A bad action never raises.

* Removal edits the traced graph (torch.fx): a conv goes with the norm
  (BatchNorm, GroupNorm, InstanceNorm, LayerNorm) and activation right after
  it, a max pool alone, a residual block becomes its shortcut (identity, or its
  projection conv + BN; the activation after the sum stays). The child is a
  ``torch.fx.GraphModule`` whose modules keep their original names and whose
  in-place operations are made out-of-place. Layers reading a tensor of a new
  width are then resized.
* Shrinkage prunes each channel group to its new width (a multiple of the
  num_groups of any GroupNorm on it) with Torch-Pruning's prune functions,
  keeping the channels the next layer gets most from (see
  ``groups.channel_contribution``; ``criterion="l1"`` keeps the largest filter L1
  norms instead); the child keeps its parent's class.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.fx as fx
from torch import Tensor, nn

from n2n.arch.dropout import make_dropout_live
from n2n.arch.groups import CRITERIA, prune_groups
from n2n.arch.ignored import check_untouched
from n2n.arch.inplace import make_out_of_place
from n2n.arch.measure import count_params, forward_with_macs
from n2n.arch.resize import fit_to_inputs
from n2n.arch.view import NetworkView
from n2n.errors import CheckpointError, ConfigError

logger = logging.getLogger(__name__)

INIT_MODES = ("inherit", "scratch")
DEFAULT_MIN_WIDTH = 10
INTERNAL_ERROR = "internal error"


@dataclass
class Rewrite:
    """Outcome of applying actions to a parent network."""

    child: nn.Module | None
    reason: str | None           # why rejected, when child is None
    params: int = 0              # of the child (0 when rejected)
    flops: int = 0               # multiply-accumulates per example (see count_flops)
    step: dict[str, Any] | None = None  # the entry that replays this rewrite in rebuild()


class _Rejected(Exception):
    """An action sequence that gives no valid child; the message is the reason."""


def remove_layers(
    model: nn.Module,
    view: NetworkView,
    remove: Sequence[bool],
    example_input: Tensor,
    *,
    init: str = "inherit",
    must_shrink: bool = True,
) -> Rewrite:
    """Remove the entries of ``view.layers`` flagged in ``remove`` (non-removable flags are ignored).

    ``must_shrink=False`` accepts a child that is not smaller than its parent (a pooling layer
    removed alone widens the linear layer after it), for a caller that shrinks it further."""
    _check_init(init)
    step = {"op": "remove", "remove": _plain_list(remove, bool), **view.options}
    try:
        _check_actions(model, view, remove, len(view.layers), "removal")
        chosen = [index for index, flag in enumerate(remove) if flag and view.plans[index] is not None]
        if not chosen:
            raise _Rejected("removes no layer, so the child is not smaller than its parent")
        graph = copy.deepcopy(view.graph)
        nodes = {node.name: node for node in graph.nodes}
        for index in chosen:
            view.plans[index].apply(nodes)
        for node in graph.nodes:
            node.type = None  # string annotations would make the child unpicklable
        child = fx.GraphModule(copy.deepcopy(model), graph)
        make_out_of_place(child)  # before dead code goes: an in-place sum counts as a side effect
        make_dropout_live(child, model)
        child.graph.eliminate_dead_code()
        child.delete_all_unused_submodules()
        child.recompile()
        _copy_training_modes(model, child)
        if not any(node.op == "call_module" for node in child.graph.nodes):
            raise _Rejected("removes every layer")
        try:
            output, flops = fit_to_inputs(child, example_input, view.reads)
        except Exception as error:  # the rewritten graph runs arbitrary layers
            raise _Rejected(f"forward failed: {type(error).__name__}: {error}") from error
        return _accept(model, view, child, init, step, output=output, flops=flops, example_input=example_input,
                       must_shrink=must_shrink)
    except _Rejected as rejection:
        return _reject(str(rejection), step)
    except Exception as error:
        logger.exception("Layer removal failed unexpectedly.")
        return _reject(f"{INTERNAL_ERROR}: {type(error).__name__}: {error}", step)


def shrink_layers(
    model: nn.Module,
    view: NetworkView,
    ratios: Sequence[float],
    example_input: Tensor,
    *,
    init: str = "inherit",
    min_width: int = DEFAULT_MIN_WIDTH,
    criterion: str = "contribution",
) -> Rewrite:
    """Shrink each group of ``view.groups`` to ``max(min_width, round(ratio * channels))`` channels (never wider).

    The channels kept are those that score highest by ``criterion`` (see :func:`prune_groups`).
    """
    _check_init(init)
    if criterion not in CRITERIA:
        raise ConfigError(f"criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}.")
    if isinstance(min_width, bool) or not isinstance(min_width, int) or min_width < 1:
        raise ConfigError(f"min_width must be a whole number >= 1, got {min_width!r}.")
    step = {"op": "shrink", "ratios": _plain_list(ratios, float), "min_width": min_width, **view.options}
    try:
        _check_actions(model, view, ratios, len(view.groups), "shrink ratio")
        widths = [target_width(group.channels, ratio, min_width, group.multiple) for group, ratio in zip(view.groups, ratios)]
        if all(width == group.channels for width, group in zip(widths, view.groups)):
            raise _Rejected("shrinks no layer, so the child is not smaller than its parent")
        child = copy.deepcopy(model)
        prune_groups(child, view.group_plans, widths, criterion)
        return _accept(model, view, child, init, step, example_input=example_input)
    except _Rejected as rejection:
        return _reject(str(rejection), step)
    except Exception as error:
        logger.exception("Layer shrinkage failed unexpectedly.")
        return _reject(f"{INTERNAL_ERROR}: {type(error).__name__}: {error}", step)


def rebuild(base: nn.Module, example_input: Tensor, rewrites: list[dict[str, Any]]) -> nn.Module:
    """Replay ``rewrites`` (each a :attr:`Rewrite.step`) on a freshly built ``base``.

    Gives the child's shapes and module names, so the child's state dict loads
    into the result with ``strict=True``. ``base`` itself is returned when there
    is nothing to replay. Raises CheckpointError when a rewrite does not apply.
    """
    model = base
    for number, step in enumerate(rewrites, start=1):
        view = NetworkView.build(model, example_input, **_view_options(step))
        rewrite = _replay(model, view, step, number, example_input)
        if rewrite.child is None:
            raise CheckpointError(
                f"Rewrite {number} ({step.get('op')}) does not apply to this model ({rewrite.reason}); "
                "rebuild from the model spec the rewrites were recorded on."
            )
        model = rewrite.child
    return model


def _replay(model: nn.Module, view: NetworkView, step: Any, number: int, example_input: Tensor) -> Rewrite:
    op = step.get("op") if isinstance(step, dict) else None
    if op == "remove" and isinstance(step.get("remove"), list):
        # a recorded step was checked when it was made; it may be one a later fit made smaller
        return remove_layers(model, view, step["remove"], example_input, must_shrink=False)
    if op == "shrink" and isinstance(step.get("ratios"), list):
        min_width = step.get("min_width", DEFAULT_MIN_WIDTH)
        return shrink_layers(model, view, step["ratios"], example_input, min_width=min_width)
    raise CheckpointError(
        f"Rewrite {number} must be {{'op': 'remove', 'remove': [...]}} or {{'op': 'shrink', 'ratios': [...]}}, got {step!r}."
    )


def _view_options(step: Any) -> dict[str, Any]:
    """The NetworkView.build keywords a recorded step was made with (ignored layers, round_to)."""
    if not isinstance(step, dict):
        return {}
    options = {key: step[key] for key in ("ignored_layers", "round_to") if key in step}
    if not isinstance(options.get("ignored_layers", []), list):
        raise CheckpointError(f"A rewrite's ignored_layers must be a list of module names, got {step!r}.")
    return options | ({"ignored_layers": tuple(options["ignored_layers"])} if "ignored_layers" in options else {})


def _copy_training_modes(parent: nn.Module, child: nn.Module) -> None:
    """GraphModule makes fresh containers on the module paths: give them their originals' modes."""
    originals = dict(parent.named_modules())
    for name, module in child.named_modules():
        if name in originals:
            module.training = originals[name].training


def _plain_list(actions: Any, convert: type) -> list:
    """Actions as a list of Python values (for the replay record); as given when they do not convert."""
    try:
        return [convert(action) for action in actions]
    except (TypeError, ValueError, RuntimeError):
        return list(actions) if isinstance(actions, (list, tuple)) else []


def _check_init(init: str) -> None:
    if init not in INIT_MODES:
        raise ConfigError(f"init must be one of {', '.join(INIT_MODES)}, got {init!r}.")


def _check_actions(model: nn.Module, view: NetworkView, actions: Sequence, expected: int, what: str) -> None:
    if not view.describes(model):
        raise _Rejected("the view was built for a different model; build a NetworkView of this parent")
    if not hasattr(actions, "__len__"):
        raise _Rejected(f"{what} actions must be a sequence, got {type(actions).__name__}")
    if len(actions) != expected:
        raise _Rejected(f"expected {expected} {what} entries (one per {'layer' if what == 'removal' else 'group'}), got {len(actions)}")


def target_width(channels: int, ratio: Any, min_width: int, multiple: int = 1) -> int:
    """``max(min_width, round(ratio * channels))``, never wider, rounded up to a multiple of
    ``multiple``: the group's (see ShrinkGroup.multiple), the least common multiple of the num_groups
    of its GroupNorms, which must divide the width they normalise, and the user's round_to."""
    try:
        ratio = float(ratio)
    except (TypeError, ValueError, RuntimeError):
        ratio = math.nan
    if not math.isfinite(ratio) or ratio <= 0:
        raise _Rejected(f"shrink ratio must be a number in (0, 1], got {ratio!r}")
    if channels <= min_width:
        return channels
    width = min(channels, max(min_width, round(ratio * channels)))
    return min(channels, math.ceil(width / multiple) * multiple)


def _accept(
    parent: nn.Module,
    view: NetworkView,
    child: nn.Module,
    init: str,
    step: dict[str, Any],
    *,
    example_input: Tensor,
    output: Tensor | None = None,
    flops: int | None = None,
    must_shrink: bool = True,
) -> Rewrite:
    params, parent_params = count_params(child), count_params(parent)
    if must_shrink and params >= parent_params:
        raise _Rejected(f"not smaller than its parent ({params} >= {parent_params} parameters)")
    if output is None:
        try:
            output, flops = forward_with_macs(child, example_input)
        except Exception as error:  # pruned layers run arbitrary user code
            raise _Rejected(f"forward failed: {type(error).__name__}: {error}") from error
    if not isinstance(output, Tensor) or tuple(output.shape[1:]) != view.output_shape:
        shape = tuple(output.shape[1:]) if isinstance(output, Tensor) else type(output).__name__
        raise _Rejected(f"output shape changed from {view.output_shape} to {shape}")
    changed = check_untouched(parent, child, view.ignored)
    if changed:
        raise _Rejected(changed)
    _check_trains(child, example_input)
    if init == "scratch":
        _reinitialise(child)
    return Rewrite(child=child, reason=None, params=params, flops=int(flops or 0), step=step)


def _check_trains(child: nn.Module, example_input: Tensor) -> None:
    """Reject a child whose forward or backward pass with autograd fails (e.g. an in-place
    operation overwriting a tensor saved for the backward pass).

    Run in eval mode, so BatchNorm statistics stay untouched and a batch of one works;
    the gradients are dropped afterwards.
    """
    modes = {module: module.training for module in child.modules()}
    child.eval()
    try:
        with torch.enable_grad():
            try:
                output = child(example_input)
            except Exception as error:  # arbitrary user layers
                raise _Rejected(f"forward failed: {type(error).__name__}: {error}") from error
            if isinstance(output, Tensor) and output.requires_grad:
                try:
                    output.float().sum().backward()
                except Exception as error:
                    raise _Rejected(f"backward failed: {type(error).__name__}: {error}") from error
    finally:
        for module, mode in modes.items():
            module.training = mode
        for parameter in child.parameters():
            parameter.grad = None


def _reinitialise(model: nn.Module) -> None:
    """Fresh default initialisation of every layer, as the reference did for each child."""
    for module in model.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()


def _reject(reason: str, step: dict[str, Any]) -> Rewrite:
    logger.debug("Child rejected: %s", reason)
    return Rewrite(child=None, reason=reason, params=0, flops=0, step=step)
