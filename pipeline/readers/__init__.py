"""Source readers for the collection stage: one datatrove reader per input format,
one file per format.

A reader turns one configured source into records (datatrove `Document`s carrying the record
schema) and streams: it holds one line, row batch, translation unit or JSON item at a time.
Input that cannot become a record goes to `OUT/collect/rejected/<source>-<rank>.parquet`
(REJECT_SCHEMA: file, line, source, reason, detail, raw snippet) and is counted as
`quarantined/<reason>`; a reader never stops on bad input.

Record ids are deterministic: `stable_id(source, value of id_field)` when the source has an id
field, else `stable_id(source, file relative to the source root, line or item number)`, so a
re-run produces identical output.
"""

from __future__ import annotations

from pipeline.readers.apollo import ApolloSourceReader
from pipeline.readers.base import SourceReader
from pipeline.readers.csv import CsvSourceReader
from pipeline.readers.docx import DocxSourceReader
from pipeline.readers.epub import EpubSourceReader
from pipeline.readers.files import open_binary, source_root
from pipeline.readers.html import HtmlSourceReader
from pipeline.readers.huggingface import HFSourceReader, open_hf_dataset
from pipeline.readers.jats import JatsSourceReader
from pipeline.readers.jsonl import JsonlSourceReader
from pipeline.readers.mediawiki import MediaWikiSourceReader
from pipeline.readers.medline import MedlineSourceReader
from pipeline.readers.parquet import ParquetSourceReader
from pipeline.readers.pdf import PdfSourceReader
from pipeline.readers.records import RecordBuilder, optional_fields, required_fields
from pipeline.readers.rejects import REJECT_REASONS, Reject, RejectSink
from pipeline.readers.tmx import TmxSourceReader
from pipeline.readers.warc import WarcSourceReader

READERS: dict[str, type[SourceReader]] = {
    "jsonl": JsonlSourceReader,
    "csv": CsvSourceReader,
    "tsv": CsvSourceReader,
    "parquet": ParquetSourceReader,
    "tmx": TmxSourceReader,
    "apollo": ApolloSourceReader,
    "warc": WarcSourceReader,
    "html": HtmlSourceReader,
    "pdf": PdfSourceReader,
    "jats": JatsSourceReader,
    "medline": MedlineSourceReader,
    "mediawiki": MediaWikiSourceReader,
    "docx": DocxSourceReader,
    "epub": EpubSourceReader,
}

__all__ = [
    "ApolloSourceReader",
    "CsvSourceReader",
    "HFSourceReader",
    "JsonlSourceReader",
    "ParquetSourceReader",
    "READERS",
    "REJECT_REASONS",
    "RecordBuilder",
    "Reject",
    "RejectSink",
    "SourceReader",
    "TmxSourceReader",
    "open_binary",
    "open_hf_dataset",
    "optional_fields",
    "required_fields",
    "source_root",
]
