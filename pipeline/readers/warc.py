"""Web archives (WARC 1.0/1.1, plain or gzipped per record): one record per HTML response.

warcio walks the records; request, metadata and warcinfo records are not documents and are
passed over; a response that is not HTML (an image, a PDF) is rejected as `unsupported_content`.
The page's main text comes from the same extraction as the html format, with the HTTP charset.
`source_id` is the WARC-Record-ID, `url` the WARC-Target-URI, `source_position` the record's
number in the file (every record counts), and the declared language the Content-Language header
or the page's <html lang>. warcio accepts a file cut short without complaint, so each payload's
length is checked against the record's Content-Length: a short one is a `truncated_file`.
"""

from __future__ import annotations

import io
import zlib
from pathlib import Path

from pipeline.readers.documents import DocumentSourceReader
from pipeline.readers.files import open_binary
from pipeline.readers.html import extract_main_text, page_head
from pipeline.readers.rejects import Reject

_HTML_TYPES = ("text/html", "application/xhtml+xml")


def _charset(content_type: str) -> str | None:
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "charset" and value:
            return value.strip("\"' ")
    return None


def _read_up_to(stream, limit: int) -> bytes:
    """Up to `limit` bytes (warcio's readers return one buffer per read call)."""
    parts, size = [], 0
    while size < limit:
        chunk = stream.read(min(limit - size, 1 << 16))
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


def _decoded_payload(record, raw: bytes, cap: int) -> bytes:
    """The HTTP payload without its transfer and content encodings (chunked, gzip, deflate, br)."""
    from warcio.bufferedreaders import ChunkedDataReader, DecompressingBufferedReader

    headers = record.http_headers
    encoding = (headers.get_header("Content-Encoding") or "").strip().lower()
    decomp = encoding if encoding in ("gzip", "deflate", "br") else None
    if "chunked" in (headers.get_header("Transfer-Encoding") or "").lower():
        return _read_up_to(ChunkedDataReader(io.BytesIO(raw), decomp_type=decomp), cap + 1)
    if decomp:
        return _read_up_to(DecompressingBufferedReader(io.BytesIO(raw), decomp_type=decomp), cap + 1)
    return raw


class WarcSourceReader(DocumentSourceReader):
    """HTML responses of WARC files."""

    name = "📖 warc source"

    def iter_results(self, path: Path, file_key: str):
        from warcio.archiveiterator import ArchiveIterator
        from warcio.exceptions import ArchiveLoadFailed

        try:
            with open_binary(path, self.collect) as fh:
                head = fh.read(5)
        except (OSError, EOFError, zlib.error) as exc:
            head = f"{type(exc).__name__}: {exc}".encode()
        if head != b"WARC/":
            yield Reject("unreadable_file", f"not a WARC file: it starts with {head[:40]!r}"), 1, None
            return
        number, offset = 0, 0
        with open(path, "rb") as fh:
            records = ArchiveIterator(fh)
            try:
                for record in records:
                    number += 1
                    self._line = number
                    result, raw = self._record(record, file_key, number)
                    offset = records.get_record_offset()  # only once the payload is read: it consumes it
                    if result is not None:
                        yield result, number, raw
            except (ArchiveLoadFailed, zlib.error, EOFError, OSError, ValueError) as exc:
                reason = "truncated_file" if isinstance(exc, EOFError) else "unreadable_file"
                yield (
                    Reject(
                        reason, f"WARC breaks after record {number} (byte {offset}): {exc}; the rest is lost"
                    ),
                    number + 1,
                    None,
                )

    def _record(self, record, file_key: str, number: int):
        if record.rec_type != "response":
            return None, None
        target = record.rec_headers.get_header("WARC-Target-URI")
        where = f"record {number} ({target})"
        if record.http_headers is None:
            return Reject("unsupported_content", f"{where}: a response without HTTP headers"), None
        raw = _read_up_to(record.raw_stream, self.max_bytes + 1)
        if len(raw) > self.max_bytes:
            return self.too_large(len(raw), f"the payload of {where}"), None
        if record.http_headers.total_len + len(raw) < record.length:
            got = record.http_headers.total_len + len(raw)
            return Reject(
                "truncated_file", f"{where}: {got:,} of its {record.length:,} bytes; the file ends early"
            ), None
        content_type = record.http_headers.get_header("Content-Type") or ""
        if not content_type.lower().startswith(_HTML_TYPES):
            return Reject("unsupported_content", f"{where}: Content-Type {content_type or 'missing'!r}"), None
        try:
            html = _decoded_payload(record, raw, self.max_bytes)
        except (zlib.error, OSError, ValueError) as exc:
            return Reject("unreadable_file", f"{where}: cannot decode the payload: {exc}"), raw[:2000]
        charset = _charset(content_type)
        text = extract_main_text(html, self.source.extractor, self.source.tables, charset)
        if not text.strip():
            return Reject("empty_text", f"{where}: {self.source.extractor} found no main text"), html[:2000]
        declared = record.http_headers.get_header("Content-Language") or page_head(html).language
        result = self.document(
            text,
            file_key,
            number,
            source_id=record.rec_headers.get_header("WARC-Record-ID"),
            url=target,
            declared_language=declared.split(",")[0] if declared else None,
        )
        return result, None
