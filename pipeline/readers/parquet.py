"""Parquet sources."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.readers.base import SourceReader, row_snippet
from pipeline.readers.rejects import Reject


class ParquetSourceReader(SourceReader):
    """Parquet; `line` in rejects is the 1-based row number. Only the configured columns are read."""

    name = "📖 parquet source"

    def iter_results(self, path, file_key):
        try:
            parquet = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as exc:
            yield Reject("unreadable_file", f"not a readable Parquet file: {exc}"), None, None
            return
        present = [f for f in self.builder.fields() if f in parquet.schema_arrow.names]
        if not present:  # none of the configured fields: every row lacks its text
            for index in range(1, parquet.metadata.num_rows + 1):
                missing = ", ".join(self.builder.fields())
                yield Reject("missing_field", f"the file has none of the fields {missing}"), index, None
            return
        index = 0
        try:
            for batch in parquet.iter_batches(batch_size=1024, columns=present):
                for row in batch.to_pylist():
                    index += 1
                    self._line = index
                    result = self.builder.build(row, file_key, index)
                    yield result, index, row_snippet(row) if isinstance(result, Reject) else None
        except (pa.ArrowException, OSError) as exc:
            yield Reject("unreadable_file", f"Parquet file breaks after row {index}: {exc}"), index + 1, None
