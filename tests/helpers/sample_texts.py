"""Every text of the embedded sample's raw files, keyed by its sample id (for tests on the plants)."""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"


def _jsonl(path: Path) -> Iterator[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def sample_texts() -> Iterator[tuple[str, str, str]]:
    """(sample id, language, text) of every passage, exam item and dialogue of the sample."""
    for name in ("medical_books.jsonl", "web_pages.jsonl", "medical_papers.jsonl.gz"):
        for row in _jsonl(SAMPLE / name):
            text = row.get("text") or row.get("abstract")
            yield (
                row.get("id") or row.get("page_id") or row.get("doc_id"),
                row.get("lang") or row.get("language"),
                text,
            )
    for name, delimiter in (("guidelines.csv", ","), ("general.tsv", "\t")):
        with open(SAMPLE / name, encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh, delimiter=delimiter):
                yield row["id"], row["lang"], row["text"]
    for row in pq.read_table(SAMPLE / "encyclopedia.parquet").to_pylist():
        yield row["id"], row["lang"], row["text"]
    for row in _jsonl(SAMPLE / "exams.jsonl"):
        options = "\n".join(f"({chr(65 + i)}) {o}" for i, o in enumerate(row["options"]))
        yield row["id"], row["lang"], f"User: {row['question']}\n{options}\nAssistant: ({row['answer']})"
    for row in _jsonl(SAMPLE / "dialogues.jsonl"):
        text = "\n".join(
            f"{'User' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in row["messages"]
        )
        yield row["id"], row["lang"], text


def planted(kind: str) -> list[dict]:
    return [p for p in json.loads((SAMPLE / "planted.json").read_text()) if p["kind"] == kind]
