"""What the readers of whole documents share (web pages, PDFs, PMC articles, MEDLINE citations,
wiki pages, Word files): the document's language, its record with provenance, byte caps, and
the safe, streaming XML parse the XML formats use.

A document's language is the source's fixed `language`, or (`language_detect`) the document's
declared language (falling back to language ID) or language ID alone. Its record id is
`stable_id(source, the document's own id)` when it has one (WARC record id, PMCID, PMID, wiki page
id), else `stable_id(source, file, position)`. Provenance columns: `source_id` (that own id),
`source_file`, `source_position` (record, article or page number in the file), `url`, and
`license` when the document states its own (a PMC article's <license>), else the source's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from xml.etree.ElementTree import Element, ParseError

from datatrove.data import Document
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import iterparse

from pipeline.config import CollectSection, SourceSection
from pipeline.readers.base import SourceReader
from pipeline.readers.files import READ_CHUNK, open_binary
from pipeline.readers.records import provenance
from pipeline.readers.rejects import Reject
from pipeline.registry import Registry, UnknownLanguageError
from pipeline.schema import stable_id
from pipeline.text.normalize import normalize_text

_LID_CHARS = 2_000  # language ID reads the document's first characters
_BLANK_RUNS = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")


def tidy(text: str) -> str:
    """Normalised text with trailing spaces and runs of blank lines reduced (one blank line between
    paragraphs), stripped."""
    text = _TRAILING_SPACE.sub("\n", normalize_text(text))
    return _BLANK_RUNS.sub("\n\n", text).strip()


def local_name(tag: str) -> str:
    """An element's name without its namespace ({ns}name -> name)."""
    return tag.rsplit("}", 1)[-1]


class XmlBroken(Exception):
    """The XML of a file breaks (malformed, or entities/DTD tricks defusedxml refuses)."""

    def __init__(self, line: int | None, detail: str):
        super().__init__(detail)
        self.line = line
        self.detail = detail


def iter_elements(
    path: Path, names: set[str], collect: CollectSection | None = None
) -> Iterator[tuple[Element, int]]:
    """(element, its number among the matches) for each complete element named in `names`, streamed.

    defusedxml parses (no entity expansion, no external entities or DTDs fetched); a matched
    element is cleared once the caller is done with it, so memory stays bounded by one element.
    Raises XmlBroken with the line and reason when the XML breaks, EOFError when a compressed
    file is truncated, DecompressionLimitError past `collect`'s decompression limits.
    """
    count = 0
    with open_binary(path, collect) as fh:
        events = iterparse(_Chunked(fh), events=("start", "end"))
        root = None
        try:
            for event, element in events:
                if root is None:
                    root = element
                if event == "end" and local_name(element.tag) in names:
                    count += 1
                    yield element, count
                    element.clear()
                    if element is not root:
                        root.clear()  # drops the finished elements, so memory does not grow with the file
        except ParseError as exc:
            line = exc.position[0] if getattr(exc, "position", None) else None
            raise XmlBroken(line, f"{exc}; the rest of the file is lost") from None
        except DefusedXmlException as exc:
            raise XmlBroken(None, f"refused by the safe XML parser: {exc!r}") from None


class _Chunked:
    """A file object read in fixed chunks (iterparse reads with `read(n)`)."""

    def __init__(self, fh):
        self.fh = fh

    def read(self, n: int = READ_CHUNK) -> bytes:
        return self.fh.read(min(n, READ_CHUNK) if n and n > 0 else READ_CHUNK)


def text_of(element: Element | None, skip: frozenset[str] = frozenset()) -> str:
    """All text inside an element, without the subtrees named in `skip`, whitespace collapsed."""
    if element is None:
        return ""
    parts: list[str] = []

    def walk(node: Element) -> None:
        if local_name(node.tag) in skip:
            return
        if node.text:
            parts.append(node.text)
        for child in node:
            walk(child)
            if child.tail:
                parts.append(child.tail)

    walk(element)
    return " ".join("".join(parts).split())


class DocumentSourceReader(SourceReader):
    """Base of the document formats: language, record and provenance of one extracted document."""

    def __init__(
        self,
        source: SourceSection,
        files: list[Path],
        root: Path,
        collect: CollectSection,
        registry: Registry,
        rejected_dir: Path,
    ):
        super().__init__(source, files, root, collect, registry, rejected_dir)
        self.registry = registry
        self._lid = None

    @property
    def max_bytes(self) -> int:
        """Raw input above this many bytes for one document is not parsed (bomb and memory cap)."""
        return self.collect.max_doc_chars * 16

    def detect_language(self, text: str, declared: str | None) -> str | Reject:
        if self.builder.fixed_language:
            return self.builder.fixed_language
        if declared and self.source.language_detect == "declared":
            try:
                return self.registry.normalize_code(declared.strip())
            except UnknownLanguageError:
                pass  # fall back to language ID
        if self._lid is None:
            from pipeline.text.fasttext_lid import LanguageIdentifier

            self._lid = LanguageIdentifier(self.registry)
        top = self._lid.predict([text[:_LID_CHARS]])[0][0]
        if top.language is None:
            return Reject(
                "unknown_language",
                f"language ID says '{top.label}' ({top.score:.2f}), not a registry language"
                + (f"; declared '{declared}'" if declared else ""),
            )
        return top.language

    def document(
        self,
        text: str,
        file_key: str,
        position: int,
        *,
        source_id: str | None = None,
        url: str | None = None,
        declared_language: str | None = None,
        license: str | None = None,
    ) -> Document | Reject:
        text = tidy(text)
        if not text:
            return Reject("empty_text", "no text was extracted from the document")
        language = self.detect_language(text, declared_language)
        if isinstance(language, Reject):
            return language
        record_id = (
            stable_id(self.source.name, source_id)
            if source_id
            else stable_id(self.source.name, file_key, str(position))
        )
        columns = provenance(source_id, file_key, position) | {"url": url or None}
        if license:
            columns["license"] = license
        return self.builder.finish(record_id, text, language, **columns)

    def too_large(self, size: int, what: str) -> Reject:
        return Reject(
            "too_long", f"{what} is {size:,} bytes > {self.max_bytes:,} (16 x collect.max_doc_chars)"
        )
