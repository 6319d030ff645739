"""Test helper: small shards in the `pipeline.manifest` layout, written the way the shards stage does."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.manifest import Manifest, ShardFile, file_sha256, shard_relpath, write_manifest
from pipeline.registry import load_registry
from pipeline.schema import RECORD_SCHEMA, empty_record

WORDS = {
    "en": "the patient has fever cough and pain in the chest doctor gives medicine for infection".split(),
    "fr": "le patient a de la fievre et une toux le medecin donne un medicament contre infection".split(),
    "zh": list("病人发烧咳嗽胸口疼痛医生给药治疗感染"),
    "sw": "mgonjwa ana homa na kikohozi daktari anatoa dawa ya maambukizi".split(),
}

# The smallest training settings the training tests share (each adds what it checks).
TINY_TRAIN = dict(
    seq_len=32,
    micro_batch_size=1,
    grad_accum=1,
    lr=3e-3,
    warmup_steps=1,
    eval_batches=2,
    loss_chunk_size=24,
    export_dtype="float32",
)


def sentence(rng: random.Random, language: str, n_words: int) -> str:
    words = WORDS[language]
    sep = "" if language == "zh" else " "
    return sep.join(rng.choice(words) for _ in range(n_words))


def make_rows(language: str, n: int, seed: int = 0, split: str = "train", qa_every: int = 3) -> list[dict]:
    registry = load_registry()
    expert = registry.scheme("family7").expert_for(language)
    family = registry.get(language).family
    rng = random.Random(f"{seed}-{language}-{split}")
    rows = []
    for i in range(n):
        row = dict(
            id=f"{language}-{split}-{i}",
            language=language,
            source="qa" if i % qa_every == 0 else "books",
            source_type="exam" if i % qa_every == 0 else "book",
            origin="original",
            license="CC0",
            family=family,
            expert=expert.name,
            expert_id=expert.id,
            split=split,
        )
        if i % qa_every == 0:
            q, a = sentence(rng, language, 6), sentence(rng, language, 8)
            row["messages"] = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            row["text"] = f"User:{q}\nAssistant:{a}"
        else:
            row["text"] = sentence(rng, language, rng.randint(10, 60))
        rows.append(empty_record(**row))
    return rows


def write_shards(
    shards_dir: Path,
    rows_per_language: dict[str, int],
    valid_rows: int = 4,
    seed: int = 0,
    scheme: str = "family7",
    row_maker=make_rows,
) -> Path:
    """Write train/validation shards for each language plus manifest.json; returns the shards dir.

    `row_maker(language, n, seed, split)` makes each file's records (default `make_rows`)."""
    registry = load_registry()
    files = []
    for language, n in rows_per_language.items():
        family = registry.get(language).family
        for split, count in (("train", n), ("validation", valid_rows)):
            if not count:
                continue
            rows = row_maker(language, count, seed, split)
            rel = shard_relpath(split, family, language, 0)
            path = shards_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pylist(rows, schema=RECORD_SCHEMA), path, row_group_size=16)
            files.append(
                ShardFile(
                    path=rel,
                    split=split,
                    family=family,
                    language=language,
                    rows=len(rows),
                    tokens=sum(len(r["text"]) for r in rows),
                    bytes=path.stat().st_size,
                    sha256=file_sha256(path),
                )
            )
    write_manifest(shards_dir, Manifest(config_hash="test", scheme=scheme, files=files))
    return shards_dir
