"""`--executor process`: children train in N local worker processes.

Each worker is started (spawn: no forked OpenMP or CUDA state) with the data once and
then serves jobs over its own pipe, so the searching process always knows which job a
worker was running when it died: that job alone is tried again, on a fresh worker.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
from multiprocessing.connection import Connection, wait
from typing import Any, Callable

import torch

from ...distill.data import DistillData
from .jobs import Job, JobResult, from_bytes, run_attempt, to_bytes
from .retry import Attempts

def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def worker_devices(device: str, workers: int, gpus: int) -> list[str]:
    """The device of each worker: GPUs in turn (a GPU each, or a share of one when there are
    more workers than GPUs); on the CPU, the CPU."""
    if not device.startswith("cuda") or gpus < 1:
        return [device] * workers
    return [f"cuda:{slot % gpus}" for slot in range(workers)]


def serve(connection: Connection, device: str, threads: int) -> None:
    """A worker process: receive the data once, then answer each job until None."""
    torch.set_num_threads(threads)
    data = from_bytes(connection.recv_bytes(), device)
    while (job_bytes := connection.recv()) is not None:
        connection.send(run_attempt(job_bytes, data))


class Worker:
    def __init__(self, context: Any, device: str, threads: int) -> None:
        self.connection, their_end = context.Pipe()
        self.process = context.Process(target=serve, args=(their_end, device, threads), daemon=True,
                                       name="n2n-worker")
        self.process.start()
        their_end.close()  # so that our end reads EOF when the worker dies
        self.task: tuple[int, int] | None = None  # (job index, attempt) while busy

    def load(self, data_bytes: bytes) -> "Worker":
        try:
            self.connection.send_bytes(data_bytes)
        except OSError:  # died while starting: its first job finds out
            pass
        return self

    def give(self, index: int, attempt: int, job_bytes: bytes) -> None:
        self.task = (index, attempt)
        try:
            self.connection.send(job_bytes)
        except OSError:  # died while idle: collect() reports it
            pass

    def collect(self) -> tuple[str, Any]:
        """The worker's answer (see run_attempt), or ("failed", why) when it died."""
        try:
            if self.connection.poll():
                return self.connection.recv()
        except (EOFError, OSError):
            pass
        self.process.join(timeout=10)
        return "failed", f"worker died: {exit_description(self.process.exitcode)}"

    def stop(self) -> None:
        """Ask an idle worker to finish; a busy one (the search stopped mid-epoch) is killed."""
        try:
            if self.task is None:
                self.connection.send(None)
        except OSError:
            pass
        self.process.join(timeout=10 if self.task is None else 0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.connection.close()


def exit_description(code: int | None) -> str:
    if code is None:
        return "it stopped answering"
    if code < 0:
        name = signal.Signals(-code).name
        return f"killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    return f"exit code {code}"


class ProcessExecutor:
    name = "process"

    def __init__(self, data: DistillData, workers: int, threads: int | None = None) -> None:
        self.workers = workers
        self.threads = threads or max(1, available_cores() // workers)
        self.data = data
        self.devices = worker_devices(str(data.train_images.device), workers, torch.cuda.device_count())
        self.pool: list[Worker] = []
        self.context = multiprocessing.get_context("spawn")

    def describe(self) -> str:
        return (f"process executor ({self.workers} worker processes, {self.threads} torch threads each, "
                f"on {', '.join(sorted(set(self.devices)))})")

    def run(self, jobs: list[Job], on_result: Callable[[JobResult], None] | None = None) -> list[JobResult]:
        if not jobs:
            return []
        self.start()
        attempts = Attempts(jobs, on_result)
        while attempts.waiting or self.busy():
            for worker in self.pool:
                if worker.task is None and attempts.waiting:
                    index, attempt = attempts.next()
                    worker.give(index, attempt, attempts.packed[index])
            for slot, kind, payload in self.answers():
                index, attempt = self.pool[slot].task
                self.pool[slot].task = None
                if kind == "failed":
                    self.replace(slot)  # a fresh process, whatever state the failure left
                attempts.finished(index, attempt, kind, payload)
        return attempts.all_done()

    def busy(self) -> list[Worker]:
        return [worker for worker in self.pool if worker.task is not None]

    def answers(self) -> list[tuple[int, str, Any]]:
        """Wait until at least one busy worker answered or died; (slot, kind, payload) for each."""
        busy = self.busy()
        ready = set(wait([w.connection for w in busy] + [w.process.sentinel for w in busy]))
        return [(self.pool.index(w), *w.collect()) for w in busy
                if w.connection in ready or w.process.sentinel in ready]

    def start(self) -> None:
        if self.pool:
            return
        # the data travel once per worker, as bytes: no shared-memory tensor handles to keep alive;
        # sent once every worker is starting, so that they import torch side by side
        self.data_bytes = to_bytes(self.data)
        starting = [Worker(self.context, device, self.threads) for device in self.devices]
        self.pool = [worker.load(self.data_bytes) for worker in starting]

    def replace(self, slot: int) -> None:
        """A fresh worker on the dead one's device."""
        self.pool[slot].stop()
        self.pool[slot] = Worker(self.context, self.devices[slot], self.threads).load(self.data_bytes)

    def close(self) -> None:
        for worker in self.pool:
            worker.stop()
        self.pool = []
