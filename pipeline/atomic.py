"""Atomic writes: the one durability rule for every file a later run reads.

Write under a hidden temporary name in the same directory, fsync the file, rename it over the final
name, fsync the directory. A crash, a kill or a full disk therefore leaves either the previous file
or the complete new one under the final name, never a partial one; what is left over is a hidden
`.<name>.tmp` that readers skip (they list non-hidden files only) and the next write replaces. One
writer per file is guaranteed by the run lock on OUT (`pipeline.run_lock`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def temporary_name(path: Path, suffix: str = "") -> Path:
    """A hidden sibling of `path`; `suffix` keeps an extension that a writing library insists on."""
    return path.with_name(f".{path.name}.tmp{suffix}")


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new entry in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def commit(tmp: Path, path: Path) -> None:
    """Move a fully written temporary file into place: fsync it, rename it, fsync the directory."""
    _fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """A temporary path to write `path` through (for libraries that take a file name): committed when
    the block ends normally, removed when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path, suffix)
    try:
        yield tmp
        commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """`open()` for writing, with the atomic rule applied when the block ends."""
    with atomic_path(path) as tmp, open(tmp, mode, encoding=None if "b" in mode else encoding) as fh:
        yield fh


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def write_text(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    with atomic_open(path, "w", encoding=encoding) as fh:
        fh.write(text)


def write_json(path: str | Path, data: Any, **dumps_kwargs: Any) -> None:
    """`data` as JSON plus a final newline (`dumps_kwargs` go to `json.dumps`)."""
    write_text(path, json.dumps(data, **dumps_kwargs) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """A temporary directory that replaces `path` as a whole once every file in it is synced (a
    checkpoint, an exported model). A previous `path` is removed only after the new one is complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted attempt
    tmp.mkdir()
    try:
        yield tmp
        for root, _dirs, files in os.walk(tmp):
            for name in files:
                _fsync_file(Path(root) / name)
            fsync_dir(Path(root))
        if path.exists():
            old = temporary_name(path, ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
