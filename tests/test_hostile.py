"""Hostile input: every bad option, config file, checkpoint, data header and output path gives
exit code 2, one `n2n: error:` line, no traceback, and leaves no file or folder behind.

One table enumerates the cases; each builds its bad input inside the test's own folder, and
the test compares every path under that folder and the shared workspace before and after.
"""
from __future__ import annotations

import errno
import os
import pickle
import struct
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fakedata import idx_bytes, write_learnable_mnist
from n2n.checkpoint import load_checkpoint
from n2n.cli import main
from n2n.config import SearchConfig, dump_yaml, from_dict, to_dict
from n2n.errors import N2NError
from n2n.export import SUFFIXES
from n2n.report.run_folder import RunFolder


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> dict[str, Path]:
    """Fake MNIST and a conv4 teacher trained one epoch on it, shared by every case."""
    root = tmp_path_factory.mktemp("hostile")
    write_learnable_mnist(root / "mnist", n_train=80, n_test=20)
    teacher = root / "teacher.pt"
    assert main(["--quiet", "train-teacher", "--model", "conv4", "--dataset", "mnist", "--data-dir",
                 str(root / "mnist"), "--epochs", "1", "--batch-size", "16", "--out", str(teacher)]) == 0
    return {"root": root, "mnist": root / "mnist", "teacher": teacher}


def all_paths(*roots: Path) -> set[Path]:
    return {path for root in roots for path in root.rglob("*")}


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """Exit code and stderr of the CLI, argparse's own exits included."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    return code, capsys.readouterr().err


def assert_one_error_line(code: int, err: str) -> str:
    lines = [line for line in err.strip().splitlines() if not line.startswith(("INFO ", "WARNING "))]
    assert code == 2, err
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("n2n: error: "), lines
    return lines[0]


# ---- bad inputs, each written into the test's folder -------------------------------------

def payload_of(ws: dict[str, Path]) -> dict[str, Any]:
    return torch.load(ws["teacher"], weights_only=True)


def tampered(change: Callable[[dict[str, Any]], Any]) -> Callable[[dict, Path], Path]:
    """A maker of a copy of the teacher checkpoint with `change` applied to its dict."""
    def make(ws: dict[str, Path], tmp: Path) -> Path:
        payload = payload_of(ws)
        change(payload)
        path = tmp / "bad.pt"
        torch.save(payload, path)
        return path
    return make


def without(section: str, key: str) -> Callable[[dict[str, Any]], None]:
    return lambda p: p[section].pop(key)


def setting(section: str, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda p: p[section].__setitem__(key, value)


def nan_weights(payload: dict[str, Any]) -> None:
    name = next(k for k, v in payload["state_dict"].items() if v.is_floating_point())
    payload["state_dict"][name] = torch.full_like(payload["state_dict"][name], float("nan"))


class RunsCode:
    """Pickled, it calls os.system on load: a checkpoint must never run it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


BAD_CHECKPOINTS: dict[str, Callable[[dict, Path], Path]] = {
    "arch-missing": tampered(lambda p: p.pop("arch")),
    "arch-a-string": tampered(lambda p: p.__setitem__("arch", "conv4")),
    "arch-unknown-model": tampered(setting("arch", "name", "alexnet")),
    "kwargs-a-list": tampered(setting("arch", "kwargs", [1, 2])),
    "kwargs-unknown": tampered(lambda p: p["arch"]["kwargs"].__setitem__("depth", 3)),
    "huge-widths": tampered(lambda p: p["arch"]["kwargs"].__setitem__("widths", [10**6] * 5)),
    "rewrites-a-string": tampered(setting("arch", "rewrites", "remove everything")),
    "rewrites-garbage": tampered(setting("arch", "rewrites", [{"kind": "shrink", "layers": "x"}, 5])),
    "in-channels-missing": tampered(without("meta", "in_channels")),
    "in-channels-text": tampered(setting("meta", "in_channels", "one")),
    "in-channels-huge": tampered(setting("meta", "in_channels", 10**9)),
    "image-size-negative": tampered(setting("meta", "image_size", -28)),
    "image-size-huge": tampered(setting("meta", "image_size", 10**9)),
    "meta-a-list": tampered(lambda p: p.__setitem__("meta", [1])),
    "state-dict-a-list": tampered(lambda p: p.__setitem__("state_dict", [1, 2, 3])),
    "state-dict-numbers": tampered(lambda p: p.__setitem__("state_dict", {"w": 1.0})),
    "state-dict-missing-weights": tampered(lambda p: p["state_dict"].pop(next(iter(p["state_dict"])))),
    "nan-weights": tampered(nan_weights),
}


def damaged_file(content: bytes) -> Callable[[dict, Path], Path]:
    def make(ws: dict[str, Path], tmp: Path) -> Path:
        path = tmp / "bad.pt"
        path.write_bytes(content)
        return path
    return make


def truncated(ws: dict[str, Path], tmp: Path) -> Path:
    return damaged_file(ws["teacher"].read_bytes()[:500])(ws, tmp)


def not_a_dict(ws: dict[str, Path], tmp: Path) -> Path:
    path = tmp / "bad.pt"
    torch.save([payload_of(ws)], path)
    return path


def crafted_pickle(ws: dict[str, Path], tmp: Path) -> Path:
    path = tmp / "bad.pt"
    torch.save({"format": "n2n-checkpoint/1", "arch": RunsCode(tmp.parent / f"{tmp.name}-pwned")}, path)
    return path


BAD_CHECKPOINTS |= {"zero-bytes": damaged_file(b""), "text": damaged_file(b"hello\n"), "truncated": truncated,
                    "crafted-pickle": crafted_pickle, "not-a-dict": not_a_dict,
                    "a-folder": lambda ws, tmp: ws["mnist"], "missing": lambda ws, tmp: tmp / "none.pt"}


def config_file(text: str | bytes) -> Callable[[dict, Path], Path]:
    def make(ws: dict[str, Path], tmp: Path) -> Path:
        path = tmp / "search.yaml"
        path.write_bytes(text.encode() if isinstance(text, str) else text)
        return path
    return make


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{before}'] * 9)}]\n" for before, name in zip("abcdefgh", "bcdefghi")
) + "student_model: *i\n"

BAD_CONFIGS = {
    "student-model-a-number": "student_model: 5", "student-model-a-list": "student_model: [a, b]",
    "policy-from-a-number": "policy_from: 5", "compression-below-1": "compression: 0.5",
    "compression-nan": "compression: .nan", "compression-text": "compression: ten", "ray-address-a-number":
    "ray_address: 5", "final-epochs-0": "final: {epochs: 0}", "proxy-epochs-negative": "proxy: {epochs: -1}",
    "final-epochs-negative": "final: {epochs: -3}", "proxy-calibrate-negative": "proxy: {calibrate: -1}", "rescore-subset-0": "rescore_subset: 0",
    "proxy-subset-negative": "proxy: {subset: -5}",
    "proxy-batch-0": "proxy: {batch_size: 0}", "proxy-lr-nan": "proxy: {lr: .nan}",
    "proxy-lr-inf": "proxy: {lr: .inf}", "final-weight-decay-negative": "final: {weight_decay: -1}",
    "proxy-temperature-0": "proxy: {temperature: 0}", "proxy-alpha-above-1": "proxy: {alpha: 1.5}",
    "proxy-a-number": "proxy: 5", "entropy-coef-inf": "entropy_coef: .inf", "min-width-huge": "min_width: 100000",
    "min-width-fraction": "min_width: 2.5", "horizon-negative": "annealing_horizon: -1",
    "stages-repeated": "stages: [removal, removal]", "ratios-text": "ratios: [a, b]", "ratios-zero": "ratios: [0]",
    "ratios-a-number": "ratios: 0.5", "rollouts-billion": "rollouts: 1000000000",
    "epochs-per-stage-huge": "epochs_per_stage: 100000", "seed-huge": "seed: 100000000000000000000000",
    "seed-negative": "seed: -1", "policy-hidden-0": "removal_policy: {hidden_size: 0}",
    "policy-lr-nan": "shrink_policy: {lr: .nan}", "baseline-decay-beyond-float": "baseline_decay: " + "9" * 400,
    "number-as-key": "1: 2", "a-list": "- rollouts\n- 5", "python-tag": "rollouts: !!python/object/apply:os.system "
    "['touch pwned']", "yaml-bomb": BOMB, "not-yaml": "rollouts: [1, 2\n",
}
BAD_CONFIG_FILES = {name: config_file(text) for name, text in BAD_CONFIGS.items()} | {
    "binary": config_file(bytes(range(256)) * 4), "latin-1": config_file("student_model: caf\xe9".encode("latin-1")),
    "a-folder": lambda ws, tmp: ws["mnist"],
}


def bad_idx(ws: dict[str, Path], tmp: Path) -> Path:
    """MNIST files whose training images header claims 2**32-1 images of 2**32-1 x 2**32-1 pixels."""
    folder = tmp / "mnist"
    folder.mkdir()
    for file in ws["mnist"].iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    (folder / "train-images-idx3-ubyte.gz").unlink()
    header = struct.pack(">HBB", 0, 0x08, 3) + struct.pack(">3I", 2**32 - 1, 2**32 - 1, 2**32 - 1)
    (folder / "train-images-idx3-ubyte").write_bytes(header + bytes(1000))
    return folder


def under_a_file(ws: dict[str, Path], tmp: Path) -> Path:
    (tmp / "file").write_text("x")
    return tmp / "file" / "out"


def resumable_run(settings: Callable[[dict[str, Any]], Any]) -> Callable[[dict, Path], Path]:
    """A run folder as a killed run leaves it, its config.yaml changed by `settings`."""
    def make(ws: dict[str, Path], tmp: Path) -> Path:
        folder = tmp / "run"
        folder.mkdir()
        values = {"teacher": str(ws["teacher"]), "dataset": "mnist", "data_dir": str(ws["mnist"]), "limit": None,
                  "device": "cpu", "search": to_dict(SearchConfig())}
        values = settings(values) or values
        text = values if isinstance(values, bytes) else dump_yaml(values).encode()
        (folder / "config.yaml").write_bytes(text)
        return folder
    return make


# ---- the table ------------------------------------------------------------------------------

Case = Callable[[dict, Path], list[str]]


def compress(*extra: str, config: Callable | None = None, teacher: Callable | None = None,
             data: Callable | None = None, out: Callable | None = None) -> Case:
    def argv(ws: dict[str, Path], tmp: Path) -> list[str]:
        args = ["--quiet", "compress", "--teacher", str(teacher(ws, tmp) if teacher else ws["teacher"]),
                "--data-dir", str(data(ws, tmp) if data else ws["mnist"]),
                "--out", str(out(ws, tmp) if out else tmp / "run")]
        # a short search should a case be wrongly accepted; a config file's own counts are not overridden
        short = ["--config", str(config(ws, tmp))] if config else ["--epochs-per-stage", "1", "--rollouts", "1"]
        return args + short + list(extra)
    return argv


def train(*extra: str, data: Callable | None = None, out: Callable | None = None) -> Case:
    def argv(ws: dict[str, Path], tmp: Path) -> list[str]:
        return ["--quiet", "train-teacher", "--model", "conv4", "--dataset", "mnist", "--data-dir",
                str(data(ws, tmp) if data else ws["mnist"]), "--out", str(out(ws, tmp) if out else tmp / "t.pt"),
                "--batch-size", "16", *extra]
    return argv


def export(*extra: str, checkpoint: Callable | None = None, out: Callable | None = None,
           fmt: str = "torchscript") -> Case:
    def argv(ws: dict[str, Path], tmp: Path) -> list[str]:
        where = ["--out", str(out(ws, tmp))] if out else ["--out", str(tmp / f"t{SUFFIXES[fmt]}")]
        return ["--quiet", "export", str(checkpoint(ws, tmp) if checkpoint else ws["teacher"]), "--format",
                fmt, *where, *extra]
    return argv


def evaluate(checkpoint: Callable | None = None, latency: tuple[str, ...] = ("--no-latency",)) -> Case:
    return lambda ws, tmp: ["--quiet", "evaluate", "--model", str(checkpoint(ws, tmp) if checkpoint else ws["teacher"]),
                            "--data-dir", str(ws["mnist"]), *latency]


def resume(run: Callable) -> Case:
    return lambda ws, tmp: ["--quiet", "compress", "--resume", str(run(ws, tmp))]


CASES: dict[str, Case] = {
    **{f"config-{name}": compress(config=make) for name, make in BAD_CONFIG_FILES.items()},
    **{f"compress-teacher-{name}": compress(teacher=make) for name, make in BAD_CHECKPOINTS.items()},
    **{f"evaluate-{name}": evaluate(make) for name, make in BAD_CHECKPOINTS.items()},
    **{f"export-{name}": export(checkpoint=make) for name, make in BAD_CHECKPOINTS.items()},
    "compress-rollouts-billion": compress("--rollouts", "1000000000"),
    "compress-workers-billion": compress("--executor", "process", "--workers", "1000000000"),
    "evaluate-latency-repeats-billion": evaluate(latency=("--latency-repeats", "1000000000")),
    "compress-seed-huge": compress("--seed", "99999999999999999999999"),
    "compress-seed-float": compress("--seed", "1e23"),
    "compress-compression-nan": compress("--compression", "nan"),
    "compress-compression-inf": compress("--compression", "inf"),
    "compress-student-width-nan": compress("--method", "kd", "--student-width", "nan"),
    "compress-stages-repeated": compress("--stages", "removal,removal"),
    "compress-policy-from-missing": compress("--policy-from", "/nonexistent/policy.pt"),
    "compress-policy-from-not-a-policy": compress("--policy-from", "PLACEHOLDER"),
    "compress-student-model-unknown": compress("--method", "kd", "--student-model", "alexnet"),
    "compress-device-unknown": compress("--device", "abacus"),
    "compress-limit-1": compress("--limit", "1"),
    "compress-limit-0": compress("--limit", "0"),
    "compress-idx-overflow": compress(data=bad_idx),
    "compress-out-under-a-file": compress(out=under_a_file),
    "resume-config-without-search": resume(resumable_run(lambda v: v.pop("search"))),
    "resume-config-search-a-list": resume(resumable_run(lambda v: v.__setitem__("search", [1]))),
    "resume-config-binary": resume(resumable_run(lambda v: bytes(range(256)))),
    "resume-config-bad-option": resume(resumable_run(lambda v: v["search"].__setitem__("rollouts", -1))),
    "train-lr-nan": train("--lr", "nan"), "train-lr-inf": train("--lr", "inf"), "train-lr-negative": train("--lr", "-1"),
    "train-lr-0": train("--lr", "0"), "train-epochs-0": train("--epochs", "0"),
    "train-epochs-negative": train("--epochs", "-2"), "train-batch-0": train("--batch-size", "0"),
    "train-seed-huge": train("--seed", str(2**64)), "train-seed-float": train("--seed", "1e23"),
    "train-limit-1": train("--limit", "1"), "train-idx-overflow": train(data=bad_idx),
    "train-out-under-a-file": train(out=under_a_file), "train-out-a-folder": train(out=lambda ws, tmp: tmp),
    "export-batch-huge": export("--batch", "100000000"), "export-batch-0": export("--batch", "0"),
    "export-seed-negative": export("--seed", "-1"), "export-out-under-a-file": export(out=under_a_file),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_input_is_one_line_and_leaves_nothing(name, ws, tmp_path, capsys):
    argv = CASES[name](ws, tmp_path)
    argv = [str(ws["teacher"]) if arg == "PLACEHOLDER" else arg for arg in argv]  # a checkpoint is no policy
    before = all_paths(ws["root"], tmp_path.parent)
    code, err = run_cli(argv, capsys)
    assert_one_error_line(code, err)
    assert all_paths(ws["root"], tmp_path.parent) == before
    assert not (tmp_path.parent / f"{tmp_path.name}-pwned").exists() and not Path("pwned").exists()


@pytest.mark.parametrize("name, words", [
    ("compress-teacher-a-folder", "is a folder"), ("compress-limit-1", "--limit 1"),
    ("compress-teacher-huge-widths", "the file holds"), ("export-nan-weights", "not finite"),
    ("config-yaml-bomb", "YAML nodes"), ("resume-config-without-search", "'search'"),
    ("config-latin-1", "UTF-8"), ("compress-idx-overflow", "truncated"),
])
def test_messages_say_what_is_wrong(name, words, ws, tmp_path, capsys):
    code, err = run_cli(CASES[name](ws, tmp_path), capsys)
    assert words in assert_one_error_line(code, err)


@pytest.mark.parametrize("name", ["config-yaml-bomb", "compress-rollouts-billion"])
def test_the_yaml_bomb_and_a_billion_rollouts_are_refused_at_once(name, ws, tmp_path, capsys):
    argv = CASES[name](ws, tmp_path)
    started = time.perf_counter()
    code, err = run_cli(argv, capsys)
    assert time.perf_counter() - started < 5  # a refusal, not a benchmark: the bound is generous
    assert_one_error_line(code, err)


def test_a_crafted_checkpoint_pickle_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "n2n-checkpoint/1", "arch": RunsCode(marker)}, path)
    with pytest.raises(N2NError, match="not a readable n2n checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()


# ---- the machine's own faults: a full disk, a read-only file system, no permission ----------

def test_a_full_disk_is_one_line_naming_the_file(ws, tmp_path, capsys, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("n2n.files.torch.save", full)
    out = tmp_path / "t.pt"
    code, err = run_cli(train("--epochs", "1", out=lambda ws, tmp: out)(ws, tmp_path), capsys)
    line = assert_one_error_line(code, err)
    assert str(out) in line and "no space left" in line and "free some space" in line
    assert list(tmp_path.iterdir()) == []  # the temporary went with the failed write


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 64 KiB file system of its own (root only: mount needs it)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root and mount to make a small file system")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_real_full_disk_and_a_read_only_one(ws, small_tmpfs, capsys):
    for fmt in ("torchscript", "onnx", "exported"):  # the teacher's export is larger than 64 KiB in each
        out = small_tmpfs / f"t{SUFFIXES[fmt]}"
        code, err = run_cli(export(out=lambda ws, tmp: out, fmt=fmt)(ws, small_tmpfs), capsys)
        line = assert_one_error_line(code, err)
        assert str(out) in line and "free some space" in line, fmt
        assert list(small_tmpfs.iterdir()) == [], fmt
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    code, err = run_cli(compress(out=lambda ws, tmp: small_tmpfs / "run")(ws, small_tmpfs), capsys)
    assert "not writable" in assert_one_error_line(code, err)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_output_folder_without_write_permission(ws, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, err = run_cli(compress(out=lambda ws, tmp: locked / "run")(ws, tmp_path), capsys)
    assert "not writable" in assert_one_error_line(code, err)


# ---- what a kill -9 leaves ----------------------------------------------------------------

def test_a_resume_removes_the_temporaries_a_killed_run_left(tmp_path):
    best = tmp_path / "state" / "best"
    best.mkdir(parents=True)
    left = [best / ".removal-e0-r1.pt.k2j3.tmp", tmp_path / ".metrics.jsonl.x1.tmp", tmp_path / "state" / ".search.pt.a.tmp"]
    kept = [best / "removal-e0-r0.pt", tmp_path / "config.yaml"]
    for path in left + kept:
        path.write_bytes(b"x")
    with RunFolder(tmp_path).claim() as folder:
        folder.remove_temporaries()
    assert [path.exists() for path in left + kept] == [False] * len(left) + [True] * len(kept)


# ---- property tests: whatever a config or checkpoint holds, it loads or says why ------------

FIELDS = [name for name in SearchConfig.__dataclass_fields__]
SECTION_FIELDS = ["epochs", "subset", "batch_size", "lr", "weight_decay", "temperature", "alpha", "loss",
                  "hidden_size", "num_layers", "rollouts", "annealing_horizon", "augment"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
                    st.integers(min_value=-(10**30), max_value=10**30))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                      max_leaves=10)
sections = st.dictionaries(st.sampled_from(SECTION_FIELDS), values, max_size=4)
configs = st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=6), st.integers()),
                          st.one_of(values, sections), max_size=6)


@settings(max_examples=300, deadline=None)
@given(configs)
def test_any_config_dict_is_valid_or_a_config_error(values):
    try:
        config = from_dict(SearchConfig, values).validate()
    except N2NError:
        return
    assert from_dict(SearchConfig, yaml.safe_load(dump_yaml(to_dict(config)))).validate() == config


CHECKPOINT_FIELDS = [("arch", "name"), ("arch", "kwargs"), ("arch", "rewrites"), ("meta", "in_channels"),
                     ("meta", "num_classes"), ("meta", "image_size"), (None, "arch"), (None, "meta"),
                     (None, "state_dict"), (None, "format")]
small = st.one_of(st.none(), st.booleans(), st.integers(-3, 40), st.just(10**9), st.floats(), st.text(max_size=6),
                  st.just("conv4"))
checkpoint_values = st.recursive(small, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.sampled_from(["widths", "name", "in_channels", "w"]), inner,
                                                  max_size=3)), max_leaves=8)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(CHECKPOINT_FIELDS), checkpoint_values), min_size=1, max_size=3))
def test_any_checkpoint_dict_loads_or_is_a_checkpoint_error(ws, tmp_path, changes):
    payload = payload_of(ws)
    for (section, key), value in changes:
        holder = payload if section is None else payload.get(section)
        if isinstance(holder, dict):
            holder[key] = value
    path = tmp_path / "c.pt"
    torch.save(payload, path)
    try:
        load_checkpoint(path)
    except N2NError:
        pass


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 cut short", pickle.dumps([1, 2])])
def test_a_damaged_stored_child_is_trained_again_not_a_traceback(tmp_path, content):
    folder = RunFolder(tmp_path)
    folder.best_dir.mkdir(parents=True)
    (folder.best_dir / "removal-e0-r1.pt").write_bytes(content)
    assert folder.load_best("removal-e0-r1") is None
