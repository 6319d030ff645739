"""One run per OUT: an `flock` on `OUT/.lock`, held while a stage runs or fingerprints are written.

A second run on the same OUT exits at once naming the holder (PID and command), or waits for it
with `--wait`. The stages that one `make` invocation starts (possibly in parallel under `make -j`)
belong to one run: the Makefile gives them the same `MEDBABEL_RUN` token, and they wait for each
other instead of failing. The lock is released by the kernel when its process ends, even on
`kill -9`, so a crashed run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = ".lock"
RUN_TOKEN_ENV = "MEDBABEL_RUN"


class OutputLockedError(RuntimeError):
    """Another run holds OUT."""


def _holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def describe(holder: dict) -> str:
    if not holder:
        return "another process"
    command = " ".join(str(holder.get("command", "?")).split())  # one line
    return f"PID {holder.get('pid')} ({command[:300]})"


@contextlib.contextmanager
def run_lock(out: Path, wait: bool = False, poll_s: float = 0.5) -> Iterator[None]:
    """Hold the lock on `out` for the block; see the module docstring for who waits and who fails."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        token = os.environ.get(RUN_TOKEN_ENV)
        announced = False
        attempts = 0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                attempts += 1
                holder = _holder(path)
                sibling = token is not None and holder.get("run") == token
                if not holder and attempts < 20:  # the holder is still writing its name
                    time.sleep(0.05)
                    continue
                if not (wait or sibling):
                    raise OutputLockedError(
                        f"{out} is in use by {describe(holder)}; wait for it to finish, "
                        f"or pass --wait to queue behind it"
                    ) from None
                if not announced and not sibling:
                    print(f"waiting for {describe(holder)} to release {path} ...", file=sys.stderr)
                announced = True
                time.sleep(poll_s)
        me = {"pid": os.getpid(), "command": shlex.join(sys.orig_argv), "run": token}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
