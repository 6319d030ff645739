"""Decontamination: remove every document that shares a long n-gram with a benchmark question or option.

The benchmark n-gram index is built once, in the stage's main process, from `decontam.benchmarks`
(read by `pipeline.benchmarks`, the reader evaluation uses, in each benchmark's own format) and saved under OUT/decontam/; each task loads it once and
checks its documents streaming. A removed document goes to the quarantine as `benchmark_overlap`,
its detail naming the benchmark, the item, the field and the shared text; the summary lists them.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from datatrove.data import Document

from pipeline.benchmarks import check_configured, console_line, read_configured
from pipeline.dag import StageContext
from pipeline.record_io import RecordFilter, RecordWriter, Rejection, list_parquet, read_records
from pipeline.text.ngram_index import BenchmarkText, IndexSettings, NgramIndex, benchmark_texts
from pipeline.text.segment import segment

REASON = "benchmark_overlap"
DETAIL_SEPARATOR = " | "


class BenchmarkOverlapFilter(RecordFilter):
    """Sets aside documents that contain an n-gram of a benchmark question or option."""

    name = "🧪 benchmark overlap"
    batch_size = 256

    def __init__(self, quarantine_dir, stage: str, index_path: Path, segmentation: dict[str, str]):
        super().__init__(quarantine_dir, stage)
        self.index_path = Path(index_path)
        self.segmentation = segmentation
        self._index: NgramIndex | None = None

    def check_batch(self, docs: list[Document]) -> list[Rejection | None]:
        if self._index is None:
            self._index = NgramIndex.load(self.index_path)
        segmentations = [self.segmentation.get(d.metadata["language"], "space") for d in docs]
        tokens = [segment(d.text, s) for d, s in zip(docs, segmentations, strict=True)]
        verdicts: list[Rejection | None] = [None] * len(docs)
        for segmentation in sorted(set(segmentations)):
            chosen = [i for i, s in enumerate(segmentations) if s == segmentation]
            matches = self._index.find_batch([tokens[i] for i in chosen], segmentation)
            for i, found in zip(chosen, matches, strict=True):
                if found is not None:
                    verdicts[i] = self._rejection(tokens[i], segmentation, *found)
        return verdicts

    def _rejection(
        self, tokens: list[str], segmentation: str, text: BenchmarkText, position: int, length: int
    ) -> Rejection:
        joiner = "" if segmentation == "char" else " "
        shared = joiner.join(tokens[position : position + length])
        if len(shared) > 160:
            shared = shared[:157] + "..."
        self.stat_update(f"matched/{text.benchmark}")
        return Rejection(
            REASON, DETAIL_SEPARATOR.join([text.benchmark, text.item, text.field, f'"{shared}"'])
        )


def validate(cfg, registry) -> None:
    check_configured(cfg.decontam.benchmarks, cfg, "decontam.benchmarks")


def run(ctx: StageContext) -> dict:
    d = ctx.cfg.decontam
    settings = IndexSettings(d.ngram_words, d.ngram_chars, d.min_item_words, d.min_item_chars)
    reads = read_configured(d.benchmarks, ctx.cfg, ctx.registry, "decontam.benchmarks")
    index, benchmark_stats = NgramIndex.build(
        benchmark_texts([item for read in reads for item in read.items]), ctx.registry, settings
    )
    for read in reads:
        benchmark_stats.setdefault(read.name, {"items": 0, "texts": 0, "too_short": 0, "ngrams": 0})
        benchmark_stats[read.name].update(read.summary())
        print(console_line(read))
    summary: dict = {
        "ngram_words": d.ngram_words,
        "ngram_chars": d.ngram_chars,
        "benchmarks": benchmark_stats,
    }
    if not d.benchmarks:
        summary["warning"] = "no benchmarks configured (decontam.benchmarks): nothing was checked"
    readers = ctx.input_readers()
    if not readers:
        return summary | {"removed": [], "removed_by_benchmark": {}}
    ctx.stage_dir.mkdir(parents=True, exist_ok=True)
    index_path = ctx.stage_dir / "benchmark_index.npz"
    index.save(index_path)
    segmentation = {code: lang.segmentation for code, lang in ctx.registry.languages.items()}
    ctx.run_pipeline(
        [
            *readers,
            BenchmarkOverlapFilter(ctx.quarantine_dir, ctx.name, index_path, segmentation),
            RecordWriter(ctx.output_dir),
        ]
    )
    removed = _removed(ctx.quarantine_dir)
    return summary | {
        "removed": removed,
        "removed_by_benchmark": dict(sorted(Counter(r["benchmark"] for r in removed).items())),
    }


def _removed(quarantine_dir: Path) -> list[dict]:
    """What was removed and which benchmark item it matched, sorted by document id."""
    removed = []
    columns = ["id", "language", "quarantine_reason", "quarantine_detail"]
    for path in list_parquet(quarantine_dir):
        for row in read_records(path, columns=columns):
            if row["quarantine_reason"] != REASON:
                continue
            benchmark, item, field, shared = row["quarantine_detail"].split(DETAIL_SEPARATOR, 3)
            removed.append(
                {
                    "id": row["id"],
                    "language": row["language"],
                    "benchmark": benchmark,
                    "item": item,
                    "field": field,
                    "shared_text": shared.strip('"'),
                }
            )
    return sorted(removed, key=lambda r: r["id"])
