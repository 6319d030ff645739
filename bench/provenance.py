"""What a benchmark result was measured on: the commit (shared by every script under bench/)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def git_commit() -> str | None:
    """HEAD, with `+dirty` when tracked files outside bench/results have uncommitted changes; None
    outside a git checkout (a copied tree on a GPU machine)."""
    try:
        head = _git("rev-parse", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results")
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def write_result(result: dict, script: str, argv: list[str] | None, out: Path) -> None:
    """Add the command, commit and machine to a benchmark's result and write it as JSON to `out`."""
    result |= {
        "command": " ".join([f"bench/{script}", *(argv if argv is not None else sys.argv[1:])]),
        "commit": git_commit(),
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
