"""JSON Lines sources."""

from __future__ import annotations

from pipeline.readers.base import SourceReader
from pipeline.readers.json_items import JsonItems
from pipeline.readers.rejects import Reject


class JsonlSourceReader(JsonItems, SourceReader):
    """JSON Lines (.jsonl, .jsonl.gz, .jsonl.zst); a file holding one JSON array is read item by item."""

    name = "📖 jsonl source"

    def iter_results(self, path, file_key):
        for value, line, raw, index in self.json_objects(path):
            result = value if isinstance(value, Reject) else self.builder.build(value, file_key, index)
            yield result, line, raw
