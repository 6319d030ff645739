"""Every shell, Python and SQL snippet of the README and of the demo's dataset card runs, against the
demo output that the README's own first command (`make setup && make all`) makes.

A snippet is run unless the line before its fence says `<!-- readme-test: skip (why) -->` (a GPU, an
LLM endpoint, the test suite itself); the one marked `<!-- readme-test: demo ... -->` makes the output.
YAML and plain-text blocks are config excerpts and layouts, not commands.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"(?:<!-- readme-test: (\w+)[^\n]*-->\n)?```(\w*)\n(.*?)```", re.S)
RUNNABLE = {"bash", "python", "sql"}

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Snippet:
    where: str
    language: str
    code: str
    mark: str | None

    def __str__(self) -> str:
        return f"{self.where}: {self.language} block starting {self.code.splitlines()[0]!r}"


def snippets(path: Path, label: str) -> list[Snippet]:
    text = path.read_text()
    found = []
    for match in FENCE.finditer(text):
        mark, language, code = match.groups()
        if language in RUNNABLE:
            line = text[: match.start(2)].count("\n") + 1
            found.append(Snippet(f"{label}:{line}", language, code, mark))
    return found


README = snippets(ROOT / "README.md", "README.md")


def test_every_readme_command_block_is_run_or_says_why_not():
    assert [s for s in README if s.mark == "demo"], "the README's first command makes the demo output"
    for snippet in README:
        assert snippet.mark in (None, "demo", "skip"), snippet


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A copy of the checkout (links to its files, the environment included) in which the README's
    `make setup && make all` block has run; returns its directory."""
    if not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.fail("run `make setup` first: the README's commands use .venv")
    project = tmp_path_factory.mktemp("readme") / "project"
    project.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in {"out", ".git", ".pytest_cache", ".ruff_cache"}:
            (project / entry.name).symlink_to(entry)
    (demo,) = [s for s in README if s.mark == "demo"]
    result = run_bash(demo.code, project, timeout=3600)
    assert result.returncode == 0, f"{demo}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert "Where to look:" in result.stdout
    for line in result.stdout.split("Where to look:")[1].strip().splitlines():
        shown = Path(line.split()[1])
        assert (project / shown).exists(), f"`make all` points to {shown}, which it did not write"
    return project


def run_bash(code: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    # as a user's shell runs them: no variables of an enclosing `make` (CI runs the tests under
    # `make test`, whose MAKELEVEL makes the README's own make print "Leaving directory" lines)
    enclosing = {"VIRTUAL_ENV", "OUT", "CONFIG", "MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES"}
    env = {k: v for k, v in os.environ.items() if k not in enclosing}
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_snippet(snippet: Snippet, cwd: Path) -> None:
    if snippet.language == "bash":
        result = run_bash(snippet.code, cwd)
    elif snippet.language == "python":
        result = subprocess.run(
            [sys.executable, "-c", snippet.code], cwd=cwd, capture_output=True, text=True, timeout=600
        )
    else:  # sql: every DuckDB statement, as DuckDB's parser splits them
        program = (
            "import duckdb, sys\ncon = duckdb.connect()\n"
            "statements = con.extract_statements(sys.argv[1])\nassert statements\n"
            "for statement in statements:\n    con.execute(statement).fetchall()\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", program, snippet.code],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert result.returncode == 0, f"{snippet} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"


@pytest.mark.parametrize("snippet", [s for s in README if s.mark is None], ids=str)
def test_readme_snippet_runs_against_the_demo_output(project, snippet):
    run_snippet(snippet, project)


def test_dataset_card_snippets_run_against_the_demo_shards(project):
    card = project / "out" / "shards" / "README.md"
    found = snippets(card, "out/shards/README.md")
    assert {s.language for s in found} == {"python", "sql"}
    for snippet in found:
        code = snippet.code.replace("path/to/shards", "out/shards")
        run_snippet(Snippet(snippet.where, snippet.language, code, snippet.mark), project)
