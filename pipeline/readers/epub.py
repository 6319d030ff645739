"""EPUB e-books: one record per book, its chapters in reading (spine) order.

The container's package file (OPF) gives the spine and the metadata: `source_id` is the book's
dc:identifier, `license` its dc:rights when stated (e.g. Project Gutenberg's "Public domain in
the USA."), the declared language its dc:language. Each XHTML chapter becomes text block by block
(paragraphs, headings, list items, table cells; scripts and styles dropped) with lxml's lenient
HTML parser, which neither fetches nor expands external entities. The OPF and container are read
with defusedxml. A zip whose parts unpack beyond the byte cap is rejected as `too_long` before
anything is unpacked; a file that is not a readable EPUB as `unreadable_file`.
"""

from __future__ import annotations

import posixpath
import zipfile
from pathlib import Path

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from pipeline.readers.documents import DocumentSourceReader, local_name
from pipeline.readers.rejects import Reject

_BLOCKS = frozenset(
    {"p", "h1", "h2", "h3", "h4", "h5", "h6", "li", "blockquote", "pre", "dd", "dt", "td", "th", "caption"}
)
_DROPPED = ("script", "style", "head", "nav")


def chapter_text(xhtml: bytes) -> str:
    """The text of one XHTML chapter, one block per line (a block inside a block counts once)."""
    import lxml.html

    root = lxml.html.fromstring(xhtml)
    for element in root.iter(*_DROPPED):
        element.drop_tree()
    lines = []
    for element in root.iter(*_BLOCKS):
        if any(child.tag in _BLOCKS for child in element.iterdescendants()):
            continue  # its inner blocks are taken one by one
        text = " ".join(element.text_content().split())
        if text:
            lines.append(text)
    return "\n".join(lines)


def _package(archive: zipfile.ZipFile) -> tuple[str, object]:
    container = fromstring(archive.read("META-INF/container.xml"))
    rootfile = next(e for e in container.iter() if local_name(e.tag) == "rootfile")
    path = rootfile.get("full-path")
    return path, fromstring(archive.read(path))


def _metadata(opf, name: str) -> str | None:
    for element in opf.iter():
        if local_name(element.tag) == name and (element.text or "").strip():
            return element.text.strip()
    return None


class EpubSourceReader(DocumentSourceReader):
    """EPUB 2/3 books; `source_position` is 1."""

    name = "📖 epub source"

    def iter_results(self, path: Path, file_key: str):
        try:
            with zipfile.ZipFile(path) as archive:
                unpacked = sum(info.file_size for info in archive.infolist())
                if unpacked > self.max_bytes:
                    yield self.too_large(unpacked, "the unpacked book"), None, None
                    return
                opf_path, opf = _package(archive)
                manifest = {
                    e.get("id"): e.get("href")
                    for e in opf.iter()
                    if local_name(e.tag) == "item" and "html" in (e.get("media-type") or "")
                }
                spine = [e.get("idref") for e in opf.iter() if local_name(e.tag) == "itemref"]
                base = posixpath.dirname(opf_path)
                chapters = [
                    chapter_text(archive.read(posixpath.normpath(posixpath.join(base, manifest[idref]))))
                    for idref in spine
                    if idref in manifest
                ]
        except (zipfile.BadZipFile, KeyError, StopIteration, OSError, ValueError, DefusedXmlException) as exc:
            yield Reject("unreadable_file", f"not a readable EPUB: {type(exc).__name__}: {exc}"), None, None
            return
        yield (
            self.document(
                "\n\n".join(c for c in chapters if c),
                file_key,
                1,
                source_id=_metadata(opf, "identifier"),
                declared_language=_metadata(opf, "language"),
                license=_metadata(opf, "rights"),
            ),
            1,
            None,
        )
