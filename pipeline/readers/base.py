"""What every source reader shares: the record builder, the reject sink, the stats, and (for the
file-based readers) the split of a source's files across tasks and the handling of broken streams."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.readers.base import BaseDiskReader

from pipeline.config import CollectSection, SourceSection
from pipeline.readers.files import DecompressionLimitError, stream_errors
from pipeline.readers.records import RecordBuilder
from pipeline.readers.rejects import Reject, RejectSink
from pipeline.registry import Registry


class RejectingReader:
    """What every source reader shares: the record builder, the reject sink and the stats."""

    source: SourceSection
    collect: CollectSection
    rejected_dir: Path
    _sink: RejectSink | None = None

    def _open_sink(self, rank: int) -> None:
        self._sink = RejectSink(self.rejected_dir, self.source.name, rank, self.collect.reject_snippet_chars)

    def _emit(self, result: Document | Reject, path: str, line: int | None, raw=None) -> Document | None:
        """Count a record, or send a reject (stamped with file and line) to the sink."""
        if isinstance(result, Document):
            self.stat_update(f"in/{result.metadata['language']}", f"source/{self.source.name}")
            return result
        result = replace(
            result,
            line=result.line if result.line is not None else line,
            raw=result.raw if result.raw is not None else raw,
        )
        self._sink.add(path, result)
        keys = ["quarantined", f"quarantined/{result.reason}"]
        if result.language:
            keys.append(f"quarantined/{result.reason}/{result.language}")
        self.stat_update(*keys)
        return None


class SourceReader(RejectingReader, BaseDiskReader):
    """Base of the file-based readers. The source's files (validated up front) are split across
    tasks the way datatrove splits a folder: task r reads files r, r + tasks, r + 2*tasks, ..."""

    def __init__(
        self,
        source: SourceSection,
        files: list[Path],
        root: Path,
        collect: CollectSection,
        registry: Registry,
        rejected_dir: Path,
    ):
        super().__init__(str(root), doc_progress=True, add_file_path=False)
        self.source = source
        self.files = [str(f) for f in files]
        self.root = root
        self.collect = collect
        self.builder = RecordBuilder(source, collect, registry)
        self.rejected_dir = Path(rejected_dir)
        self._line: int | None = None

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        self._open_sink(rank)
        shard = self.files[rank::world_size]
        try:
            for doc in self.read_files_shard(shard) if shard else ():  # no empty progress bar
                self.update_doc_stats(doc)
                yield doc
        except BaseException:
            self._sink.abort()
            raise
        self._sink.close()

    def file_key(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.as_posix()

    def read_file(self, filepath: str) -> DocumentsPipeline:
        path = Path(filepath)
        self._line = None
        try:
            for result, line, raw in self.iter_results(path, self.file_key(path)):
                doc = self._emit(result, filepath, line, raw)
                if doc is not None:
                    yield doc
        except DecompressionLimitError as exc:
            after = f" after line {self._line}" if self._line else ""
            self._emit(
                Reject("decompression_limit", f"stopped reading{after}: the file {exc}"),
                filepath,
                (self._line or 0) + 1,
            )
        except EOFError as exc:
            after = f" after line {self._line}" if self._line else ""
            self._emit(
                Reject("truncated_file", f"compressed stream ends early{after}: {exc}; the rest is lost"),
                filepath,
                (self._line or 0) + 1,
            )
        except stream_errors() as exc:
            self._emit(
                Reject("unreadable_file", f"{type(exc).__name__}: {exc}"), filepath, (self._line or 0) + 1
            )

    def iter_results(
        self, path: Path, file_key: str
    ) -> Iterator[tuple[Document | Reject, int | None, object]]:
        """(record or reject, line/item number, raw input) for each item of one file."""
        raise NotImplementedError


def row_snippet(row: dict) -> str:
    return json.dumps(row, ensure_ascii=False, default=str)[:2000]
