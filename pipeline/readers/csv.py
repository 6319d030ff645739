"""CSV/TSV sources."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import BinaryIO

from pipeline.readers.base import SourceReader
from pipeline.readers.files import open_binary
from pipeline.readers.rejects import Reject, has_surrogates


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
                elif has_surrogates(row):
                    yield Reject("invalid_utf8", "a field holds bytes that are not valid UTF-8"), line, raw
                else:
                    yield self.builder.build(dict(zip(header, row, strict=True)), file_key, line), line, raw


def _decoded_lines(fh: BinaryIO) -> Iterator[str]:
    """Lines as text; invalid bytes become lone surrogates so the row holding them can be rejected."""
    for i, raw in enumerate(fh):
        text = raw.decode("utf-8", errors="surrogateescape")
        yield text.removeprefix("\ufeff") if i == 0 else text
