"""HTML pages (files or folders): the page's main text, without navigation, ads and footers.

Extraction uses trafilatura by default (`extractor: resiliparse` for the faster one);
bench/bench_extract.py measures both on real pages and docs/collect.md says why trafilatura is
the default. The page's declared language (<html lang>, <meta http-equiv="content-language">)
and canonical URL are read from its head. The WARC reader uses the same extraction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.readers.documents import DocumentSourceReader
from pipeline.readers.files import open_binary
from pipeline.readers.rejects import Reject

_HEAD_BYTES = 65_536
_HTML_LANG = re.compile(rb"<html\b[^>]*?\blang\s*=\s*[\"']?([A-Za-z]{2,3}(?:[-_][A-Za-z0-9]+)*)", re.I)
_META_LANG = re.compile(
    rb"<meta\b[^>]*?http-equiv\s*=\s*[\"']?content-language[\"']?[^>]*?content\s*=\s*[\"']?([A-Za-z-]+)", re.I
)
_CANONICAL = re.compile(rb"<link\b[^>]*?rel\s*=\s*[\"']?canonical[\"']?[^>]*?href\s*=\s*[\"']([^\"']+)", re.I)
_META_CHARSET = re.compile(rb"<meta\b[^>]*?charset\s*=\s*[\"']?([A-Za-z0-9_.:-]+)", re.I)


@dataclass(frozen=True)
class PageHead:
    language: str | None
    canonical_url: str | None


def page_head(html: bytes) -> PageHead:
    """Declared language and canonical URL from the page's first bytes (no full parse needed)."""
    head = html[:_HEAD_BYTES]
    lang = _HTML_LANG.search(head) or _META_LANG.search(head)
    canonical = _CANONICAL.search(head)
    return PageHead(
        lang.group(1).decode("ascii") if lang else None,
        canonical.group(1).decode("utf-8", "replace") if canonical else None,
    )


def decode_html(html: bytes, charset: str | None = None) -> str:
    """The page as text: the HTTP charset, else the page's <meta charset>, else UTF-8, else the
    encoding resiliparse/trafilatura detection would pick (cp1252 as the last resort)."""
    candidates = [charset] if charset else []
    meta = _META_CHARSET.search(html[:_HEAD_BYTES])
    if meta:
        candidates.append(meta.group(1).decode("ascii"))
    candidates.append("utf-8")
    for name in candidates:
        name = {"gb2312": "gb18030", "gbk": "gb18030"}.get(name.lower(), name)
        try:
            return html.decode(name)
        except (LookupError, UnicodeDecodeError):
            continue
    from trafilatura.utils import decode_file

    return decode_file(html)


def extract_main_text(html: bytes, extractor: str, tables: bool, charset: str | None = None) -> str:
    """The page's main text (empty when there is none)."""
    if extractor == "resiliparse":
        from resiliparse.extract.html2text import extract_plain_text
        from resiliparse.parse.encoding import detect_encoding
        from resiliparse.parse.html import HTMLTree

        tree = HTMLTree.parse_from_bytes(html, charset or detect_encoding(html))
        return extract_plain_text(tree, main_content=True, skip_elements=None if tables else ["table"])
    import trafilatura

    return (
        trafilatura.extract(
            decode_html(html, charset), include_comments=False, include_tables=tables, deduplicate=False
        )
        or ""
    )


class HtmlSourceReader(DocumentSourceReader):
    """One record per HTML file; `source_position` is 1, `url` the page's canonical link."""

    name = "📖 html source"

    def iter_results(self, path: Path, file_key: str):
        with open_binary(path, self.collect) as fh:
            html = fh.read(self.max_bytes + 1)
        if len(html) > self.max_bytes:
            yield self.too_large(len(html), "the page"), 1, None
            return
        head = page_head(html)
        text = extract_main_text(html, self.source.extractor, self.source.tables)
        if not text.strip():
            yield self.no_main_text(), 1, html[:2000]
            return
        result = self.document(text, file_key, 1, url=head.canonical_url, declared_language=head.language)
        yield result, 1, None

    def no_main_text(self) -> Reject:
        return Reject("empty_text", f"{self.source.extractor} found no main text in the page")
