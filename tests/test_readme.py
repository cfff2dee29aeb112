"""The README is the product page: short, says what n2n does first, sets up with two commands, links that resolve."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "docs" / "RESULTS.md"
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def readme() -> str:
    return README.read_text(encoding="utf-8")


def relative_links(page: Path) -> list[str]:
    """The link targets of a markdown page that point into the repository (no web addresses, no bare anchors)."""
    targets = LINK.findall(page.read_text(encoding="utf-8"))
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_the_readme_is_at_most_200_lines():
    assert len(readme().splitlines()) <= 200


def test_its_first_line_is_a_title_saying_what_n2n_does():
    first = readme().splitlines()[0]
    assert first.startswith("# n2n")
    assert "compress" in first.lower() and ("smaller" in first.lower() or "student" in first.lower())


def test_the_first_thing_after_the_intro_is_the_two_setup_commands():
    text = readme()
    first_block = FENCE.search(text)
    assert first_block is not None
    assert first_block.start() < text.index("\n## "), "the set-up commands come before the first section"
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines() if line.strip()]
    assert commands == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    for script in ("scripts/demo.sh", "scripts/test.sh"):
        assert (ROOT / script).is_file()


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^\s*(bash\s+|exec\s+)*(\./)?scripts/test\.sh\b", ci, re.MULTILINE)


def test_every_relative_link_in_the_readme_points_to_an_existing_file():
    links = relative_links(README)
    assert links, "the README links to its documents"
    for target in links:
        path = (README.parent / target.split("#")[0]).resolve()
        assert path.exists(), f"README.md links to {target}, which does not exist"


def test_the_readme_links_results_benchmarks_and_changelog():
    links = {target.split("#")[0].rstrip("/") for target in relative_links(README)}
    assert {"docs/RESULTS.md", "benchmarks/README.md", "CHANGELOG.md"} <= links


def test_the_linked_documents_link_to_existing_files_too():
    for page in (RESULTS, ROOT / "benchmarks" / "README.md", ROOT / "CHANGELOG.md"):
        for target in relative_links(page):
            path = (page.parent / target.split("#")[0]).resolve()
            assert path.exists(), f"{page.relative_to(ROOT)} links to {target}, which does not exist"


def test_every_figure_of_the_results_table_is_in_docs_results():
    """The README reports only what RESULTS records, with its command."""
    text = readme()
    section = text[text.index("## Results at a glance"):]
    section = section[:section.index("\n## ", 1)]
    rows = [line for line in section.splitlines() if line.startswith("|") and not line.startswith("|---")][1:]
    assert len(rows) >= 3, "teacher, n2n's student and the best baseline"
    results = RESULTS.read_text(encoding="utf-8")
    for row in rows:
        for figure in re.findall(r"\d[\d,]*(?:\.\d+)?(?= ?(?:%|x\b|min\b)|\s*\|)", row):
            assert figure in results, f"{figure} (README results table) is not in docs/RESULTS.md"
