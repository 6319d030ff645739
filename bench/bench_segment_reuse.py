"""Segment again, or carry the words? The design choice behind "one segmentation per stage".

Dedup, quality and decontam each need a document's words. Instead of segmenting in each stage,
dedup could store the words in a list<string> column that later stages read back. That pays only
if moving the column across the stage boundaries between them costs less than segmenting again.
This script measures both on the same benchmark documents, on one core:

* segment: `pipeline.text.segment.segment` over every document (what each stage does now);
* one boundary: the words to an Arrow column, written as zstd Parquet, read back and turned into
  Python lists (what every stage in between, and the consumer, would pay).

From dedup the words would cross langid and families before quality reads them: three boundaries.
Prints a table and writes bench/results/segment_reuse.json.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_curation import TICO, load_docs  # noqa: E402
from corpus import cached_corpus  # noqa: E402
from provenance import write_result  # noqa: E402

from pipeline.registry import load_registry  # noqa: E402
from pipeline.text.segment import segment  # noqa: E402

BOUNDARIES_DEDUP_TO_QUALITY = 3  # langid, families (read and write the column), quality (reads it)


def one_boundary(words: list[list[str]]) -> list[list[str]]:
    """The words through one stage boundary: Arrow column, zstd Parquet, read back, Python lists."""
    buffer = io.BytesIO()
    pq.write_table(
        pa.table({"words": pa.array(words, type=pa.list_(pa.string()))}), buffer, compression="zstd"
    )
    buffer.seek(0)
    return pq.read_table(buffer)["words"].to_pylist()


def measure(docs: int, rounds: int, corpus_docs: int = 100_000) -> dict:
    registry = load_registry()
    segmentation = {code: lang.segmentation for code, lang in registry.languages.items()}
    rows = load_docs(cached_corpus(TICO, registry, corpus_docs), docs)  # the curation bench corpus
    texts = [(row["text"], segmentation.get(row["language"], "space")) for row in rows]
    seg_times, boundary_times = [], []
    for _ in range(rounds):  # interleaved: a noisy neighbour hits both alike; the fastest counts
        start = time.perf_counter()
        words = [segment(text, how) for text, how in texts]
        seg_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        back = one_boundary(words)
        boundary_times.append(time.perf_counter() - start)
        assert back == words
    seg, boundary = min(seg_times), min(boundary_times)
    return {
        "docs": len(texts),
        "rounds": rounds,
        "segment_seconds": round(seg, 3),
        "one_boundary_seconds": round(boundary, 3),
        "boundaries_dedup_to_quality": BOUNDARIES_DEDUP_TO_QUALITY,
        "carry_to_quality_seconds": round(BOUNDARIES_DEDUP_TO_QUALITY * boundary, 3),
        "carrying_pays": BOUNDARIES_DEDUP_TO_QUALITY * boundary < seg,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--corpus-docs", type=int, default=100_000, help="benchmark corpus the documents come from"
    )
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "results" / "segment_reuse.json"
    )
    args = parser.parse_args(argv)
    if not TICO.exists():
        print(f"shared data not found: {TICO}", file=sys.stderr)
        return 2
    result = measure(args.docs, args.rounds, args.corpus_docs)
    print(f"{'measure':<52}{'seconds':>10}")
    print(f"{'segment every document again (one stage)':<52}{result['segment_seconds']:>10.3f}")
    print(f"{'words column through one stage boundary':<52}{result['one_boundary_seconds']:>10.3f}")
    print(
        f"{'words column from dedup to quality (3 boundaries)':<52}{result['carry_to_quality_seconds']:>10.3f}"
    )
    print(f"carrying the words pays: {result['carrying_pays']}  ({result['docs']:,} documents)")
    write_result(result, "bench_segment_reuse.py", argv, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
