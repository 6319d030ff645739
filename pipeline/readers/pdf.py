"""PDF files (text layer, pypdf): one record per file.

Per page the text layer is extracted; then
- running headers and footers go: a line among the first or last two of a page that recurs (digits
  aside) on at least half of the pages, in documents of three pages or more;
- page numbers go: a first or last line that is only a number ("12", "Page 3 of 9", "- 4 -", "xii");
- words hyphenated across lines are joined ("treat-" + "ment" -> "treatment"), wrapped lines are
  joined into paragraphs (a long line not ending a sentence continues on the next), and ligatures
  (ﬁ, ﬂ) become letters.
A page without a text layer (a scan: no OCR is run) is rejected as `no_text_layer` with its page
number in `line`; the other pages still make the record. An encrypted PDF that does not open with
the empty password is rejected as `encrypted_pdf`, a broken one as `unreadable_file`.
pypdf is BSD-licensed (PyMuPDF, the faster alternative, is AGPL).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from pathlib import Path

from pipeline.readers.documents import DocumentSourceReader
from pipeline.readers.rejects import Reject

_PAGE_NUMBER = re.compile(
    r"^\s*(?:[-–—]\s*)?(?:(?:page|p\.|seite|página|pagina)\s*)?(?:\d{1,4}|[ivxlcdm]{1,7})"
    r"(?:\s*(?:of|/|de|von|sur)\s*\d{1,4})?(?:\s*[-–—])?\s*$",
    re.I,
)
_DIGITS = re.compile(r"\d+")
_LIGATURES = re.compile("[\ufb00-\ufb06]")
_HYPHENATED = re.compile(r"(\w)[-\u00ad]$")
_SENTENCE_END = re.compile(r"[.!?:;。！？]['\")\]]?$")
_EDGE_LINES = 2


def _key(line: str) -> str:
    return _DIGITS.sub("#", " ".join(line.split()).lower())


def remove_running_lines(pages: list[list[str]]) -> list[list[str]]:
    """Drop page numbers and recurring headers/footers from each page's first and last lines."""
    counts: Counter[str] = Counter()
    for lines in pages:
        edges = {_key(line) for line in lines[:_EDGE_LINES] + lines[-_EDGE_LINES:]}
        counts.update(edges)
    running = {key for key, n in counts.items() if len(pages) >= 3 and n >= max(2, len(pages) / 2) and key}
    out = []
    for lines in pages:
        lines = list(lines)
        for edge in (0, -1):  # strip from the top, then from the bottom
            for _ in range(_EDGE_LINES):
                if lines and (_key(lines[edge]) in running or _PAGE_NUMBER.match(lines[edge])):
                    lines.pop(edge)
        out.append(lines)
    return out


def join_lines(lines: list[str]) -> str:
    """Lines of one page as paragraphs: hyphenation repaired, wrapped lines joined."""
    lengths = sorted(len(line) for line in lines)
    full = lengths[int(len(lengths) * 0.9)] if lengths else 0  # a typical full line
    paragraphs: list[str] = []
    current = ""
    for line in lines:
        if not current:
            current = line
            continue
        hyphen = _HYPHENATED.search(current)
        if hyphen and line[:1].islower():
            current = current[:-1] + line
        elif len(current) >= 0.8 * full and not _SENTENCE_END.search(current):
            current = f"{current} {line}"
        else:
            paragraphs.append(current)
            current = line
    if current:
        paragraphs.append(current)
    return "\n".join(paragraphs)


def pdf_text(pages: list[str]) -> str:
    """The document's text from its pages' extracted text."""
    split = [[" ".join(line.split()) for line in page.splitlines() if line.strip()] for page in pages]
    kept = remove_running_lines(split)
    text = "\n".join(join_lines(lines) for lines in kept if lines)
    # a paragraph broken by a page end: joined like any wrapped line
    text = re.sub(r"(\w)-\n(?=[a-z])", r"\1", text)
    return _LIGATURES.sub(lambda m: unicodedata.normalize("NFKC", m.group(0)), text)


class PdfSourceReader(DocumentSourceReader):
    """PDF text layers; `source_position` is 1 (one record per file), rejects name the page."""

    name = "📖 pdf source"

    def iter_results(self, path: Path, file_key: str):
        from pypdf import PdfReader
        from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

        size = path.stat().st_size
        if size > self.max_bytes:
            yield self.too_large(size, "the file"), None, None
            return
        try:
            reader = PdfReader(path, strict=False)
            if reader.is_encrypted and not reader.decrypt(""):
                yield (
                    Reject("encrypted_pdf", "encrypted, and the empty password does not open it"),
                    None,
                    None,
                )
                return
            pages = reader.pages
            count = len(pages)
        except (DependencyError, FileNotDecryptedError) as exc:
            yield Reject("encrypted_pdf", f"cannot decrypt: {exc}"), None, None
            return
        except (PdfReadError, ValueError, KeyError, TypeError, OSError, RecursionError) as exc:
            yield Reject("unreadable_file", f"not a readable PDF: {type(exc).__name__}: {exc}"), None, None
            return
        texts = []
        for number in range(1, count + 1):
            self._line = number
            try:
                text = pages[number - 1].extract_text() or ""
            except (
                Exception
            ) as exc:  # pypdf raises many kinds on a broken page; the page is lost, not the file
                yield Reject("unreadable_file", f"page {number}: {type(exc).__name__}: {exc}"), number, None
                continue
            if not any(ch.isalnum() for ch in text):
                yield (
                    Reject(
                        "no_text_layer", f"page {number} of {count} has no text layer (a scan? no OCR is run)"
                    ),
                    number,
                    None,
                )
                continue
            texts.append(text)
        if texts:
            yield self.document(pdf_text(texts), file_key, 1), 1, None
