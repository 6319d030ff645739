"""Input that cannot become a record: the reason codes, the `Reject` value and the sink that
writes rejects to `OUT/collect/rejected/<source>-<rank>.parquet` (REJECT_SCHEMA)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.record_io import AtomicParquetFile
from pipeline.schema import REJECT_SCHEMA

# Reason codes of rejected input (the `reason` column of rejected/ and `quarantined/<reason>` stats).
REJECT_REASONS = {
    "malformed_json": "a line or item that is not valid JSON, or not a JSON object",
    "invalid_utf8": "bytes that are not valid UTF-8",
    "missing_field": "the text (or question/options/answer/messages/language) field is absent",
    "empty_text": "the text is empty or only whitespace",
    "too_short": "the text is shorter than collect.min_doc_chars",
    "too_long": "the text is longer than collect.max_doc_chars",
    "too_large": "a line, item, field or unit over collect.max_record_bytes, set aside without decoding",
    "decompression_limit": "a compressed file inflating past collect.max_decompressed_bytes or "
    "max_compression_ratio; records before the stop are kept",
    "unknown_language": "a language code the registry cannot map",
    "bad_field": "a field of the wrong type or shape (options, answer, roles, apollo source key)",
    "truncated_file": "a compressed file that ends mid-stream; records before the break are kept",
    "unreadable_file": "a file that cannot be decoded as its format (corrupt, not Parquet, ...)",
    "ragged_row": "a CSV/TSV row with more or fewer fields than the header",
    "malformed_csv": "a CSV/TSV row the csv parser refuses",
    "malformed_xml": "an XML file (TMX, JATS, MEDLINE, MediaWiki) whose XML breaks; items before the break are kept",
    "unsupported_content": "a WARC response that is not an HTML page (an image, a PDF...)",
    "no_text_layer": "a PDF page without a text layer (a scan; no OCR is run); the other pages are kept",
    "encrypted_pdf": "an encrypted PDF that the empty password does not open",
}


SURROGATE = re.compile("[\ud800-\udfff]")


def has_surrogates(value: object) -> bool:
    """True when a string (or any string inside a list/dict) holds bytes that were not valid UTF-8
    (decoded as lone surrogates) or a lone surrogate escape, neither of which UTF-8 can store."""
    if isinstance(value, str):
        return not value.isascii() and SURROGATE.search(value) is not None
    if isinstance(value, list):
        return any(has_surrogates(v) for v in value)
    if isinstance(value, dict):
        return any(has_surrogates(v) for v in value.values())
    return False


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
            raw = SURROGATE.sub("\ufffd", raw[: self.snippet_chars]).rstrip("\r\n")
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
