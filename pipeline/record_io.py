"""datatrove glue: records flow between stages as datatrove `Document`s.

A record's `id` and `text` are the Document's; every other schema column lives in `metadata`.
Stages are chains of small `PipelineStep`s: a `RecordReader` per upstream output, filters and
annotators, and a `RecordWriter`. Filters subclass `RecordFilter` and set records aside into the
stage's quarantine with a reason instead of dropping them.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.readers.base import BaseDiskReader

from pipeline import atomic, console, guards
from pipeline.schema import COLUMN_NAMES, QUARANTINE_SCHEMA, RECORD_SCHEMA, rows_to_table

console.install()

_METADATA_COLUMNS = tuple(c for c in COLUMN_NAMES if c not in ("id", "text"))


def record_to_document(row: dict) -> Document:
    return Document(text=row["text"], id=row["id"], metadata={k: row.get(k) for k in _METADATA_COLUMNS})


def batch_to_documents(batch: pa.RecordBatch) -> Iterator[Document]:
    """The rows of a record batch as Documents (column-wise: about twice as fast as row dicts);
    columns missing from the batch are None in the metadata."""
    columns = batch.to_pydict()
    n = batch.num_rows
    values = [columns.get(name) or [None] * n for name in _METADATA_COLUMNS]
    for record_id, text, metadata in zip(
        columns["id"], columns["text"], zip(*values, strict=True), strict=True
    ):
        yield Document(text=text, id=record_id, metadata=dict(zip(_METADATA_COLUMNS, metadata, strict=True)))


def document_to_record(doc: Document) -> dict:
    """The record of a Document: its id, text and metadata. A metadata key outside the schema is
    kept, so that writing the record fails naming it instead of dropping the value."""
    return {"id": doc.id, "text": doc.text, **doc.metadata}


class AtomicParquetFile:
    """A Parquet file written row group by row group that appears under its final name only once
    complete (the rule of `pipeline.atomic`)."""

    def __init__(
        self, path: str | Path, schema: pa.Schema, row_group_size: int = 10_000, compression: str = "zstd"
    ):
        self.path = Path(path)
        self.tmp_path = atomic.temporary_name(self.path)
        self.schema = schema
        self.row_group_size = row_group_size
        self.compression = compression
        self._buffer: list[dict] = []
        self._writer: pq.ParquetWriter | None = None
        self.rows = 0

    def write(self, row: dict) -> None:
        self._buffer.append(row)
        if len(self._buffer) >= self.row_group_size:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        table = rows_to_table(self._buffer, self.schema)
        try:
            if self._writer is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._writer = pq.ParquetWriter(self.tmp_path, self.schema, compression=self.compression)
            self._writer.write_table(table, row_group_size=self.row_group_size)
        except OSError as exc:
            raise write_error(self.path, exc) from exc
        self.rows += len(self._buffer)
        self._buffer.clear()

    def close(self) -> int:
        """Finish the file and move it into place; returns the number of rows (0: no file written)."""
        self._flush()
        if self._writer is None:
            return 0
        try:
            self._writer.close()
            atomic.commit(self.tmp_path, self.path)
        except OSError as exc:
            raise write_error(self.path, exc) from exc
        return self.rows

    def abort(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(OSError):  # a full disk fails the close too; the file goes anyway
                self._writer.close()
        self.tmp_path.unlink(missing_ok=True)

    def __enter__(self) -> AtomicParquetFile:
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_error(path: Path, exc: OSError) -> OSError:
    """The same error, naming the file (pyarrow's messages do not): `[Errno 28] cannot write ...`."""
    return OSError(exc.errno, f"cannot write {path}: {exc.strerror or exc}")


def read_table(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    """One Parquet file as a table. `pq.read_table` would import pyarrow.dataset first (a third of
    a second in every stage process); a single file needs none of it."""
    with pq.ParquetFile(path) as parquet:
        return parquet.read(columns=columns)


def read_records(
    path: str | Path, columns: list[str] | None = None, batch_size: int = 4096
) -> Iterator[dict]:
    """Stream the rows of one record Parquet file as dicts."""
    parquet = pq.ParquetFile(path)
    for batch in parquet.iter_batches(batch_size=batch_size, columns=columns):
        yield from batch.to_pylist()


def list_parquet(directory: str | Path) -> list[Path]:
    """The complete Parquet files of a directory tree, sorted (hidden `.tmp` files excluded)."""
    directory = Path(directory)
    if not directory.exists():
        return []
    return sorted(p for p in directory.rglob("*.parquet") if not p.name.startswith("."))


class RecordReader(BaseDiskReader):
    """Reads a stage's output directory of record Parquet files; files are split across tasks."""

    name = "📖 records"
    columns: list[str] | None = None  # all of them
    counts_input = True  # `in/<language>`: the stage's main pass counts what it reads

    def __init__(self, data_folder: str | Path, doc_progress: bool | None = None, **kwargs):
        from pipeline.console import progress_bars_on

        super().__init__(
            str(data_folder),
            glob_pattern="**/[!.]*.parquet",
            doc_progress=progress_bars_on() if doc_progress is None else doc_progress,
            add_file_path=False,
            **kwargs,
        )

    def read_files_shard(self, shard: list[str]) -> DocumentsPipeline:
        if shard:  # a task without a file of this folder shows no empty progress bar
            yield from super().read_files_shard(shard)

    def read_file(self, filepath: str) -> DocumentsPipeline:
        with self.data_folder.open(filepath, "rb") as fh:
            for batch in pq.ParquetFile(fh).iter_batches(batch_size=4096, columns=self.columns):
                if self.counts_input:
                    for language, n in Counter(batch.column("language").to_pylist()).items():
                        self.stat_update(f"in/{language}", value=n)
                yield from batch_to_documents(batch)


class ProjectedRecordReader(RecordReader):
    """Reads only some columns and counts nothing: for passes that are not the stage's main one."""

    name = "📖 records (columns)"
    counts_input = False

    def __init__(self, data_folder, columns: list[str], **kwargs):
        super().__init__(data_folder, **kwargs)
        self.columns = columns


class RecordWriter(PipelineStep):
    """Writes the stage's records, one Parquet file per task, atomically; refuses rows off-schema."""

    name = "💾 records"
    type = "💽 - WRITER"

    def __init__(self, output_dir: str | Path, row_group_size: int = 10_000):
        super().__init__()
        self.output_dir = Path(output_dir)
        self.row_group_size = row_group_size

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        out = AtomicParquetFile(self.output_dir / f"{rank:05d}.parquet", RECORD_SCHEMA, self.row_group_size)
        written: Counter[str] = Counter()  # counted here, added to the stats once (per-record updates cost)
        try:
            for doc in data:
                out.write(document_to_record(doc))
                written[doc.metadata["language"]] += 1
                yield doc
        except BaseException:
            out.abort()
            raise
        with self.track_time(unit="file"):
            out.close()
        count_per_language(self, "out", written)


def count_per_language(step: PipelineStep, name: str, counts: Counter[str]) -> None:
    """Add `name` (the total) and `name/<language>` to a step's stats."""
    step.stat_update(name, value=sum(counts.values()))
    for language, n in sorted(counts.items()):
        step.stat_update(f"{name}/{language}", value=n)


@dataclass(frozen=True)
class Rejection:
    reason: str
    detail: str | None = None


class QuarantineSink:
    """Collects set-aside records of one step in one task into `<dir>/<step>-<rank>.parquet`."""

    def __init__(self, directory: Path, step: str, stage: str, rank: int):
        self.file = AtomicParquetFile(directory / f"{step}-{rank:05d}.parquet", QUARANTINE_SCHEMA, 2_000)
        self.stage = stage

    def add(self, doc: Document, rejection: Rejection) -> None:
        row = document_to_record(doc)
        row.update(
            quarantine_stage=self.stage,
            quarantine_reason=rejection.reason,
            quarantine_detail=rejection.detail,
        )
        self.file.write(row)

    def close(self) -> None:
        self.file.close()


class RecordFilter(PipelineStep):
    """Base for steps that keep or set aside records. Subclasses implement `check` (or `check_batch`).

    A rejected record goes to the stage's quarantine with its reason; counts land in the stage
    summary as `quarantined/<reason>` and `quarantined/<reason>/<language>`.
    """

    type = "🔻 - FILTER"
    batch_size = 1

    def __init__(self, quarantine_dir: str | Path, stage: str):
        super().__init__()
        self.quarantine_dir = Path(quarantine_dir)
        self.stage = stage

    def check(self, doc: Document) -> Rejection | None:
        raise NotImplementedError

    def check_batch(self, docs: list[Document]) -> list[Rejection | None]:
        return [self.check(doc) for doc in docs]

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        step = type(self).__name__.lower()
        sink = QuarantineSink(self.quarantine_dir, step, self.stage, rank)
        for batch in batched(data, self.batch_size):
            with self.track_time(unit="batch"):
                verdicts = self.check_batch(batch)
            for doc, rejection in zip(batch, verdicts, strict=True):
                language, source = doc.metadata["language"], doc.metadata.get("source") or "?"
                self.stat_update(guards.seen_key(language, source))
                if rejection is None:
                    yield doc
                    continue
                sink.add(doc, rejection)
                self.stat_update(
                    "quarantined",
                    f"quarantined/{rejection.reason}",
                    f"quarantined/{rejection.reason}/{language}",
                    guards.removed_key(language, rejection.reason, source),
                )
        sink.close()


def batched(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of `size` items (the last may be shorter)."""
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
