"""CSV/TSV sources."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import BinaryIO

from pipeline.readers.base import SourceReader
from pipeline.readers.files import bounded_lines, open_binary
from pipeline.readers.rejects import Reject, has_surrogates


class CsvSourceReader(SourceReader):
    """CSV/TSV with a header row; fields are looked up by header name."""

    name = "📖 csv/tsv source"

    def iter_results(self, path, file_key):
        delimiter = self.source.csv_delimiter or ("\t" if self.source.format == "tsv" else ",")
        cap = self.collect.max_record_bytes
        csv.field_size_limit(cap)  # a longer field (a quoted one can span lines) is a malformed_csv row
        with open_binary(path, self.collect) as fh:
            oversized: list[int] = []
            lines = _decoded_lines(fh, cap, oversized)
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
                if oversized:  # the row held a line too long to read: it goes as a whole
                    detail = (
                        f"line {oversized[0]} is longer than {cap} bytes (collect.max_record_bytes); not read"
                    )
                    yield Reject("too_large", detail), line, None
                    oversized.clear()
                    continue
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
                elif has_surrogates(row):
                    yield Reject("invalid_utf8", "a field holds bytes that are not valid UTF-8"), line, raw
                else:
                    yield self.builder.build(dict(zip(header, row, strict=True)), file_key, line), line, raw


def _decoded_lines(fh: BinaryIO, max_line_bytes: int, oversized: list[int]) -> Iterator[str]:
    """Lines as text; invalid bytes become lone surrogates so the row holding them can be rejected. A
    line over `max_line_bytes` is skipped unread: its number goes to `oversized`, an empty line
    stands in its place."""
    for i, raw in enumerate(bounded_lines(fh, max_line_bytes)):
        if raw is None:
            oversized.append(i + 1)
            yield "\n"
            continue
        text = raw.decode("utf-8", errors="surrogateescape")
        yield text.removeprefix("\ufeff") if i == 0 else text
