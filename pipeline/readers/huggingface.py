"""Hugging Face datasets."""

from __future__ import annotations

from pathlib import Path

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.readers.base import BaseReader
from tqdm import tqdm

from pipeline.config import CollectSection, Config, SourceSection
from pipeline.readers.base import RejectingReader, row_snippet
from pipeline.readers.records import RecordBuilder
from pipeline.readers.rejects import Reject
from pipeline.registry import Registry


def open_hf_dataset(cfg: Config, source: SourceSection, cache_dir: Path | None = None):
    """A `datasets.Dataset`: a save_to_disk directory, a local directory/file `load_dataset` reads,
    or a hub name (which needs the hub cache or network)."""
    import datasets

    local = cfg.resolve(source.path)
    if local.is_dir() and ((local / "state.json").is_file() or (local / "dataset_dict.json").is_file()):
        dataset = datasets.load_from_disk(str(local))
        if isinstance(dataset, datasets.DatasetDict):
            if source.hf_split not in dataset:
                raise KeyError(f"split '{source.hf_split}' not in {list(dataset)}")
            dataset = dataset[source.hf_split]
        return dataset
    if local.exists():
        return datasets.load_dataset(
            str(local),
            name=source.hf_config,
            split=source.hf_split,
            cache_dir=str(cache_dir) if cache_dir else None,
        )
    return datasets.load_dataset(source.path, name=source.hf_config, split=source.hf_split)


class HFSourceReader(RejectingReader, BaseReader):
    """A Hugging Face dataset; each task reads a contiguous slice of its rows. `line` is the row number."""

    name = "📖 hf dataset source"

    def __init__(
        self,
        cfg: Config,
        source: SourceSection,
        collect: CollectSection,
        registry: Registry,
        rejected_dir: Path,
        cache_dir: Path,
    ):
        super().__init__()
        self.cfg = cfg
        self.source = source
        self.collect = collect
        self.builder = RecordBuilder(source, collect, registry)
        self.rejected_dir = Path(rejected_dir)
        self.cache_dir = cache_dir

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        dataset = open_hf_dataset(self.cfg, self.source, self.cache_dir)
        per_task, extra = divmod(len(dataset), world_size)
        start = per_task * rank + min(rank, extra)
        count = per_task + (rank < extra)
        shard = dataset.select(range(start, start + count)) if count else []
        self._open_sink(rank)
        label = f"hf:{self.source.path}:{self.source.hf_split}"
        try:
            with tqdm(total=len(shard), desc=self.source.name, unit="doc") as bar:
                for offset, row in enumerate(shard):
                    index = start + offset + 1
                    result = self.builder.build(row, label, index)
                    doc = self._emit(
                        result, label, index, row_snippet(row) if isinstance(result, Reject) else None
                    )
                    bar.update()
                    if doc is not None:
                        self.update_doc_stats(doc)
                        yield doc
        except BaseException:
            self._sink.abort()
            raise
        self._sink.close()
