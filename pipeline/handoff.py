"""Verified hand-offs: a stage records what it wrote, and the stages that read it check the files
against that record before reading a byte.

`OUT/<stage>/outputs.json` lists every Parquet file under `OUT/<stage>/output/` with its rows, size
and xxh3-128 digest; it is written (atomically) just before the stage's `.done` marker. A file that
is missing, extra, truncated or altered since stops the reading stage with a message naming the
file, the stage that wrote it and how to redo that stage, instead of a reader error deep in a task.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import xxhash

from pipeline import atomic

OUTPUTS_RECORD = "outputs.json"


class HandoffError(RuntimeError):
    """A file handed from one stage to another does not match what its writer recorded (the base of
    the manifest's and the checkpoints' errors too: the CLI reports each as one line, no traceback)."""


def digest(path: Path) -> str:
    hasher = xxhash.xxh3_128()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def _output_files(stage_dir: Path) -> dict[str, Path]:
    from pipeline.record_io import list_parquet

    output = stage_dir / "output"
    return {str(p.relative_to(output)): p for p in list_parquet(output)}


def record_outputs(stage_dir: Path) -> dict:
    """Write `outputs.json` for the stage's output files; returns the record."""
    record = {
        name: {
            "rows": pq.ParquetFile(path).metadata.num_rows,
            "bytes": path.stat().st_size,
            "xxh3_128": digest(path),
        }
        for name, path in sorted(_output_files(stage_dir).items())
    }
    atomic.write_json(stage_dir / OUTPUTS_RECORD, record, indent=1, sort_keys=True)
    return record


def redo_hint(stage: str) -> str:
    return f"redo that stage with `python -m pipeline run {stage} --force` (same --config and --out)"


def verify_outputs(out: Path, stage: str) -> None:
    """Raise `HandoffError` unless `OUT/<stage>/output/` holds exactly the files `outputs.json` lists,
    each with its recorded size and digest. A stage completed by a version that kept no record (or
    stood in by a test fixture) has nothing to check against."""
    stage_dir = Path(out) / stage
    record_path = stage_dir / OUTPUTS_RECORD
    if not record_path.exists():
        return
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError) as exc:
        raise HandoffError(
            f"{record_path}: the record of what stage '{stage}' wrote is unreadable ({exc}); {redo_hint(stage)}"
        ) from None
    actual = _output_files(stage_dir)
    for name in sorted(set(record) | set(actual)):
        path = stage_dir / "output" / name
        if name not in actual:
            problem = "is missing"
        elif name not in record:
            problem = "was not written by that stage (it is not in its outputs.json)"
        elif (size := actual[name].stat().st_size) != record[name]["bytes"]:
            problem = f"has {size} bytes, {record[name]['bytes']} were written (truncated or replaced)"
        elif digest(actual[name]) != record[name]["xxh3_128"]:
            problem = "has changed since it was written (checksum differs)"
        else:
            continue
        raise HandoffError(f"{path} {problem}; written by stage '{stage}': {redo_hint(stage)}")
