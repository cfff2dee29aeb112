"""Layers the user wants left exactly as they are (Torch-Pruning's ``ignored_layers``).

An ignored module is never removed, never shrunk, and keeps the width of its inputs:
every parameter and buffer of it, and of the modules inside it, keeps its shape in
every child. A name may be a container ("classifier", "layer4.1"): all inside it count.
"""

from __future__ import annotations

from typing import Iterable

from torch import nn

from n2n.errors import ConfigError


def resolve_ignored(model: nn.Module, names: Iterable[str]) -> frozenset[str]:
    """The module names of ``model`` that ``names`` cover; a name that is no module is a ConfigError."""
    names = tuple(names)
    known = [name for name, _ in model.named_modules() if name]
    unknown = [name for name in names if not isinstance(name, str) or name not in known]
    if unknown:
        sample = ", ".join(known[:6]) + (", ..." if len(known) > 6 else "")
        raise ConfigError(f"ignored_layers: {', '.join(map(repr, unknown))} "
                          f"{'is' if len(unknown) == 1 else 'are'} not a module of {type(model).__name__} "
                          f"(its modules are named like {sample})")
    return frozenset(module for module in known if any(module == n or module.startswith(n + ".") for n in names))


def check_untouched(parent: nn.Module, child: nn.Module, ignored: frozenset[str]) -> str | None:
    """Why ``child`` changed an ignored module of ``parent`` (gone, or a tensor of another shape); None if it did not."""
    if not ignored:
        return None
    before, after = _shapes(parent, ignored), _shapes(child, ignored)
    for name, shape in before.items():
        if after.get(name) != shape:
            return f"changes ignored layer {name.rsplit('.', 1)[0]}"
    return None


def _shapes(model: nn.Module, ignored: frozenset[str]) -> dict[str, tuple[int, ...]]:
    tensors = [*model.named_parameters(), *model.named_buffers()]
    return {name: tuple(tensor.shape) for name, tensor in tensors if name.rsplit(".", 1)[0] in ignored}
