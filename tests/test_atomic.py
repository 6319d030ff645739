"""The one atomic-write rule (`pipeline.atomic`): complete or absent under the final name, synced,
and used by every writer of a file that a later run reads."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import pytest

from pipeline import atomic

ROOT = Path(__file__).resolve().parent.parent


def test_write_replaces_whole_and_leaves_nothing_behind(tmp_path):
    path = tmp_path / "sub" / "a.json"
    atomic.write_json(path, {"x": 1})
    atomic.write_json(path, {"x": 2})
    assert path.read_text() == '{"x": 2}\n'
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.json"]


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "model.bin"
    atomic.write_bytes(path, b"old")
    with pytest.raises(OSError, match="No space left"), atomic.atomic_open(path, "wb") as fh:
        fh.write(b"new, but half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]


def test_every_file_and_the_directory_are_synced(tmp_path, monkeypatch):
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    atomic.write_text(tmp_path / ".done", "abc\n")
    assert len(synced) == 2  # the file, then its directory
    synced.clear()
    with atomic.atomic_dir(tmp_path / "ckpt") as tmp:
        (tmp / "a").write_text("1")
        (tmp / "b").write_text("2")
    assert len(synced) == 4  # two files, the new directory, its parent


def test_a_directory_is_replaced_only_once_complete(tmp_path):
    target = tmp_path / "export"
    with atomic.atomic_dir(target) as tmp:
        (tmp / "weights").write_text("v1")
    with pytest.raises(RuntimeError), atomic.atomic_dir(target) as tmp:
        (tmp / "weights").write_text("v2 half")
        raise RuntimeError("killed")
    assert (target / "weights").read_text() == "v1"
    with atomic.atomic_dir(target) as tmp:
        (tmp / "weights").write_text("v2")
    assert (target / "weights").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_no_writer_renames_on_its_own():
    """Every temp-then-rename in the project goes through pipeline/atomic.py (one durability rule)."""
    pattern = re.compile(r"os\.replace\(|\.rename\(|\.replace\((tmp|self\.tmp)|os\.fsync\(")
    offenders = []
    for folder in ("pipeline", "stages", "moe_train", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == ROOT / "pipeline" / "atomic.py":
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []
