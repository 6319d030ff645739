"""JSON objects of a file, one per line (JSON Lines) or the items of one top-level array, streamed;
shared by the jsonl and apollo readers."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import orjson

from pipeline.readers.base import SourceReader
from pipeline.readers.files import READ_CHUNK, bounded_lines, open_binary
from pipeline.readers.rejects import Reject, has_surrogates


def iter_json_lines(
    reader: SourceReader, fh: BinaryIO, max_line_bytes: int
) -> Iterator[tuple[object, int, bytes, int]]:
    """(parsed value or Reject, line number, raw bytes, line number as the item's index) per non-blank
    line; a line over `max_line_bytes` is rejected unread (too_large)."""
    for lineno, raw in enumerate(bounded_lines(fh, max_line_bytes), 1):
        reader._line = lineno
        if raw is None:
            detail = f"line longer than {max_line_bytes} bytes (collect.max_record_bytes); not read"
            yield Reject("too_large", detail), lineno, b"", lineno
            continue
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


def iter_json_array(
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
        chunk = text.read(READ_CHUNK)
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


class JsonItems:
    """JSON objects of a file, one per line (JSON Lines) or the items of one top-level array.

    Yields (object or Reject, line, raw, index): `index` (line number for JSON Lines, item number
    for an array) makes the record id.
    """

    def json_objects(self, path: Path) -> Iterator[tuple[dict | Reject, int, object, int]]:
        cap = self.collect.max_record_bytes
        with open_binary(path, self.collect) as fh:
            buffered = fh if hasattr(fh, "peek") else io.BufferedReader(fh)
            head = buffered.peek(READ_CHUNK)[:READ_CHUNK].lstrip(b"\xef\xbb\xbf \t\r\n")
            if head.startswith(b"["):
                values = iter_json_array(
                    self, buffered, min(self.collect.max_doc_chars * 4 + READ_CHUNK, cap)
                )
            else:
                values = iter_json_lines(self, buffered, cap)
            for value, line, raw, index in values:
                if isinstance(value, Reject):
                    yield value, line, raw, index
                elif not isinstance(value, dict):
                    reject = Reject("malformed_json", f"expected a JSON object, got {type(value).__name__}")
                    yield reject, line, raw, index
                elif has_surrogates(value):
                    yield Reject("invalid_utf8", "a string is not valid UTF-8"), line, raw, index
                else:
                    yield value, line, raw, index
