"""Name -> builder registry for the model zoo, and the spec that rebuilds a model.

Every model built through a registered builder carries
``model.n2n_spec = {"name": ..., "kwargs": {...}}`` with *all* keyword arguments
resolved (defaults included, JSON-serialisable), so a checkpoint can rebuild the
same architecture later with ``create_model(spec["name"], **spec["kwargs"])``
even if a builder's defaults change.
"""

from __future__ import annotations

import copy
import difflib
import functools
import inspect
import json
import logging
from typing import Any, Callable, TypeVar

from torch import nn

from n2n.errors import ModelError

logger = logging.getLogger(__name__)

SPEC_ATTRIBUTE = "n2n_spec"
# Names and shapes of the state dict at build time: lets model_spec() notice a
# model that was rewritten in place (pruned, layers removed) after it was built,
# whose zoo spec would no longer rebuild it.
_FINGERPRINT_ATTRIBUTE = "_n2n_spec_fingerprint"

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Register a keyword-only builder under ``name``.

    The returned builder checks its keyword arguments (unknown names and
    non-JSON values raise ModelError) and attaches ``n2n_spec`` to the model.
    """
    if not isinstance(name, str) or not name.strip():
        raise ModelError(f"A model name must be a non-empty string, got {name!r}.")

    def decorator(builder: Builder) -> Builder:
        _check_not_taken(name, builder)
        wrapped = _with_spec(name, builder)
        _REGISTRY[name] = wrapped
        return wrapped  # type: ignore[return-value]

    return decorator


def get_model_builder(name: str) -> Callable[..., nn.Module]:
    """The builder registered as ``name``; ModelError listing the known names otherwise."""
    if name not in _REGISTRY:
        raise ModelError(_unknown_name_message(name))
    return _REGISTRY[name]


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the zoo model ``name`` with the given keyword arguments."""
    return get_model_builder(name)(**kwargs)


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_REGISTRY)


def model_spec(model: nn.Module) -> dict[str, Any]:
    """A copy of the ``{"name", "kwargs"}`` spec that rebuilds ``model``.

    Raises ModelError when the model was not built by the zoo, or when its
    layers changed shape since it was built (the spec would rebuild the
    original, not this model).
    """
    spec = getattr(model, SPEC_ATTRIBUTE, None)
    if not isinstance(spec, dict):
        raise ModelError(
            f"{type(model).__name__} carries no zoo spec; build it with "
            "n2n.models.create_model or save its architecture explicitly."
        )
    fingerprint = getattr(model, _FINGERPRINT_ATTRIBUTE, None)
    if fingerprint is not None and fingerprint != _state_fingerprint(model):
        raise ModelError(
            f"This {spec['name']!r} model was rewritten after it was built, so its zoo "
            "spec no longer describes it; save its architecture explicitly instead."
        )
    return copy.deepcopy(spec)


def model_from_spec(spec: Any) -> nn.Module:
    """Rebuild a model from a spec returned by :func:`model_spec`."""
    if (
        not isinstance(spec, dict)
        or not isinstance(spec.get("name"), str)
        or not isinstance(spec.get("kwargs"), dict)
    ):
        raise ModelError(
            'A model spec must be a dict {"name": str, "kwargs": dict}, '
            f"got {spec!r:.200}."
        )
    return create_model(spec["name"], **spec["kwargs"])


def _with_spec(name: str, builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    signature = inspect.signature(builder)

    @functools.wraps(builder)
    def build(*args: Any, **kwargs: Any) -> nn.Module:
        if args:
            raise ModelError(f"Model {name!r} takes keyword arguments only, got {len(args)} positional.")
        resolved = _resolve_kwargs(name, signature, kwargs)
        model = builder(**resolved)
        setattr(model, SPEC_ATTRIBUTE, {"name": name, "kwargs": resolved})
        setattr(model, _FINGERPRINT_ATTRIBUTE, _state_fingerprint(model))
        logger.debug("built model %s with %s", name, resolved)
        return model

    return build


def _resolve_kwargs(name: str, signature: inspect.Signature, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Bind kwargs to the builder's signature, fill defaults, normalise through JSON."""
    accepted = [p.name for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown and not takes_any:
        raise ModelError(
            f"Model {name!r} got unknown option(s) {', '.join(unknown)}; "
            f"it accepts: {', '.join(accepted) or 'no options'}."
        )
    try:
        bound = signature.bind(**kwargs)
    except TypeError as error:  # a required option is missing
        raise ModelError(f"Model {name!r} cannot be built with {sorted(kwargs)}: {error}.") from None
    bound.apply_defaults()
    resolved = dict(bound.arguments)
    for key, value in resolved.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            raise ModelError(
                f"Option {key}={value!r:.80} of model {name!r} must be JSON-serialisable "
                "(numbers, strings, lists, null) so a checkpoint can rebuild the model."
            ) from None
    # Round-trip so the spec holds exactly what a checkpoint will load (tuples -> lists).
    return json.loads(json.dumps(resolved))


def _check_not_taken(name: str, builder: Callable[..., nn.Module]) -> None:
    existing = _REGISTRY.get(name)
    if existing is None:
        return
    # Re-importing the same module re-registers the same builder: harmless.
    same = (existing.__module__, existing.__qualname__) == (builder.__module__, builder.__qualname__)
    if not same:
        raise ModelError(
            f"Model name {name!r} is already registered by "
            f"{existing.__module__}.{existing.__qualname__}; pick another name."
        )


def _unknown_name_message(name: Any) -> str:
    known = list_models()
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"Unknown model {name!r}; known models: {', '.join(known) or 'none'}{hint}."


def _state_fingerprint(model: nn.Module) -> tuple[tuple[str, tuple[int, ...]], ...]:
    return tuple((key, tuple(value.shape)) for key, value in model.state_dict().items())
