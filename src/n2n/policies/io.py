"""Save a policy as {kind, config, state_dict} and rebuild it from such a file."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from n2n.errors import CheckpointError, N2NError
from n2n.policies.removal import RemovalPolicy
from n2n.policies.shrink import ShrinkPolicy

logger = logging.getLogger(__name__)

Policy = RemovalPolicy | ShrinkPolicy
POLICY_KINDS: dict[str, type[nn.Module]] = {RemovalPolicy.kind: RemovalPolicy, ShrinkPolicy.kind: ShrinkPolicy}


# a run folder keeps each stage's policy in policies/<this name>
POLICY_FILES = {"removal": "removal.pt", "shrink": "shrink.pt"}


def save_policy(path: str | os.PathLike[str], policy: Policy) -> None:
    """Write everything needed to rebuild ``policy``: its kind, constructor config and weights."""
    if getattr(policy, "kind", None) not in POLICY_KINDS:
        raise TypeError(f"save_policy takes a RemovalPolicy or ShrinkPolicy, got {type(policy).__name__}.")
    payload = {"kind": policy.kind, "config": policy.config(), "state_dict": policy.state_dict()}
    torch.save(payload, path)
    logger.info("saved %s policy to %s", policy.kind, path)


def load_policy(path: str | os.PathLike[str], *, kind: str | None = None) -> Policy:
    """Rebuild a policy saved by :func:`save_policy` (on the CPU).

    kind: when given ("removal" or "shrink"), the file must hold that kind of policy.
    Raises CheckpointError for a missing, unreadable or foreign file.
    """
    payload = _read(path)
    saved_kind = payload["kind"]
    if saved_kind not in POLICY_KINDS:
        raise CheckpointError(f"{path} holds an unknown policy kind {saved_kind!r}; expected one of {sorted(POLICY_KINDS)}.")
    if kind is not None and saved_kind != kind:
        raise CheckpointError(f"{path} holds a {saved_kind} policy but a {kind} policy was asked for.")
    try:
        policy = POLICY_KINDS[saved_kind](**payload["config"])
        policy.load_state_dict(payload["state_dict"])
    except (TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path} is a damaged {saved_kind} policy file ({_first_line(error)}).") from None
    return policy


def _read(path: str | os.PathLike[str]) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise CheckpointError(f"Policy file {path} does not exist; check the path.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # the unpickler fails in many ways on foreign bytes; all mean the same here
        raise CheckpointError(
            f"{path} is not a policy file saved by n2n ({_first_line(error)}); pass a file written by save_policy."
        ) from None
    if not isinstance(payload, dict) or not {"kind", "config", "state_dict"} <= payload.keys():
        raise CheckpointError(
            f"{path} is not a policy file saved by n2n (no kind/config/state_dict); pass a file written by save_policy."
        )
    if not isinstance(payload["config"], dict) or not isinstance(payload["state_dict"], dict):
        raise CheckpointError(f"{path} is a damaged policy file (config or weights are not mappings).")
    return payload


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def policy_for_stage(source: str | Path, kind: str) -> nn.Module | None:
    """The `kind` policy from a run folder (its policies/ subfolder) or a single policy file.

    A single file serves only the stage of its own kind; the other stage starts fresh.
    """
    source = Path(source)
    if source.is_dir():
        path = source / "policies" / POLICY_FILES[kind]
        return load_policy(path, kind=kind) if path.is_file() else None
    if source.is_file():
        policy = load_policy(source)
        return policy if policy.kind == kind else None
    raise N2NError(f"--policy-from {source} is neither a run folder nor a policy file")
