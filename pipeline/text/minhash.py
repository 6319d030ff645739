"""MinHash signatures, LSH band keys and normalised-text hashes, vectorised with numpy.

Tokens come from `pipeline.text.segment.segment` (words, or characters for unsegmented scripts). Each
token is hashed once (xxh3); shingle hashes are rolled from token hashes with numpy over all
shingles of a batch of documents, and the `bands * rows` permutations are one multiply-add over a
(permutations x shingles) matrix, reduced per document with `np.minimum.reduceat`. No Python code
runs per shingle.

The permutation family is multiply-add modulo 2**64 with odd random multipliers, keeping the high
32 bits (Dietzfelbinger's multiply-shift scheme): universal, and two numpy operations per entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain

import numpy as np
import xxhash

SIGNATURE_DTYPE = np.uint32
EMPTY_SIGNATURE_VALUE = np.iinfo(SIGNATURE_DTYPE).max  # signature of a document without tokens

_ROLL = np.uint64(0x9E3779B97F4A7C15)  # odd constant that rolls token hashes into a shingle hash
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_CHUNK_ELEMENTS = 1 << 20  # permutations x shingles computed at once (8 MB of uint64: stays in cache)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, in place: spreads every input bit over every output bit."""
    x ^= x >> np.uint64(30)
    x *= _MIX1
    x ^= x >> np.uint64(27)
    x *= _MIX2
    x ^= x >> np.uint64(31)
    return x


def token_hashes(tokens: Sequence[str]) -> np.ndarray:
    """xxh3-64 of each token (the only per-token step, done in C by xxhash)."""
    return np.fromiter(map(xxhash.xxh3_64_intdigest, tokens), dtype=np.uint64, count=len(tokens))


def shingle_hashes(hashes: np.ndarray, ngram: int) -> np.ndarray:
    """Hashes of all `ngram`-token windows of one document's token hashes.

    A document shorter than `ngram` tokens is one shingle (all its tokens), so short texts still
    get a signature; a document without tokens has no shingles.
    """
    n = len(hashes)
    if n == 0:
        return hashes[:0]
    width = min(ngram, n)
    count = n - width + 1
    with np.errstate(over="ignore"):
        rolled = hashes[:count].copy()
        for k in range(1, width):
            rolled *= _ROLL
            rolled += hashes[k : k + count]
    return _mix64(rolled)


def normalized_text_hash(tokens: Sequence[str], text: str, language: str) -> int:
    """Hash of the text after normalisation (lower-cased tokens, no punctuation or spacing), per language.

    A text without any token falls back to its stripped raw form, so two different
    punctuation-only texts are not exact duplicates of each other.
    """
    normalized = " ".join(tokens) if tokens else "\x00" + text.strip()
    return xxhash.xxh3_64_intdigest(f"{language}\x1f{normalized}")


class MinHasher:
    """MinHash signatures and LSH band keys for `bands * rows` permutations of shingle hashes."""

    def __init__(self, ngram: int = 5, bands: int = 14, rows: int = 8, seed: int = 1):
        if min(ngram, bands, rows) < 1:
            raise ValueError(f"ngram, bands and rows must be >= 1 (got {ngram}, {bands}, {rows})")
        self.ngram = ngram
        self.bands = bands
        self.rows = rows
        self.num_perm = bands * rows
        rng = np.random.default_rng(seed)
        self._mul = rng.integers(0, 2**64, size=(self.num_perm, 1), dtype=np.uint64) | np.uint64(1)
        self._add = rng.integers(0, 2**64, size=(self.num_perm, 1), dtype=np.uint64)
        self._band_seed = rng.integers(0, 2**64, size=bands, dtype=np.uint64)

    def shingles(self, token_lists: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """Shingle hashes of a batch of tokenised documents, concatenated, and the count per document.

        Token hashes of the whole batch are rolled into shingle hashes in one pass; windows that
        straddle two documents are dropped. A document shorter than `ngram` tokens has one
        shingle (all its tokens); one without tokens has none.
        """
        lengths = np.fromiter(map(len, token_lists), dtype=np.int64, count=len(token_lists))
        hashes = token_hashes(list(chain.from_iterable(token_lists)))
        starts = np.zeros(len(lengths), dtype=np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        windows = shingle_hashes(hashes, self.ngram) if len(hashes) >= self.ngram else hashes[:0]
        doc_of_window = np.repeat(np.arange(len(lengths)), lengths)[: len(windows)]
        keep = (np.arange(len(windows)) - starts[doc_of_window]) <= lengths[doc_of_window] - self.ngram
        flat = windows[keep]
        counts = np.where(lengths >= self.ngram, lengths - self.ngram + 1, np.minimum(lengths, 1))
        short = np.flatnonzero((lengths > 0) & (lengths < self.ngram))
        if len(short):
            full_before = np.cumsum(np.where(lengths >= self.ngram, counts, 0)) - np.where(
                lengths >= self.ngram, counts, 0
            )
            values = [
                shingle_hashes(hashes[starts[i] : starts[i] + lengths[i]], self.ngram)[0] for i in short
            ]
            flat = np.insert(flat, full_before[short], np.array(values, dtype=np.uint64))
        return flat, counts

    def signatures_of_shingles(self, flat: np.ndarray, counts: np.ndarray) -> np.ndarray:
        out = np.full((len(counts), self.num_perm), EMPTY_SIGNATURE_VALUE, dtype=SIGNATURE_DTYPE)
        docs = np.flatnonzero(counts)
        if len(docs):
            out[docs] = self._minima(flat, counts[docs])
        return out

    def _minima(self, shingles: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Per-document minima of every permutation; `counts` shingles per document (all >= 1)."""
        out = np.empty((len(counts), self.num_perm), dtype=SIGNATURE_DTYPE)
        ends = np.cumsum(counts)
        doc = 0
        while doc < len(counts):  # chunks of whole documents keep the matrix small
            first = ends[doc] - counts[doc]
            last_doc = max(
                doc + 1, int(np.searchsorted(ends, first + _CHUNK_ELEMENTS // self.num_perm, "right"))
            )
            last_doc = min(last_doc, len(counts))
            chunk = shingles[first : ends[last_doc - 1]]
            offsets = ends[doc:last_doc] - counts[doc:last_doc] - first
            with np.errstate(over="ignore"):
                permuted = self._mul * chunk  # (permutations, shingles)
                permuted += self._add
            minima = np.minimum.reduceat(permuted, offsets, axis=1)
            out[doc:last_doc] = (minima >> np.uint64(32)).T
            doc = last_doc
        return out

    def band_keys(self, signatures: np.ndarray, salts: np.ndarray) -> np.ndarray:
        """(documents x bands) uint64 keys: a hash of each band's rows, salted per document.

        The salt is the language's hash, so documents in different languages never share a bucket.
        """
        n = len(signatures)
        keys = np.empty((n, self.bands), dtype=np.uint64)
        sig64 = signatures.astype(np.uint64)
        with np.errstate(over="ignore"):
            for band in range(self.bands):
                key = salts.astype(np.uint64) ^ self._band_seed[band]
                for row in range(band * self.rows, (band + 1) * self.rows):
                    key = _mix64(key * _ROLL + sig64[:, row])
                keys[:, band] = key
        return keys


def unique_per_document(flat: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each document's shingle hashes reduced to sorted unique uint32 values (for exact Jaccard).

    Returns the concatenated values and the new count per document; vectorised over the batch.
    """
    doc = np.repeat(np.arange(len(counts), dtype=np.uint64), counts)
    keys = np.sort((doc << np.uint64(32)) | (flat >> np.uint64(32)))  # by document, then value
    first = np.ones(len(keys), dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    keys = keys[first]
    doc_of_key = (keys >> np.uint64(32)).astype(np.int64)
    return (keys & np.uint64(0xFFFFFFFF)).astype(np.uint32), np.bincount(doc_of_key, minlength=len(counts))


def sorted_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two sorted arrays of unique values."""
    if len(a) == 0 and len(b) == 0:
        return 1.0
    common = np.intersect1d(a, b, assume_unique=True).size
    return common / (len(a) + len(b) - common)


def language_salt(language: str) -> int:
    return xxhash.xxh3_64_intdigest(f"medbabel-dedup-language\x1f{language}")


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Fraction of equal permutation minima, row by row: an unbiased estimate of the Jaccard similarity."""
    return (sig_a == sig_b).mean(axis=-1)


def shingle_set(tokens: Sequence[str], ngram: int) -> set[tuple[str, ...]]:
    """The exact set of token n-grams (short documents: one n-gram of all tokens); for measuring."""
    width = min(ngram, len(tokens))
    if width == 0:
        return set()
    return {tuple(tokens[i : i + width]) for i in range(len(tokens) - width + 1)}


def jaccard(a: set, b: set) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)
