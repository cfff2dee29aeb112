"""Running the command line in-process, as the tests of several modules do."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from fakedata import write_learnable_mnist
from n2n.cli import main


def run_error(argv: list[str], capsys) -> str:
    """Run the CLI expecting a user error: exit code 2 and one error line (progress logs aside), no traceback."""
    capsys.readouterr()
    code = main(argv)
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("INFO ")]
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("n2n: error: "), lines
    return lines[0]


def make_compress_workspace(root: Path, search: dict[str, Any]) -> dict[str, Path]:
    """Fake MNIST, a conv4 teacher trained on it, a config file of `search` options, and one finished run."""
    paths = {"mnist": root / "mnist", "teacher": root / "teacher.pt", "config": root / "search.yaml",
             "run": root / "run"}
    write_learnable_mnist(paths["mnist"])
    assert main(["--quiet", "train-teacher", "--model", "conv4", "--dataset", "mnist", "--data-dir",
                 str(paths["mnist"]), "--epochs", "3", "--batch-size", "32", "--out", str(paths["teacher"])]) == 0
    paths["config"].write_text(yaml.safe_dump(search))
    assert main(compress_args(paths, paths["run"])) == 0
    return paths


def compress_args(paths: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["--quiet", "compress", "--teacher", str(paths["teacher"]), "--data-dir", str(paths["mnist"]),
            "--config", str(paths["config"]), "--out", str(out), *extra]
