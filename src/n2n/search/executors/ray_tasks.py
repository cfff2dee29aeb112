"""`--executor ray`: children train as Ray tasks, on a cluster (--ray-address) or a local instance.

The data go into the object store once (`ray.put`); a worker process fetches them with
its first job and keeps them. Ray's own task retries are off: the attempts are counted
here, as for local processes, so a job whose worker dies is tried once more and then
scored invalid. Ray is an optional dependency, imported only by this executor; the
cluster's workers need n2n installed.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

from ...distill.data import DistillData
from ...errors import N2NError
from .jobs import Job, JobResult, run_attempt
from .retry import Attempts

_DATA: dict[str, DistillData] = {}  # in a Ray worker: the search's data, by object id


def train_on_worker(data_refs: list[Any], job_bytes: bytes, threads: int, use_gpu: bool) -> tuple[str, Any]:
    """One attempt, run by a Ray worker. The data come as a reference inside a list, which Ray leaves
    unresolved, so that the worker fetches them only the first time."""
    import ray

    torch.set_num_threads(threads)
    key = data_refs[0].hex()
    if key not in _DATA:
        _DATA.clear()  # another search's data: not needed any more
        device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        _DATA[key] = ray.get(data_refs[0]).to(device)
    return run_attempt(job_bytes, _DATA[key])


class RayExecutor:
    name = "ray"

    def __init__(self, data: DistillData, workers: int, address: str | None = None) -> None:
        import ray

        self.ray, self.data, self.workers, self.address = ray, data, workers, address
        self.deaths = death_errors(ray)
        self.data_refs: list[Any] = []
        self.start()  # now, so that a wrong address fails before anything trains

    def start(self) -> None:
        if self.data_refs:
            return
        ray = self.ray
        self.started_here = not ray.is_initialized()
        if self.started_here:
            connect(ray, self.address)
        self.cpus = cpu_share(ray.nodes(), self.workers)
        self.gpus = gpu_share(ray.cluster_resources().get("GPU", 0.0), self.workers)
        self.data_refs = [ray.put(self.data.to(torch.device("cpu")))]
        self.task = ray.remote(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=0)(train_on_worker)

    def describe(self) -> str:
        return f"ray executor (at most {self.workers} tasks at once, {self.cpus} CPU and {self.gpus:g} GPU per task)"

    def run(self, jobs: list[Job], on_result: Callable[[JobResult], None] | None = None) -> list[JobResult]:
        if not jobs:
            return []
        self.start()
        attempts = Attempts(jobs, on_result)
        running: dict[Any, tuple[int, int]] = {}
        while attempts.waiting or running:
            while attempts.waiting and len(running) < self.workers:
                index, attempt = attempts.next()
                ref = self.task.remote(self.data_refs, attempts.packed[index], self.cpus, self.gpus > 0)
                running[ref] = (index, attempt)
            done, _ = self.ray.wait(list(running), num_returns=1)
            for ref in done:
                attempts.finished(*running.pop(ref), *self.answer(ref))
        return attempts.all_done()

    def answer(self, ref: Any) -> tuple[str, Any]:
        """The task's answer; a worker or node that died is a failed attempt. An exception the
        training raised is raised here, as it would be inline."""
        try:
            return self.ray.get(ref)
        except self.deaths as error:
            what = "out of memory" if "OutOfMemory" in type(error).__name__ else "worker died"
            return "failed", f"{what}: {type(error).__name__}: {str(error).strip().splitlines()[0][:200]}"

    def close(self) -> None:
        self.data_refs = []
        if self.started_here and self.ray.is_initialized():
            self.ray.shutdown()


def connect(ray: Any, address: str | None) -> None:
    try:
        if address:
            ray.init(address=address)
        else:
            ray.init(include_dashboard=False)  # a local instance for this run
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise N2NError(f"could not start or reach {where}: {str(error).strip().splitlines()[0]}") from None


def death_errors(ray: Any) -> tuple[type[BaseException], ...]:
    errors = ray.exceptions
    return (errors.WorkerCrashedError, errors.NodeDiedError, errors.ObjectLostError, errors.OutOfMemoryError)


def cpu_share(nodes: list[dict[str, Any]], workers: int) -> int:
    """CPUs per task: the largest node's CPUs split between the tasks, at least one."""
    largest = max((node["Resources"].get("CPU", 0.0) for node in nodes if node.get("Alive")), default=1.0)
    return max(1, int(largest) // workers)


def gpu_share(gpus: float, workers: int) -> float:
    """GPUs per task: a whole one where there are enough, else an equal share (Ray takes 4 decimals)."""
    return math.floor(min(1.0, gpus / workers) * 10_000) / 10_000 if gpus else 0.0
