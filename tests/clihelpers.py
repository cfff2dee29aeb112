"""Running the command line in-process, as the tests of several modules do."""
from __future__ import annotations

from n2n.cli import main


def run_error(argv: list[str], capsys) -> str:
    """Run the CLI expecting a user error: exit code 2 and one error line (progress logs aside), no traceback."""
    capsys.readouterr()
    code = main(argv)
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("INFO ")]
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("n2n: error: "), lines
    return lines[0]
