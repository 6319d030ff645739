"""Source readers for the collection stage: one datatrove reader per input format.

A reader turns one configured source into records (datatrove `Document`s carrying the record
schema) and streams: it holds one line, row batch, translation unit or JSON item at a time.
Input that cannot become a record goes to `OUT/collect/rejected/<source>-<rank>.parquet`
(REJECT_SCHEMA: file, line, source, reason, detail, raw snippet) and is counted as
`quarantined/<reason>`; a reader never stops on bad input.

Record ids are deterministic: `stable_id(source, value of id_field)` when the source has an id
field, else `stable_id(source, file relative to the source root, line or item number)`, so a
re-run produces identical output.
"""

from __future__ import annotations

import csv
import glob
import gzip
import io
import json
import re
import unicodedata
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO
from xml.parsers import expat

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.readers.base import BaseDiskReader, BaseReader
from tqdm import tqdm

from pipeline.benchmarks import OptionError, parse_answer, parse_options
from pipeline.config import CollectSection, Config, SourceSection
from pipeline.registry import Registry, UnknownLanguageError
from pipeline.schema import REJECT_SCHEMA, empty_record, stable_id
from pipeline.steps import AtomicParquetFile, record_to_document
from pipeline.text import (
    ROLE_ALIASES,
    exam_messages,
    normalize_text,
    render_messages,
)

# Reason codes of rejected input (the `reason` column of rejected/ and `quarantined/<reason>` stats).
REJECT_REASONS = {
    "malformed_json": "a line or item that is not valid JSON, or not a JSON object",
    "invalid_utf8": "bytes that are not valid UTF-8",
    "missing_field": "the text (or question/options/answer/messages/language) field is absent",
    "empty_text": "the text is empty or only whitespace",
    "too_short": "the text is shorter than collect.min_doc_chars",
    "too_long": "the text is longer than collect.max_doc_chars",
    "unknown_language": "a language code the registry cannot map",
    "bad_field": "a field of the wrong type or shape (options, answer, roles, apollo source key)",
    "truncated_file": "a compressed file that ends mid-stream; records before the break are kept",
    "unreadable_file": "a file that cannot be decoded as its format (corrupt, not Parquet, ...)",
    "ragged_row": "a CSV/TSV row with more or fewer fields than the header",
    "malformed_csv": "a CSV/TSV row the csv parser refuses",
    "malformed_xml": "a TMX file whose XML breaks; units before the break are kept",
}

_READ_CHUNK = 1 << 16


# ---- rejects --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Reject:
    """Input that could not become a record, with where and why."""

    reason: str
    detail: str
    line: int | None = None
    raw: str | bytes | None = None
    language: str | None = None


class RejectSink:
    """Rejected input of one source in one task: `<dir>/<source>-<rank>.parquet`, written atomically."""

    def __init__(self, directory: Path, source: str, rank: int, snippet_chars: int):
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", source).lstrip(".") or "source"  # no hidden files
        self.file = AtomicParquetFile(directory / f"{safe}-{rank:05d}.parquet", REJECT_SCHEMA, 2_000)
        self.source = source
        self.snippet_chars = snippet_chars

    def add(self, path: str, reject: Reject) -> None:
        raw = reject.raw
        if isinstance(raw, bytes):
            raw = raw[: self.snippet_chars * 4].decode("utf-8", errors="replace")
        if raw is not None:
            raw = _SURROGATE.sub("\ufffd", raw[: self.snippet_chars]).rstrip("\r\n")
        self.file.write(
            {
                "file": path,
                "line": reject.line,
                "source": self.source,
                "reason": reject.reason,
                "detail": reject.detail,
                "raw": raw[: self.snippet_chars] if raw is not None else None,
            }
        )

    def close(self) -> None:
        self.file.close()

    def abort(self) -> None:
        self.file.abort()


# ---- opening files ---------------------------------------------------------------------------------
class _ZstdStream(io.RawIOBase):
    """Decompresses a .zst file (any number of frames); raises EOFError if it ends inside a frame.

    The `zstandard` stream reader returns a short read on a truncated file instead of failing, so
    truncation would go unnoticed; this reader checks that the last frame is complete.
    """

    def __init__(self, fh: BinaryIO):
        import zstandard

        self._fh = fh
        self._dctx = zstandard.ZstdDecompressor()
        self._dobj = None
        self._pending = bytearray()
        self._in_frame = False
        self._input_done = False

    def readable(self) -> bool:
        return True

    def _feed(self, data: bytes) -> None:
        while data:
            if self._dobj is None:
                self._dobj = self._dctx.decompressobj()
            self._pending += self._dobj.decompress(data)
            self._in_frame = not self._dobj.eof
            data = self._dobj.unused_data if self._dobj.eof else b""
            if self._dobj.eof:
                self._dobj = None

    def readinto(self, buffer) -> int:
        while not self._pending:
            if self._input_done:
                if self._in_frame:
                    raise EOFError("zstd stream ended before the end of its frame")
                return 0
            chunk = self._fh.read(_READ_CHUNK)
            if chunk:
                self._feed(chunk)
            else:
                self._input_done = True
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        del self._pending[:n]
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()


def open_binary(path: Path) -> BinaryIO:
    """A file's decompressed bytes (.gz and .zst by suffix); truncation raises EOFError while reading."""
    fh = open(path, "rb")  # noqa: SIM115 - handed to the wrapper, closed with it
    if path.name.endswith(".gz"):
        return gzip.GzipFile(fileobj=fh, mode="rb")
    if path.name.endswith(".zst"):
        return io.BufferedReader(_ZstdStream(fh), buffer_size=_READ_CHUNK)
    return fh


def _stream_errors() -> tuple[type[BaseException], ...]:
    import zstandard

    return (gzip.BadGzipFile, zlib.error, zstandard.ZstdError)


# ---- source roots and files -----------------------------------------------------------------------
def source_root(cfg: Config, source: SourceSection) -> Path:
    """The directory ids and `file` columns are relative to: the directory, the file's parent, or
    the part of a glob before its first wildcard."""
    raw = Path(source.path).expanduser()
    path = raw if raw.is_absolute() else cfg.base_dir / raw
    if glob.has_magic(str(path)):
        parts = []
        for part in path.parts:
            if glob.has_magic(part):
                break
            parts.append(part)
        return Path(*parts).resolve()
    path = path.resolve()
    return path if path.is_dir() else path.parent


# ---- building records ------------------------------------------------------------------------------
def _get(item: dict, field: str) -> object:
    """item[field], where `a.b` reaches into nested objects (unless `a.b` is itself a key); None when absent."""
    if field in item:
        return item[field]
    value: object = item
    for key in field.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_surrogates(value: object) -> bool:
    """True when a string (or any string inside a list/dict) holds bytes that were not valid UTF-8
    (decoded as lone surrogates) or a lone surrogate escape, neither of which UTF-8 can store."""
    if isinstance(value, str):
        return not value.isascii() and _SURROGATE.search(value) is not None
    if isinstance(value, list):
        return any(_has_surrogates(v) for v in value)
    if isinstance(value, dict):
        return any(_has_surrogates(v) for v in value.values())
    return False


def required_fields(source: SourceSection) -> list[str]:
    """Top-level fields every item of a jsonl/csv/parquet/hf source needs."""
    if source.is_exam:
        names = [source.question_field, source.options_field, source.answer_field]
    else:
        names = [source.messages_field or source.text_field]
    return [n.split(".")[0] for n in [*names, source.language_field] if n]


def optional_fields(source: SourceSection) -> list[str]:
    names = [source.id_field, source.url_field, None if source.is_exam else source.title_field]
    return [n.split(".")[0] for n in names if n]


class RecordBuilder:
    """Turns one input item (a dict of fields) into a record Document, or says why it cannot."""

    def __init__(self, source: SourceSection, collect: CollectSection, registry: Registry):
        self.source = source
        self.collect = collect
        self.registry = registry
        self.fixed_language = registry.normalize_code(source.language) if source.language else None

    def fields(self) -> list[str]:
        """Top-level field names this source reads (Parquet reads only these columns)."""
        return sorted(set(required_fields(self.source)) | set(optional_fields(self.source)))

    def language(self, code: object) -> str | Reject:
        if code is None or (isinstance(code, str) and not code.strip()):
            return Reject("missing_field", f"no language in field '{self.source.language_field}'")
        try:
            return self.registry.normalize_code(str(code))
        except UnknownLanguageError as exc:
            return Reject("unknown_language", str(exc))

    def _string(self, item: dict, field: str, what: str) -> str | Reject:
        value = _get(item, field)
        if value is None:
            return Reject("missing_field", f"no {what} field '{field}'")
        if not isinstance(value, str):
            return Reject("bad_field", f"{what} field '{field}' is {type(value).__name__}, expected a string")
        return normalize_text(value)

    def messages(self, turns: object, alternate: bool = False) -> list[dict] | Reject:
        """Normalised {role, content} turns from {role, content} / {from, value} dicts, or from plain
        strings alternating user/assistant (`alternate`)."""
        if not isinstance(turns, list) or not turns:
            return Reject("bad_field", "messages are not a non-empty list")
        out = []
        for i, turn in enumerate(turns):
            if isinstance(turn, str) and alternate:
                role, content = ("user", "assistant")[i % 2], turn
            elif isinstance(turn, dict):
                role = turn.get("role", turn.get("from"))
                content = turn.get("content", turn.get("value"))
                role = ROLE_ALIASES.get(str(role).strip().lower()) if role is not None else None
                if role is None:
                    return Reject(
                        "bad_field", f"turn {i} has an unknown role {turn.get('role', turn.get('from'))!r}"
                    )
            else:
                return Reject(
                    "bad_field", f"turn {i} is {type(turn).__name__}, expected a {{role, content}} object"
                )
            if not isinstance(content, str):
                return Reject("bad_field", f"turn {i} content is {type(content).__name__}, expected a string")
            out.append({"role": role, "content": normalize_text(content)})
        if not any(m["content"].strip() for m in out):
            return Reject("empty_text", "every turn is empty")
        return out

    def build(self, item: dict, file_key: str, index: int) -> Document | Reject:
        """A record from one item of a jsonl/csv/parquet/hf source."""
        s = self.source
        if self.fixed_language:
            language: str | Reject = self.fixed_language
        else:
            language = self.language(_get(item, s.language_field))
        if isinstance(language, Reject):
            return language
        messages = exam = None
        if s.is_exam:
            question = self._string(item, s.question_field, "question")
            if isinstance(question, Reject):
                return replace(question, language=language)
            raw_options, raw_answer = _get(item, s.options_field), _get(item, s.answer_field)
            if raw_options is None or raw_answer is None:
                missing = s.options_field if raw_options is None else s.answer_field
                return Reject("missing_field", f"no field '{missing}'", language=language)
            try:
                parsed = tuple((label, normalize_text(text)) for label, text in parse_options(raw_options))
                answers = parse_answer(
                    normalize_text(raw_answer) if isinstance(raw_answer, str) else raw_answer, parsed
                )
                if len(answers) != 1:
                    raise OptionError(f"{len(answers)} correct answers; an exam record has one")
            except OptionError as exc:
                return Reject("bad_field", str(exc), language=language)
            options, answer = [text for _, text in parsed], answers[0]
            exam = {"question": question, "options": options, "answer": answer}
            messages = exam_messages(question, options, answer)
            text = render_messages(messages) if question.strip() else ""
        elif s.messages_field:
            turns = _get(item, s.messages_field)
            if turns is None:
                return Reject("missing_field", f"no messages field '{s.messages_field}'", language=language)
            messages = self.messages(turns, alternate=True)
            if isinstance(messages, Reject):
                return replace(messages, language=language)
            text = render_messages(messages)
        else:
            text = self._string(item, s.text_field, "text")
            if isinstance(text, Reject):
                return replace(text, language=language)
            if s.title_field and text.strip():
                title = _get(item, s.title_field)
                if isinstance(title, str) and title.strip():
                    text = f"{normalize_text(title).strip()}\n\n{text}"
        given_id = _get(item, s.id_field) if s.id_field else None
        record_id = (
            stable_id(s.name, str(given_id))
            if given_id not in (None, "")
            else stable_id(s.name, file_key, str(index))
        )
        url = _get(item, s.url_field) if s.url_field else None
        return self.finish(
            record_id,
            text,
            language,
            messages=messages,
            exam=exam,
            url=url if isinstance(url, str) and url else None,
        )

    def finish(
        self, record_id: str, text: str, language: str, source_type: str | None = None, **columns
    ) -> Document | Reject:
        """Length checks, then the Document carrying the record."""
        if not _visible(text):
            return Reject("empty_text", "the text is empty or only whitespace", language=language)
        if len(text) < self.collect.min_doc_chars:
            return Reject(
                "too_short",
                f"{len(text)} characters < min_doc_chars {self.collect.min_doc_chars}",
                language=language,
            )
        if len(text) > self.collect.max_doc_chars:
            return Reject(
                "too_long",
                f"{len(text)} characters > max_doc_chars {self.collect.max_doc_chars}",
                language=language,
            )
        row = empty_record(
            id=record_id,
            text=text,
            language=language,
            source=self.source.name,
            source_type=source_type or self.source.source_type,
            origin="original",
            license=self.source.license,
        )
        row.update(columns)
        return record_to_document(row)


def _visible(text: str) -> bool:
    """Whether the text has a character that is neither whitespace nor an invisible format control
    (zero-width spaces and joiners, bidi marks and overrides, BOM): only those is an empty text."""
    return any(not ch.isspace() and unicodedata.category(ch) != "Cf" for ch in text)


# ---- readers --------------------------------------------------------------------------------------
class _RejectingReader:
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


class SourceReader(_RejectingReader, BaseDiskReader):
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
        except EOFError as exc:
            after = f" after line {self._line}" if self._line else ""
            self._emit(
                Reject("truncated_file", f"compressed stream ends early{after}: {exc}; the rest is lost"),
                filepath,
                (self._line or 0) + 1,
            )
        except _stream_errors() as exc:
            self._emit(
                Reject("unreadable_file", f"{type(exc).__name__}: {exc}"), filepath, (self._line or 0) + 1
            )

    def iter_results(
        self, path: Path, file_key: str
    ) -> Iterator[tuple[Document | Reject, int | None, object]]:
        """(record or reject, line/item number, raw input) for each item of one file."""
        raise NotImplementedError


def _iter_json_lines(reader: SourceReader, fh: BinaryIO) -> Iterator[tuple[object, int, bytes, int]]:
    """(parsed value or Reject, line number, raw bytes, line number as the item's index) per non-blank line."""
    for lineno, raw in enumerate(fh, 1):
        reader._line = lineno
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield Reject("invalid_utf8", f"byte {exc.start} of the line: {exc.reason}"), lineno, raw, lineno
            continue
        if lineno == 1:
            text = text.removeprefix("\ufeff")
        try:
            yield orjson.loads(text), lineno, raw, lineno
        except orjson.JSONDecodeError as exc:
            yield Reject("malformed_json", str(exc)), lineno, raw, lineno


def _iter_json_array(
    reader: SourceReader, fh: BinaryIO, max_item_chars: int
) -> Iterator[tuple[object, int, str, int]]:
    """(item or Reject, start line, raw text, item number) for a file holding one JSON array, parsed
    one item at a time (the file is never loaded whole).

    An item that does not parse ends the file: it and the rest are rejected as malformed_json.
    """
    decoder = json.JSONDecoder()
    text = io.TextIOWrapper(fh, encoding="utf-8-sig", errors="surrogateescape")
    buf, pos, line, done, number = "", 0, 1, False, 0

    def fill() -> bool:
        nonlocal buf, pos, done
        chunk = text.read(_READ_CHUNK)
        if not chunk:
            done = True
            return False
        buf = buf[pos:] + chunk
        pos = 0
        return True

    def skip(chars: str) -> None:
        nonlocal pos, line
        while True:
            while pos < len(buf) and buf[pos] in chars:
                line += buf[pos] == "\n"
                pos += 1
            if pos < len(buf) or not fill():
                return

    skip(" \t\r\n")
    if pos >= len(buf) or buf[pos] != "[":
        reader._line = line
        yield Reject("malformed_json", "expected a JSON array of objects"), line, buf[pos : pos + 200], 0
        return
    pos += 1
    while True:
        skip(" \t\r\n,")
        if pos >= len(buf) or buf[pos] == "]":
            return
        reader._line = line
        number += 1
        while True:
            try:
                item, end = decoder.raw_decode(buf, pos)
                break
            except RecursionError:  # nested deeper than Python's parser goes
                detail = "nested too deeply to parse; this item and the rest of the file are lost"
                yield Reject("malformed_json", detail), line, buf[pos : pos + 200], number
                return
            except json.JSONDecodeError as exc:
                if done or len(buf) - pos > max_item_chars or not fill():
                    where = line + buf.count("\n", pos, exc.pos)
                    detail = f"{exc.msg} at line {where}; this item and the rest of the file are lost"
                    yield Reject("malformed_json", detail), line, buf[pos : pos + 200], number
                    return
        raw = buf[pos:end]
        start, line, pos = line, line + raw.count("\n"), end
        yield item, start, raw, number


class _JsonItems:
    """JSON objects of a file, one per line (JSON Lines) or the items of one top-level array.

    Yields (object or Reject, line, raw, index): `index` (line number for JSON Lines, item number
    for an array) makes the record id.
    """

    def json_objects(self, path: Path) -> Iterator[tuple[dict | Reject, int, object, int]]:
        with open_binary(path) as fh:
            buffered = fh if hasattr(fh, "peek") else io.BufferedReader(fh)
            head = buffered.peek(_READ_CHUNK)[:_READ_CHUNK].lstrip(b"\xef\xbb\xbf \t\r\n")
            if head.startswith(b"["):
                values = _iter_json_array(self, buffered, self.collect.max_doc_chars * 4 + _READ_CHUNK)
            else:
                values = _iter_json_lines(self, buffered)
            for value, line, raw, index in values:
                if isinstance(value, Reject):
                    yield value, line, raw, index
                elif not isinstance(value, dict):
                    reject = Reject("malformed_json", f"expected a JSON object, got {type(value).__name__}")
                    yield reject, line, raw, index
                elif _has_surrogates(value):
                    yield Reject("invalid_utf8", "a string is not valid UTF-8"), line, raw, index
                else:
                    yield value, line, raw, index


class JsonlSourceReader(_JsonItems, SourceReader):
    """JSON Lines (.jsonl, .jsonl.gz, .jsonl.zst); a file holding one JSON array is read item by item."""

    name = "📖 jsonl source"

    def iter_results(self, path, file_key):
        for value, line, raw, index in self.json_objects(path):
            result = value if isinstance(value, Reject) else self.builder.build(value, file_key, index)
            yield result, line, raw


class CsvSourceReader(SourceReader):
    """CSV/TSV with a header row; fields are looked up by header name."""

    name = "📖 csv/tsv source"

    def iter_results(self, path, file_key):
        delimiter = self.source.csv_delimiter or ("\t" if self.source.format == "tsv" else ",")
        csv.field_size_limit(2**31 - 1)  # size is judged by max_doc_chars, not the csv module
        with open_binary(path) as fh:
            lines = _decoded_lines(fh)
            reader = csv.reader(lines, delimiter=delimiter)
            header: list[str] | None = None
            start = 1
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    self._line = reader.line_num
                    yield Reject("malformed_csv", str(exc)), start, None
                    start = reader.line_num + 1
                    continue
                line, start = start, reader.line_num + 1
                self._line = reader.line_num
                if header is None:
                    header = [h.strip() for h in row]
                    continue
                if not row or not any(cell.strip() for cell in row):
                    continue
                raw = delimiter.join(row)
                if len(row) != len(header):
                    yield (
                        Reject("ragged_row", f"{len(row)} fields where the header has {len(header)}"),
                        line,
                        raw,
                    )
                elif _has_surrogates(row):
                    yield Reject("invalid_utf8", "a field holds bytes that are not valid UTF-8"), line, raw
                else:
                    yield self.builder.build(dict(zip(header, row, strict=True)), file_key, line), line, raw


def _decoded_lines(fh: BinaryIO) -> Iterator[str]:
    """Lines as text; invalid bytes become lone surrogates so the row holding them can be rejected."""
    for i, raw in enumerate(fh):
        text = raw.decode("utf-8", errors="surrogateescape")
        yield text.removeprefix("\ufeff") if i == 0 else text


class ParquetSourceReader(SourceReader):
    """Parquet; `line` in rejects is the 1-based row number. Only the configured columns are read."""

    name = "📖 parquet source"

    def iter_results(self, path, file_key):
        try:
            parquet = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as exc:
            yield Reject("unreadable_file", f"not a readable Parquet file: {exc}"), None, None
            return
        present = [f for f in self.builder.fields() if f in parquet.schema_arrow.names]
        if not present:  # none of the configured fields: every row lacks its text
            for index in range(1, parquet.metadata.num_rows + 1):
                missing = ", ".join(self.builder.fields())
                yield Reject("missing_field", f"the file has none of the fields {missing}"), index, None
            return
        index = 0
        try:
            for batch in parquet.iter_batches(batch_size=1024, columns=present):
                for row in batch.to_pylist():
                    index += 1
                    self._line = index
                    result = self.builder.build(row, file_key, index)
                    yield result, index, _row_snippet(row) if isinstance(result, Reject) else None
        except (pa.ArrowException, OSError) as exc:
            yield Reject("unreadable_file", f"Parquet file breaks after row {index}: {exc}"), index + 1, None


def _row_snippet(row: dict) -> str:
    return json.dumps(row, ensure_ascii=False, default=str)[:2000]


# ---- TMX --------------------------------------------------------------------------------------------
_XML_LANG = "http://www.w3.org/XML/1998/namespace lang"
_NATIVE_CODE = {"bpt", "ept", "ph", "it", "ut"}  # inline elements holding formatting codes, not text


class _TmxParser:
    """Streaming TMX parse with expat: collects (line, unit attributes, [(lang, segment text)]) per <tu>.

    Inline markup inside <seg> keeps its text (<hi>, <sub>) and drops formatting codes (<bpt>, <ph>...).
    """

    def __init__(self):
        self.parser = expat.ParserCreate(namespace_separator=" ")
        self.parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        self.parser.StartElementHandler = self._start
        self.parser.EndElementHandler = self._end
        self.parser.CharacterDataHandler = self._chars
        self.header_srclang: str | None = None
        self.units: list[tuple[int, dict, list[tuple[str | None, str]]]] = []
        self._unit: tuple[int, dict, list] | None = None
        self._lang: str | None = None
        self._seg: list[str] | None = None
        self._code_depth = 0

    def feed(self, data: bytes, final: bool = False) -> None:
        self.parser.Parse(data, final)

    def _start(self, name: str, attrs: dict) -> None:
        tag = name.rsplit(" ", 1)[-1]
        if tag == "header":
            self.header_srclang = attrs.get("srclang")
        elif tag == "tu":
            self._unit = (self.parser.CurrentLineNumber, attrs, [])
        elif tag == "tuv" and self._unit is not None:
            self._lang = attrs.get(_XML_LANG) or attrs.get("lang")
        elif tag == "seg" and self._unit is not None:
            self._seg = []
        elif self._seg is not None and tag in _NATIVE_CODE:
            self._code_depth += 1

    def _end(self, name: str) -> None:
        tag = name.rsplit(" ", 1)[-1]
        if tag == "tu" and self._unit is not None:
            self.units.append(self._unit)
            self._unit = None
        elif tag == "seg" and self._seg is not None and self._unit is not None:
            self._unit[2].append((self._lang, "".join(self._seg)))
            self._seg = None
        elif self._seg is not None and tag in _NATIVE_CODE:
            self._code_depth -= 1

    def _chars(self, data: str) -> None:
        if self._seg is not None and self._code_depth == 0:
            self._seg.append(data)


class TmxSourceReader(SourceReader):
    """TMX translation memories: each translation unit becomes one record per language.

    All records of a unit share `group_id`; the unit's source-language record (the unit's or the
    header's `srclang`) has origin `original`, the others `translation_memory` with `parent_id`
    pointing at it. Languages come from `xml:lang` (`en-US`, `FR` ... mapped by the registry).
    """

    name = "📖 tmx source"

    def iter_results(self, path, file_key):
        parser = _TmxParser()
        index = 0
        with open_binary(path) as fh:
            while True:
                chunk = fh.read(_READ_CHUNK)
                try:
                    parser.feed(chunk, final=not chunk)
                except expat.ExpatError as exc:
                    yield from self._units(parser, file_key, index)
                    line = exc.lineno
                    detail = (
                        f"{expat.ErrorString(exc.code)} at line {line}, column {exc.offset}; the rest is lost"
                    )
                    yield Reject("malformed_xml", detail), line, None
                    return
                yield from self._units(parser, file_key, index)
                index += len(parser.units)
                parser.units.clear()
                self._line = parser.parser.CurrentLineNumber
                if not chunk:
                    return

    def _units(self, parser: _TmxParser, file_key: str, first_index: int):
        for offset, (line, attrs, segments) in enumerate(parser.units):
            index = first_index + offset + 1
            srclang = attrs.get("srclang") or parser.header_srclang
            yield from self._unit_records(file_key, index, line, srclang, segments)

    def _unit_records(self, file_key, index, line, srclang, segments):
        group_id = stable_id(self.source.name, file_key, "tu", str(index))
        languages: list[str | Reject] = [
            self.builder.language(raw) if raw else Reject("missing_field", "<tuv> without xml:lang")
            for raw, _ in segments
        ]
        source_language = None
        if srclang and srclang != "*all*":
            source_language = self.builder.language(srclang)
            source_language = None if isinstance(source_language, Reject) else source_language
        parent = None
        if any(
            lang == source_language and seg.strip()
            for lang, (_, seg) in zip(languages, segments, strict=True)
        ):
            parent = stable_id(self.source.name, file_key, str(index), source_language)
        seen: dict[str, int] = {}
        for (_raw_lang, seg), language in zip(segments, languages, strict=True):
            if isinstance(language, Reject):
                yield language, line, seg
                continue
            seen[language] = seen.get(language, 0) + 1
            parts = [self.source.name, file_key, str(index), language]
            if seen[language] > 1:
                parts.append(str(seen[language]))
            record_id = stable_id(*parts)
            is_source = language == source_language and seen[language] == 1
            result = self.builder.finish(
                record_id,
                normalize_text(seg),
                language,
                group_id=group_id,
                origin="original" if is_source or source_language is None else "translation_memory",
                parent_id=None if is_source else parent,
            )
            yield result, line, seg


# ---- ApolloMoE release format ---------------------------------------------------------------------
_APOLLO_KEY = re.compile(r"^(?P<kind>[A-Za-z]+)_(?P<lang>[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]+)*)$")


class ApolloSourceReader(_JsonItems, SourceReader):
    """The ApolloMoE release: JSON items `{"conversations": [...], "source": "medicalExam_sw",
    "class": "minor", "language": "sw"}` (a JSON array or JSON Lines).

    The source key gives the source type (via collect.apollo_source_types) and, when the item has no
    `language`, the language. A one-turn conversation is a plain document (messages null); two or
    more turns alternate user/assistant. `class` is informational: the registry decides the tier.
    """

    name = "📖 apollo source"

    def iter_results(self, path, file_key):
        for value, line, raw, index in self.json_objects(path):
            yield value if isinstance(value, Reject) else self._build(value, file_key, index), line, raw

    def _build(self, item: dict, file_key: str, index: int) -> Document | Reject:
        key = item.get("source")
        kind_lang = _APOLLO_KEY.match(key) if isinstance(key, str) else None
        if key is None and self.source.source_type:
            source_type = self.source.source_type
        elif kind_lang and kind_lang["kind"] in self.collect.apollo_source_types:
            source_type = self.collect.apollo_source_types[kind_lang["kind"]]
        else:
            known = ", ".join(sorted(self.collect.apollo_source_types))
            return Reject(
                "bad_field", f"apollo source key {key!r} is not <type>_<lang> with a type in: {known}"
            )
        field = self.source.language_field or "language"
        raw_language = _get(item, field)
        if raw_language in (None, "") and kind_lang:
            raw_language = kind_lang["lang"]
        if raw_language in (None, "") and self.builder.fixed_language:
            raw_language = self.builder.fixed_language
        language = self.builder.language(raw_language)
        if isinstance(language, Reject):
            return language
        turns = item.get("conversations")
        if turns is None:
            return Reject("missing_field", "no 'conversations'", language=language)
        messages = self.builder.messages(turns, alternate=True)
        if isinstance(messages, Reject):
            return replace(messages, language=language)
        if len(messages) == 1:
            text, messages = messages[0]["content"], None
        else:
            text = render_messages(messages)
        given_id = item.get(self.source.id_field or "id")
        record_id = (
            stable_id(self.source.name, str(given_id))
            if given_id not in (None, "")
            else stable_id(self.source.name, file_key, str(index))
        )
        return self.builder.finish(record_id, text, language, source_type=source_type, messages=messages)


# ---- Hugging Face datasets ------------------------------------------------------------------------
def open_hf_dataset(cfg: Config, source: SourceSection, cache_dir: Path | None = None):
    """A `datasets.Dataset`: a save_to_disk directory, a local directory/file `load_dataset` reads,
    or a hub name (which needs the hub cache or network)."""
    import datasets

    local = cfg.resolve(source.path)
    if local.is_dir() and ((local / "state.json").is_file() or (local / "dataset_dict.json").is_file()):
        dataset = datasets.load_from_disk(str(local))
        if isinstance(dataset, datasets.DatasetDict):
            if source.hf_split not in dataset:
                raise KeyError(f"split '{source.hf_split}' not in {list(dataset)}")
            dataset = dataset[source.hf_split]
        return dataset
    if local.exists():
        return datasets.load_dataset(
            str(local),
            name=source.hf_config,
            split=source.hf_split,
            cache_dir=str(cache_dir) if cache_dir else None,
        )
    return datasets.load_dataset(source.path, name=source.hf_config, split=source.hf_split)


class HFSourceReader(_RejectingReader, BaseReader):
    """A Hugging Face dataset; each task reads a contiguous slice of its rows. `line` is the row number."""

    name = "📖 hf dataset source"

    def __init__(
        self,
        cfg: Config,
        source: SourceSection,
        collect: CollectSection,
        registry: Registry,
        rejected_dir: Path,
        cache_dir: Path,
    ):
        super().__init__()
        self.cfg = cfg
        self.source = source
        self.collect = collect
        self.builder = RecordBuilder(source, collect, registry)
        self.rejected_dir = Path(rejected_dir)
        self.cache_dir = cache_dir

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        dataset = open_hf_dataset(self.cfg, self.source, self.cache_dir)
        per_task, extra = divmod(len(dataset), world_size)
        start = per_task * rank + min(rank, extra)
        count = per_task + (rank < extra)
        shard = dataset.select(range(start, start + count)) if count else []
        self._open_sink(rank)
        label = f"hf:{self.source.path}:{self.source.hf_split}"
        try:
            with tqdm(total=len(shard), desc=self.source.name, unit="doc") as bar:
                for offset, row in enumerate(shard):
                    index = start + offset + 1
                    result = self.builder.build(row, label, index)
                    doc = self._emit(
                        result, label, index, _row_snippet(row) if isinstance(result, Reject) else None
                    )
                    bar.update()
                    if doc is not None:
                        self.update_doc_stats(doc)
                        yield doc
        except BaseException:
            self._sink.abort()
            raise
        self._sink.close()


READERS: dict[str, type[SourceReader]] = {
    "jsonl": JsonlSourceReader,
    "csv": CsvSourceReader,
    "tsv": CsvSourceReader,
    "parquet": ParquetSourceReader,
    "tmx": TmxSourceReader,
    "apollo": ApolloSourceReader,
}
