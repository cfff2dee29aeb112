"""What the benchmarks share: timing, the machine they ran on, numbers in tables, JSON written whole."""
from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from n2n.files import atomic_write_text
from n2n.run import git_revision

CPU_DETAILS = ("cpu_model", "cpu_capability")  # recorded from 2026-12-03 on


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def timed(work: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    """`work()` and its wall-clock seconds, GPU work included."""
    synchronise(device)
    started = time.perf_counter()
    result = work()
    synchronise(device)
    return result, time.perf_counter() - started


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine(device: torch.device) -> dict[str, Any]:
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "torch": str(torch.__version__), "torch_threads": torch.get_num_threads(), "device": str(device),
            "device_name": device_name(device), "cpu_model": cpu_model(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "git_revision": git_revision()}


def cpu_fields(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo; empty where there is none."""
    if not cpuinfo.is_file():
        return {}
    first = cpuinfo.read_text().split("\n\n", 1)[0]
    return {name.strip(): value.strip() for name, _, value in (line.partition(":") for line in first.splitlines())}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_fields().get("model name") or platform.processor() or "cpu"


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """Family and model: virtual machines often name every CPU of a vendor alike ("AMD EPYC"), and
    CPUs of other models run other kernels, so their seconds, and last digits, differ."""
    fields = cpu_fields(cpuinfo)
    if "cpu family" not in fields or "model" not in fields:
        return None
    return f"family {fields['cpu family']} model {fields['model']}"


def machine_line(machine: dict[str, Any]) -> str:
    on_cpu = machine.get("device") == "cpu"
    model = ", ".join(str(machine[name]) for name in CPU_DETAILS if on_cpu and machine.get(name))
    named = f"{machine['device_name']} ({model})" if model else machine["device_name"]
    return f"{named}, {machine['usable_cpus']} CPUs, torch {machine['torch']}"


def plain(value: Any) -> Any:
    """JSON has no NaN: a measurement that could not be made is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def write_json(path: Path, result: dict[str, Any]) -> None:
    """Whole or not at all: a stop mid-write must not tear the reference runs a partial file keeps."""
    atomic_write_text(path, json.dumps(plain(result), indent=2) + "\n")


def measured(value: Any) -> bool:
    """A figure the run produced: not missing (None) and not NaN."""
    return value is not None and not (isinstance(value, float) and not math.isfinite(value))


def number(value: Any, digits: int = 2) -> str:
    if not measured(value):
        return "–"
    return f"{value:,.{digits}f}"
