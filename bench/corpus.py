"""Benchmark corpus: paragraph-length multilingual documents from TICO-19 with planted duplicates.

Every original document is 4-8 random sentences of one language (TICO-19 sentences of the 14
registry languages it has). Some originals get planted copies, which form a *family* with them:

* exact copies: the same words with case, spacing and punctuation changed;
* near copies: 1-12 word edits (substitution with another word of the language, deletion,
  insertion) on the segmented words, so word-5-gram Jaccard with the original spreads from about
  0.4 to 0.97;
* translations: the same TICO sentence indices in another language (never duplicates).

Ground truth for dedup is exact Jaccard on word 5-grams (`pipeline.text.minhash.shingle_set` over
`pipeline.text.segment.segment`). Two documents of different families share no planted text; they can
only reach a high Jaccard by drawing nearly the same sentences in the same order, and
`cross_family_high_jaccard_pairs` checks that this does not happen (pairs sharing a consecutive
sentence pair are compared exactly).

The corpus is written as record Parquet files (a fake `collect` output) with a sidecar
`truth.parquet` (id, family, kind, sentence ids) and cached under `bench/.cache/`.
"""

from __future__ import annotations

import gzip
import json
import random
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import atomic
from pipeline.registry import Registry, UnknownLanguageError
from pipeline.schema import RECORD_SCHEMA
from pipeline.text.segment import segment

CACHE = Path(__file__).resolve().parent / ".cache"
FORMAT_VERSION = 2
COPY_FRACTION = 0.12  # share of documents that are planted copies
EXACT_SHARE = 0.2  # of planted copies, how many are exact (normalised) duplicates
TRANSLATION_FRACTION = 0.03
MAX_EDITS = 12


def load_sentences(tico_path: Path, registry: Registry) -> dict[str, list[str]]:
    """TICO-19 sentences per registry language, in corpus order (index i is parallel across languages)."""
    out: dict[str, list[str]] = defaultdict(list)
    with gzip.open(tico_path, "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            try:
                code = registry.normalize_code(row["lang"])
            except UnknownLanguageError:
                continue
            out[code].append(row["text"].strip())
    return dict(out)


def _edit(rng: random.Random, tokens: list[str], edits: int, vocabulary: list[str]) -> list[str]:
    tokens = list(tokens)
    for _ in range(edits):
        if len(tokens) < 6:
            break
        pos = rng.randrange(len(tokens))
        kind = rng.random()
        if kind < 0.6:
            tokens[pos] = rng.choice(vocabulary)
        elif kind < 0.8:
            del tokens[pos]
        else:
            tokens.insert(pos, rng.choice(vocabulary))
    return tokens


def build_corpus(
    out_dir: Path,
    tico_path: Path,
    registry: Registry,
    n_docs: int,
    seed: int = 0,
    files: int = 8,
) -> Path:
    """Write `n_docs` records as `files` Parquet files under `out_dir/output` (+ truth.parquet)."""
    rng = random.Random(seed)
    sentences = load_sentences(tico_path, registry)
    usable = {
        lang: [i for i, s in enumerate(sents) if s and s != "{NS}"] for lang, sents in sentences.items()
    }
    languages = sorted(usable)
    vocab = {
        lang: sorted(
            {t for i in usable[lang] for t in segment(sentences[lang][i], registry.get(lang).segmentation)}
        )
        for lang in languages
    }
    join = {lang: "" if registry.get(lang).segmentation == "char" else " " for lang in languages}
    ids, texts, langs, families, kinds, sentence_ids = [], [], [], [], [], []
    originals: list[int] = []

    def add(text: str, lang: str, family: int, kind: str, sent: list[int]) -> None:
        ids.append(f"bench-{len(ids):08d}")
        texts.append(text)
        langs.append(lang)
        families.append(family)
        kinds.append(kind)
        sentence_ids.append(sent)

    while len(ids) < n_docs:
        r = rng.random()
        if originals and r < COPY_FRACTION:
            source = originals[rng.randrange(len(originals))]
            lang, family = langs[source], families[source]
            if rng.random() < EXACT_SHARE:
                text = (
                    texts[source].upper() if rng.random() < 0.5 else "  ".join(texts[source].split()) + " ."
                )
                add(text, lang, family, "exact_copy", sentence_ids[source])
            else:
                tokens = segment(texts[source], registry.get(lang).segmentation)
                edited = _edit(rng, tokens, rng.randint(1, MAX_EDITS), vocab[lang])
                add(join[lang].join(edited), lang, family, "near_copy", sentence_ids[source])
        elif originals and r < COPY_FRACTION + TRANSLATION_FRACTION:
            source = originals[rng.randrange(len(originals))]
            others = [lang for lang in languages if lang != langs[source]]
            lang = rng.choice(others)
            sent = [i for i in sentence_ids[source] if sentences[lang][i] and sentences[lang][i] != "{NS}"]
            if len(sent) < 2:
                continue
            add(" ".join(sentences[lang][i] for i in sent), lang, len(ids), "translation", sent)
        else:
            lang = rng.choice(languages)
            sent = rng.sample(usable[lang], rng.randint(4, 8))
            originals.append(len(ids))
            add(" ".join(sentences[lang][i] for i in sent), lang, len(ids), "original", sent)

    out_dir = Path(out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    (out_dir / "output").mkdir(parents=True)
    n = len(ids)
    for f in range(files):
        sel = slice(f * n // files, (f + 1) * n // files)
        columns = {
            "id": pa.array(ids[sel]),
            "text": pa.array(texts[sel]),
            "language": pa.array(langs[sel]),
            "source": pa.array(["tico19"] * len(ids[sel])),
            "source_type": pa.array(["paper"] * len(ids[sel])),
            "origin": pa.array(["original"] * len(ids[sel])),
            "license": pa.array(["CC0-1.0"] * len(ids[sel])),
        }
        rows = len(ids[sel])
        table = pa.table(
            [columns.get(field.name, pa.nulls(rows, field.type)) for field in RECORD_SCHEMA],
            schema=RECORD_SCHEMA,
        )
        pq.write_table(table, out_dir / "output" / f"{f:05d}.parquet", compression="zstd")
    pq.write_table(
        pa.table(
            {
                "id": ids,
                "language": langs,
                "family": np.array(families, dtype=np.int64),
                "kind": kinds,
                "sentences": pa.array(sentence_ids, type=pa.list_(pa.int32())),
            }
        ),
        out_dir / "truth.parquet",
    )
    atomic.write_json(out_dir / ".done", {"n_docs": n, "seed": seed, "version": FORMAT_VERSION})
    return out_dir


def cached_corpus(tico_path: Path, registry: Registry, n_docs: int, seed: int = 0, files: int = 8) -> Path:
    """The corpus for (n_docs, seed), built once under bench/.cache/."""
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / ".gitignore").write_text("*\n")  # the cache never enters the repository
    out_dir = CACHE / f"corpus-{n_docs}-{seed}-{files}"
    marker = out_dir / ".done"
    if marker.exists() and json.loads(marker.read_text()).get("version") == FORMAT_VERSION:
        return out_dir
    return build_corpus(out_dir, tico_path, registry, n_docs, seed, files)
