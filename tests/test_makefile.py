"""The Makefile DAG: no-op re-runs, re-runs only for the config a stage depends on, clear failures, -j safety.

Each test runs `make` in a subprocess against a small config over two sample files, with its own OUT.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from pipeline.record_io import list_parquet

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed"),
]
SAMPLE = ROOT / "data" / "sample"


def make(*args: str, out: Path, config: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-C",
            str(ROOT),
            *args,
            f"OUT={out}",
            f"CONFIG={config}",
            f"PY={sys.executable}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def project(tmp_path):
    """A config over copies of two sample files (so a test may edit them), and an OUT directory."""
    for name in ("exams.jsonl", "medical_books.jsonl"):
        shutil.copy(SAMPLE / name, tmp_path / name)
    config = {
        "executor": {"tasks": 1, "workers": 1},
        "sources": [
            {
                "name": "books",
                "path": str(tmp_path / "medical_books.jsonl"),
                "format": "jsonl",
                "source_type": "book",
                "license": "CC-BY-4.0",
                "language_field": "lang",
                "id_field": "id",
            },
            {
                "name": "exams",
                "path": str(tmp_path / "exams.jsonl"),
                "format": "jsonl",
                "source_type": "exam",
                "license": "CC-BY-4.0",
                "language_field": "lang",
                "question_field": "question",
                "options_field": "options",
                "answer_field": "answer",
            },
        ],
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, config, tmp_path / "out"


def edit(path: Path, config: dict, section: str, key: str, value) -> None:
    config.setdefault(section, {})[key] = value
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def state(out: Path) -> tuple[int, dict[str, bytes]]:
    """The collect marker's mtime and the bytes of every output file."""
    files = {p.name: p.read_bytes() for p in list_parquet(out / "collect" / "output")}
    return (out / "collect" / ".done").stat().st_mtime_ns, files


def test_help_is_the_default_and_lists_every_target():
    makefile = (ROOT / "Makefile").read_text()
    stages = re.search(r"^STAGES\s*:=\s*(.+)$", makefile, re.M).group(1).split()
    phony = re.search(r"^\.PHONY:\s*(.+)$", makefile, re.M).group(1).split()
    targets = [t for t in [*phony, *stages] if not t.startswith(("$", "FORCE"))]
    default = subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT)], capture_output=True, text=True
    )
    explicit = subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "help"], capture_output=True, text=True
    )
    assert default.returncode == 0 and default.stdout == explicit.stdout
    listed = {line.split()[0] for line in explicit.stdout.splitlines() if line.startswith("  ")}
    assert set(targets) <= listed, f"missing from `make help`: {sorted(set(targets) - listed)}"


def test_collect_reruns_only_when_what_it_depends_on_changes(project):
    config, data, out = project
    first = make("collect", out=out, config=config)
    assert first.returncode == 0, first.stderr
    assert "[collect] in" in first.stdout
    before = state(out)

    second = make("collect", out=out, config=config)  # nothing changed: no work
    assert second.returncode == 0, second.stderr
    assert "pipeline run collect" not in second.stdout
    assert state(out) == before

    edit(config, data, "dedup", "ngram", 7)  # another stage's section: collect stays done
    unrelated = make("collect", out=out, config=config)
    assert unrelated.returncode == 0 and "pipeline run collect" not in unrelated.stdout
    assert state(out) == before

    edit(config, data, "collect", "max_doc_chars", 500)  # collect's own option: it runs again
    rerun = make("collect", out=out, config=config)
    assert rerun.returncode == 0, rerun.stderr
    assert "pipeline run collect" in rerun.stdout and "too_long" in rerun.stdout
    assert state(out)[0] != before[0]

    with open(data["sources"][1]["path"], "a", encoding="utf-8") as fh:  # a source file changed
        fh.write(
            '{"lang": "en", "question": "Which organ pumps blood?", "options": ["Heart", "Lung"], "answer": "A"}\n'
        )
    after_edit = state(out)
    changed = make("collect", out=out, config=config)
    assert changed.returncode == 0 and "pipeline run collect" in changed.stdout
    assert state(out) != after_edit


def test_parallel_make_is_safe(project):
    config, _, out = project
    result = make("-j4", "collect", "translate", out=out, config=config)
    assert (out / "collect" / ".done").exists(), result.stderr
    assert len(list_parquet(out / "collect" / "output")) == 1
    assert result.stdout.count("pipeline run collect") == 1
    if (ROOT / "stages" / "translate.py").exists():
        assert result.returncode == 0, result.stderr
    repeat = make("-j4", "collect", out=out, config=config)
    assert repeat.returncode == 0 and "pipeline run collect" not in repeat.stdout
