"""A persisted per-language MinHash index of an earlier medbabel corpus, for `dedup.reference`.

New documents that duplicate (exactly, or near by MinHash) a document of the earlier corpus are
removed without re-processing that corpus: its shards are read once, and per language the
normalised-text hashes, MinHash signatures and LSH band keys are written next to them, under
`<reference>/.medbabel-index/n<ngram>-b<bands>-r<rows>-s<seed>/`. Later runs with the same MinHash parameters reuse
the index as long as the shards are unchanged (same files, sizes and modification times); a
change rebuilds it.

Per language the index holds `<lang>.ids.parquet` (id, exact hash), `<lang>.sig` (uint32
signatures, documents x permutations) and `<lang>.bands` (uint64 band keys, documents x bands),
memory-mapped on use. A near match is confirmed by the signatures' Jaccard estimate (the
reference corpus's shingle sets are not kept).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import atomic
from pipeline.text.minhash import MinHasher, estimated_jaccard, language_salt, normalized_text_hash
from pipeline.text.segment import segment

INDEX_DIRNAME = ".medbabel-index"
_COLUMNS = ["id", "text", "language"]
_IDS_SCHEMA = pa.schema([("id", pa.string()), ("exact", pa.uint64())])


class ReferenceError(ValueError):
    """The reference corpus cannot be indexed (missing, no shards, not writable)."""


@dataclass(frozen=True)
class ReferenceMatch:
    reference_id: str
    kind: str  # "exact" | "near"
    similarity: float


def reference_shards(reference: Path) -> list[Path]:
    """The earlier corpus's record files: Parquet files under `reference` with id, text and language."""
    if not reference.is_dir():
        raise ReferenceError(f"dedup.reference: {reference} is not a directory")
    shards = []
    for path in sorted(reference.rglob("*.parquet")):
        relative = path.relative_to(reference)
        if any(part.startswith(".") for part in relative.parts):
            continue  # the index itself, temporary files
        names = set(pq.read_schema(path).names)
        if set(_COLUMNS) <= names:
            shards.append(path)
    if not shards:
        raise ReferenceError(f"dedup.reference: no Parquet shards with columns {_COLUMNS} under {reference}")
    return shards


def _fingerprint(reference: Path, shards: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in shards:
        stat = path.stat()
        digest.update(f"{path.relative_to(reference)}\x1f{stat.st_size}\x1f{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class ReferenceIndex:
    """Build (once) or open the index of `reference`, and look new documents up in it."""

    def __init__(self, reference: Path, minhasher: MinHasher, seed: int, segmentation: dict[str, str]):
        """`minhasher` must be MinHasher(ngram, bands, rows, seed): the index's name records them all."""
        self.reference = Path(reference).resolve()
        self.minhasher = minhasher
        self.segmentation = segmentation
        params = f"n{minhasher.ngram}-b{minhasher.bands}-r{minhasher.rows}-s{seed}"
        self.directory = self.reference / INDEX_DIRNAME / params
        self._languages: dict[str, _LanguageIndex | None] = {}

    @property
    def manifest_path(self) -> Path:
        return self.directory / "manifest.json"

    def manifest(self) -> dict:
        return json.loads(self.manifest_path.read_text())

    def ensure(self) -> dict:
        """Build the index unless an up-to-date one exists; returns its manifest with `reused`."""
        shards = reference_shards(self.reference)
        fingerprint = _fingerprint(self.reference, shards)
        if self.manifest_path.exists():
            manifest = self.manifest()
            if manifest.get("fingerprint") == fingerprint:
                return {**manifest, "reused": True}
        return {**self._build(shards, fingerprint), "reused": False}

    def _build(self, shards: list[Path], fingerprint: str) -> dict:
        """The index of `shards`, published next to them as one directory once it is complete."""
        try:
            with atomic.atomic_dir(self.directory) as tmp:
                return self._write_index(tmp, shards, fingerprint)
        except OSError as exc:
            raise ReferenceError(
                f"dedup.reference: cannot build the index next to the shards: {exc}"
            ) from None

    def _write_index(self, tmp: Path, shards: list[Path], fingerprint: str) -> dict:
        writers: dict[str, tuple] = {}
        ids: dict[str, list] = {}
        exact: dict[str, list] = {}
        try:
            for path in shards:
                for batch in pq.ParquetFile(path).iter_batches(batch_size=1024, columns=_COLUMNS):
                    by_language: dict[str, list[int]] = {}
                    languages = batch.column("language").to_pylist()
                    for i, language in enumerate(languages):
                        by_language.setdefault(language, []).append(i)
                    texts, doc_ids = batch.column("text").to_pylist(), batch.column("id").to_pylist()
                    for language, rows in by_language.items():
                        if language not in writers:
                            writers[language] = (
                                open(tmp / f"{language}.sig", "wb"),  # noqa: SIM115 (closed below)
                                open(tmp / f"{language}.bands", "wb"),  # noqa: SIM115
                            )
                            ids[language], exact[language] = [], []
                        tokens = [segment(texts[i], self.segmentation.get(language, "space")) for i in rows]
                        signatures = self.minhasher.signatures_of_shingles(*self.minhasher.shingles(tokens))
                        salts = np.full(len(rows), language_salt(language), dtype=np.uint64)
                        sig_out, bands_out = writers[language]
                        sig_out.write(signatures.tobytes())
                        bands_out.write(self.minhasher.band_keys(signatures, salts).tobytes())
                        ids[language] += [doc_ids[i] for i in rows]
                        exact[language] += [
                            normalized_text_hash(t, texts[i], language)
                            for t, i in zip(tokens, rows, strict=True)
                        ]
        finally:
            for sig_out, bands_out in writers.values():
                sig_out.close()
                bands_out.close()
        for language in ids:
            table = pa.table(
                {"id": ids[language], "exact": pa.array(exact[language], pa.uint64())}, schema=_IDS_SCHEMA
            )
            pq.write_table(table, tmp / f"{language}.ids.parquet")
        manifest = {
            "reference": str(self.reference),
            "fingerprint": fingerprint,
            "shards": len(shards),
            "languages": {language: len(rows) for language, rows in sorted(ids.items())},
            "ngram": self.minhasher.ngram,
            "bands": self.minhasher.bands,
            "rows": self.minhasher.rows,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        return manifest

    def _language(self, language: str) -> _LanguageIndex | None:
        if language not in self._languages:
            ids_path = self.directory / f"{language}.ids.parquet"
            self._languages[language] = (
                _LanguageIndex(self.directory, language, self.minhasher) if ids_path.exists() else None
            )
        return self._languages[language]

    def lookup(
        self,
        language: str,
        exact_hashes: np.ndarray,
        signatures: np.ndarray,
        band_keys: np.ndarray,
        threshold: float,
    ) -> list[ReferenceMatch | None]:
        """The reference document each new document duplicates (exact first, else the most similar
        near match at or above `threshold`), or None."""
        index = self._language(language)
        if index is None:
            return [None] * len(exact_hashes)
        return index.lookup(exact_hashes, signatures, band_keys, threshold)


class _LanguageIndex:
    def __init__(self, directory: Path, language: str, minhasher: MinHasher):
        table = pq.read_table(directory / f"{language}.ids.parquet")
        self.ids = table.column("id").to_pylist()
        n = len(self.ids)
        exact = table.column("exact").to_numpy()
        self.exact_order = np.argsort(exact, kind="stable")
        self.exact_sorted = exact[self.exact_order]
        self.signatures = _memmap(directory / f"{language}.sig", np.uint32, (n, minhasher.num_perm))
        bands = _memmap(directory / f"{language}.bands", np.uint64, (n, minhasher.bands))
        self.band_order = [np.argsort(bands[:, b], kind="stable") for b in range(minhasher.bands)]
        self.band_sorted = [np.asarray(bands[order, b]) for b, order in enumerate(self.band_order)]

    def lookup(self, exact_hashes, signatures, band_keys, threshold) -> list[ReferenceMatch | None]:
        out: list[ReferenceMatch | None] = []
        for doc, value in enumerate(exact_hashes):
            pos = np.searchsorted(self.exact_sorted, value)
            if pos < len(self.exact_sorted) and self.exact_sorted[pos] == value:
                out.append(ReferenceMatch(self.ids[int(self.exact_order[pos])], "exact", 1.0))
                continue
            candidates = set()
            for band, keys in enumerate(self.band_sorted):
                lo, hi = (
                    np.searchsorted(keys, band_keys[doc, band], "left"),
                    np.searchsorted(keys, band_keys[doc, band], "right"),
                )
                candidates.update(self.band_order[band][lo:hi].tolist())
            if not candidates:
                out.append(None)
                continue
            rows = np.array(sorted(candidates), dtype=np.int64)
            similarity = estimated_jaccard(self.signatures[rows], signatures[doc][None, :])
            best = int(np.argmax(similarity))
            out.append(
                ReferenceMatch(self.ids[int(rows[best])], "near", float(similarity[best]))
                if similarity[best] >= threshold
                else None
            )
        return out


def _memmap(path: Path, dtype, shape: tuple[int, int]) -> np.ndarray:
    if shape[0] == 0:
        return np.empty(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=shape)
