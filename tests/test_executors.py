"""Where children train: worker processes and Ray tasks give the scores the inline executor
gives, and a worker killed mid-candidate costs that candidate one retry, never the search."""
from __future__ import annotations

import logging
import os
import signal

import pytest
import torch
from torch import nn

from clihelpers import run_error
from n2n.config import SearchConfig, from_dict
from n2n.distill.data import DistillData
from n2n.errors import ConfigError
from n2n.models import create_model
from n2n.search.executors import Job, choose_executor
from n2n.search.executors import process as process_executor
from n2n.search.executors import retry
from n2n.search.executors.jobs import to_bytes
from n2n.search.executors.retry import Attempts, WorkerError
from n2n.search.loop import Search
from n2n.search.records import CandidateRecord

IMAGE = 12
# one stage, two policy epochs of three children, each distilled long enough to score apart
# (L2 on logits: on this problem Hinton's loss scores every child alike, augmented or not)
SEARCH = {"stages": ["removal"], "epochs_per_stage": 2, "rollouts": 3,
          "proxy": {"loss": "l2", "epochs": 2, "subset": None, "batch_size": 16}}

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_problem(crop_padding: int = 0) -> tuple[nn.Module, DistillData]:
    """A small conv4 and random images it labels itself (its validation accuracy is 1)."""
    torch.manual_seed(0)
    teacher = create_model("conv4", in_channels=1, num_classes=10, width_mult=0.5).eval()
    images = torch.randn(192, 1, IMAGE, IMAGE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        labels = teacher(images).argmax(dim=1)
    data = DistillData(images[:128], labels[:128], images[128:], labels[128:], crop_padding=crop_padding)
    return teacher, data.attach_teacher(teacher)


def search(crop_padding: int = 0, **options) -> Search:
    teacher, data = tiny_problem(crop_padding)
    config = from_dict(SearchConfig, {**SEARCH, **options}).validate()
    found = Search(teacher, data, data.train_images[:1], config, progress=False)
    found.run()
    return found


def candidates(found: Search) -> dict[str, CandidateRecord]:
    return {f"{r.stage}-e{r.epoch}-r{r.rollout}": r for r in found.history if isinstance(r, CandidateRecord)}


def outcome(record: CandidateRecord) -> tuple:
    """What a child's scoring decides; the training time aside."""
    return (record.actions, record.reward, record.params, record.flops, record.val_accuracy, record.valid,
            record.cached, record.reason)


def trained_names(found: Search, epoch: int) -> list[str]:
    return [name for name, r in candidates(found).items() if r.epoch == epoch and r.valid and not r.cached]


@pytest.fixture(scope="module")
def inline(one_thread) -> Search:
    return search()


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance for this module's tests. Ray missing: a failure under CI=true, a skip elsewhere."""
    try:
        import ray
    except ImportError:
        message = "Ray is not installed: pip install 'n2n[ray]'"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


@pytest.fixture(params=["process", "ray"])
def pool(request, monkeypatch) -> dict:
    """Search options for two workers with one torch thread each, the inline run's arithmetic."""
    if request.param == "ray":
        request.getfixturevalue("local_ray")
    monkeypatch.setattr(process_executor, "available_cores", lambda: 2)
    return {"executor": request.param, "workers": 2}


def test_workers_score_every_child_as_inline_does(inline, pool):
    expected = candidates(inline)
    assert any(r.val_accuracy > 0 for r in expected.values()), "the children must score apart"
    assert trained_names(inline, 0) and any(r.cached or not r.valid for r in expected.values())
    found = search(**pool)
    got = candidates(found)
    assert got.keys() == expected.keys()
    for name, record in expected.items():
        assert outcome(got[name]) == outcome(record), name
        assert (got[name].seconds > 0) == (record.seconds > 0)
    assert found.scorer.cache.state_dict().keys() == inline.scorer.cache.state_dict().keys()
    best, reference = found.results[0], inline.results[0]
    assert outcome(best.best) == outcome(reference.best) and best.candidates == reference.candidates
    weights = best.best_child.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in reference.best_child.state_dict().items())


class KillOnLoad:
    """Unpickled by a worker in place of a job, it kills that worker with SIGKILL, as the kernel's
    out-of-memory killer would."""

    def __reduce__(self):
        return signal.raise_signal, (int(signal.SIGKILL),)


def kill_workers_of(monkeypatch, deaths: dict[str, int]) -> None:
    """The worker given job NAME dies on its first deaths[NAME] attempts: the searching process
    sends it a payload that kills it instead of the job, whichever executor runs the pool."""
    poison, next_attempt = to_bytes(KillOnLoad()), Attempts.next

    def next_with_deaths(attempts: Attempts) -> tuple[int, int]:
        index, attempt = next_attempt(attempts)
        clean = attempts.__dict__.setdefault("clean", list(attempts.packed))
        dies = attempt <= deaths.get(attempts.jobs[index].name, 0)
        attempts.packed[index] = poison if dies else clean[index]
        return index, attempt

    monkeypatch.setattr(retry.Attempts, "next", next_with_deaths)


def test_a_killed_worker_costs_its_candidate_one_retry(inline, pool, monkeypatch, caplog):
    # the first trained child dies once, a child of the last epoch on both attempts: only that one
    # changes, so every record before it matches the inline run
    once, twice = trained_names(inline, 0)[0], trained_names(inline, 1)[-1]
    kill_workers_of(monkeypatch, {once: 1, twice: 2})
    with caplog.at_level(logging.WARNING, logger="n2n.search.executors"):
        found = search(**pool)
    expected, got = candidates(inline), candidates(found)
    assert got.keys() == expected.keys()
    assert f"{once}: worker died" in caplog.text and "trying it once more" in caplog.text
    assert outcome(got[once]) == outcome(expected[once]) and got[once].seconds > 0
    lost = got[twice]
    assert not lost.valid and lost.reward == -1.0
    assert lost.reason.startswith("worker died twice: "), lost.reason
    for name in expected:
        if name != twice:
            assert outcome(got[name]) == outcome(expected[name]), name


def test_an_augmented_proxy_has_the_teacher_label_each_batch_in_workers_too(inline, pool):
    augmented = {"crop_padding": 2, "proxy": {**SEARCH["proxy"], "augment": True}}
    expected = candidates(search(**augmented))
    got = candidates(search(**augmented, **pool))
    assert got.keys() == expected.keys()
    for name, record in expected.items():
        assert outcome(got[name]) == outcome(record), name
    plain = candidates(inline)  # the same children on unaugmented batches score otherwise
    assert any(outcome(record) != outcome(plain[name]) for name, record in expected.items())


# ---- retry bookkeeping and configuration, without workers ----------------------------------------
def test_a_second_failure_scores_the_job_invalid_with_its_reason():
    jobs = [Job("removal-e0-r0", nn.Linear(1, 1), SearchConfig().proxy, 0)]
    attempts = Attempts(jobs, on_result=None)
    assert attempts.next() == (0, 1)
    attempts.finished(0, 1, "failed", "worker died: killed by SIGKILL (out of memory?)")
    assert attempts.next() == (0, 2) and attempts.results == [None]
    attempts.finished(0, 2, "failed", "worker died: killed by SIGKILL (out of memory?)")
    [result] = attempts.all_done()
    assert not result.ok and result.attempts == 2
    assert result.error == "worker died twice: killed by SIGKILL (out of memory?)"


def test_an_error_in_the_training_itself_stops_the_search_as_inline():
    attempts = Attempts([Job("removal-e0-r0", nn.Linear(1, 1), SearchConfig().proxy, 0)], on_result=None)
    with pytest.raises(WorkerError, match="training removal-e0-r0 failed in a worker:\nTraceback"):
        attempts.finished(*attempts.next(), "raised", "Traceback (most recent call last): ...")


@pytest.mark.parametrize("options, message", [
    ({"executor": "threads"}, "executor must be one of auto, inline, process, ray"),
    ({"executor": "process", "workers": 0}, "--workers must be a whole number between 1 and 1,024"),
    ({"executor": "process", "workers": 10**6}, "--workers must be a whole number between 1 and 1,024"),
])
def test_executor_options_are_checked(options, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(SearchConfig, options).validate()


def test_auto_trains_inline_on_one_device_and_in_workers_to_fill_several(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert choose_executor("auto", 1, cpu)[:2] == ("inline", 1)
    assert choose_executor("auto", 3, cpu)[:2] == ("process", 3)
    assert choose_executor("ray", 2, cpu)[:2] == ("ray", 2)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert choose_executor("auto", 1, cuda)[:2] == ("process", 4)
    assert choose_executor("auto", 8, cuda)[:2] == ("process", 8)
    assert choose_executor("auto", 1, cpu)[:2] == ("inline", 1)  # GPUs the run does not use do not count
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert choose_executor("auto", 1, cuda)[:2] == ("inline", 1)


def test_workers_take_the_gpus_in_turn():
    assert process_executor.worker_devices("cuda", 3, gpus=2) == ["cuda:0", "cuda:1", "cuda:0"]
    assert process_executor.worker_devices("cuda:0", 2, gpus=4) == ["cuda:0", "cuda:1"]
    assert process_executor.worker_devices("cpu", 2, gpus=0) == ["cpu", "cpu"]


def test_the_search_logs_where_its_children_train(caplog):
    with caplog.at_level(logging.INFO, logger="n2n.search.scorer"):
        search(epochs_per_stage=1, rollouts=1)
    assert any("children train on the inline executor" in m and "auto: one device" in m for m in caplog.messages)


def test_ray_without_ray_installed_is_one_clear_line(tmp_path, monkeypatch, capsys):
    real = __import__("importlib.util").util.find_spec
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    line = run_error(["compress", "--teacher", str(tmp_path / "t.pt"), "--out", str(tmp_path / "run"),
                      "--executor", "ray"], capsys)
    assert line == "n2n: error: --executor ray needs Ray: pip install 'n2n[ray]'"
