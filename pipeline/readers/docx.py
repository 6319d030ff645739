"""Word files (.docx, python-docx): one record per file, its paragraphs in order (headings
included); tables are dropped unless `tables: true` (then one tab-separated line per row, after
the paragraphs). A file that is not a readable .docx is rejected as `unreadable_file`; one whose
parts unpack to more than the byte cap (16 x collect.max_doc_chars: a zip bomb) as `too_long`,
checked from the zip directory before anything is unpacked.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from pipeline.readers.documents import DocumentSourceReader
from pipeline.readers.rejects import Reject


class DocxSourceReader(DocumentSourceReader):
    """Word documents; `source_position` is 1."""

    name = "📖 docx source"

    def iter_results(self, path: Path, file_key: str):
        import docx
        from docx.opc.exceptions import PackageNotFoundError

        try:
            with zipfile.ZipFile(path) as archive:
                unpacked = sum(info.file_size for info in archive.infolist())
        except (zipfile.BadZipFile, OSError) as exc:
            yield Reject("unreadable_file", f"not a .docx (zip) file: {exc}"), None, None
            return
        if unpacked > self.max_bytes:
            yield self.too_large(unpacked, "the unpacked document"), None, None
            return
        try:
            document = docx.Document(str(path))
        except (PackageNotFoundError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            yield Reject("unreadable_file", f"not a readable .docx: {type(exc).__name__}: {exc}"), None, None
            return
        lines = [p.text for p in document.paragraphs]
        if self.source.tables:
            for table in document.tables:
                lines.extend("\t".join(cell.text for cell in row.cells) for row in table.rows)
        language = document.core_properties.language or None
        yield self.document("\n".join(lines), file_key, 1, declared_language=language), 1, None
