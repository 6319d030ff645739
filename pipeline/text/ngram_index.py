"""Benchmark n-gram index for decontamination.

Every benchmark question and option is segmented like the corpus (`pipeline.text.segment`, by the
item's language) and reduced to 64-bit hashes of its n-grams (n words, or n characters for
unsegmented scripts); a text shorter than n but at least `min_item_*` long is indexed whole. A
batch of documents is checked by hashing all of their n-grams of every indexed length at once with
numpy (prefix sums of token hashes times powers of an odd constant, so a window's hash is two
vector operations away), ruling nearly all of them out in a 1 MB presence table and looking the
rest up in one sorted array.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np

from pipeline import atomic
from pipeline.benchmarks import BenchmarkItem
from pipeline.benchmarks.options import canonical_letter
from pipeline.text.minhash import token_hashes
from pipeline.text.segment import segment

_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd, so it has an inverse modulo 2**64
_BASE_INVERSE = np.uint64(pow(int(_BASE), -1, 1 << 64))


@dataclass(frozen=True)
class BenchmarkText:
    benchmark: str
    item: str
    field: str  # question, context, option A, ...
    language: str
    text: str


def benchmark_texts(items: list[BenchmarkItem]) -> list[BenchmarkText]:
    """The texts of benchmark items that a training document must not contain: each question, its
    context passage (PubMedQA's abstract, RuMedDaNet's paragraph) and each option."""
    texts: list[BenchmarkText] = []
    for item in items:
        texts.append(BenchmarkText(item.benchmark, item.id, "question", item.language, item.question))
        if item.context:
            texts.append(BenchmarkText(item.benchmark, item.id, "context", item.language, item.context))
        for label, option in item.options:
            texts.append(
                BenchmarkText(
                    item.benchmark, item.id, f"option {canonical_letter(label)}", item.language, option
                )
            )
    return texts


def window_hashes(hashes: np.ndarray, lengths: list[int]) -> dict[int, np.ndarray]:
    """Position-independent hash of every window of each length (hash[i] covers tokens i..i+n-1)."""
    count = len(hashes)
    if not count:
        return {}
    with np.errstate(over="ignore"):
        powers = _powers(_BASE, count)
        inverse = _powers(_BASE_INVERSE, count)
        prefix = np.concatenate(([np.uint64(0)], np.cumsum(hashes * powers, dtype=np.uint64)))
        return {n: (prefix[n:] - prefix[:-n]) * inverse[: count - n + 1] for n in lengths if n <= count}


_POWER_TABLES: dict[int, np.ndarray] = {}


def _powers(base: np.uint64, count: int) -> np.ndarray:
    """base**0 .. base**(count-1) modulo 2**64 (a slice of a table grown on demand)."""
    table = _POWER_TABLES.get(int(base))
    if table is None or len(table) < count:
        steps = np.full(max(count, 4096, 2 * len(table) if table is not None else 0), base, dtype=np.uint64)
        steps[0] = 1
        table = _POWER_TABLES[int(base)] = np.cumprod(steps, dtype=np.uint64)
    return table[:count]


@dataclass(frozen=True)
class IndexSettings:
    ngram_words: int
    ngram_chars: int
    min_item_words: int
    min_item_chars: int

    def lengths_for(self, segmentation: str) -> tuple[int, int]:
        """(n, shortest text indexed whole) for a segmentation."""
        if segmentation == "char":
            return self.ngram_chars, self.min_item_chars
        return self.ngram_words, self.min_item_words


_PRESENCE_BITS = 20


def _presence_slot(hashes: np.ndarray) -> np.ndarray:
    return (hashes >> np.uint64(64 - _PRESENCE_BITS)).astype(np.intp)


def _tag(hashes: np.ndarray, length: int) -> np.ndarray:
    """Mix the window length into its hashes, so windows of every length share one sorted array."""
    return hashes ^ np.uint64(length * int(_BASE) % (1 << 64))


class NgramIndex:
    """One sorted array of length-tagged n-gram hashes, each pointing at the benchmark text it came from.

    `lengths[segmentation]` are the window lengths a document of that segmentation is checked at: a
    space-segmented document against the word n-grams, a character-segmented one against both (the
    char segmenter keeps Latin words whole, so an English question quoted in Chinese text is found).
    """

    def __init__(
        self, keys: np.ndarray, refs: np.ndarray, lengths: dict[str, list[int]], texts: list[BenchmarkText]
    ):
        self.keys = keys
        self.refs = refs
        self.lengths = lengths
        self.texts = texts
        # a 1 MB presence table over the keys' top bits: nearly every window is ruled out by one
        # lookup there, and only the few that pass are binary-searched in `keys`
        self._maybe = np.zeros(1 << _PRESENCE_BITS, dtype=bool)
        self._maybe[_presence_slot(keys)] = True

    @classmethod
    def build(cls, texts: list[BenchmarkText], registry, settings: IndexSettings) -> tuple[NgramIndex, dict]:
        """The index and, per benchmark, how many texts were indexed, too short, and n-grams."""
        parts: list[tuple[np.ndarray, int]] = []
        lengths: dict[str, set[int]] = {"space": set(), "char": set()}
        stats: dict[str, dict[str, int]] = {}
        for ref, text in enumerate(texts):
            segmentation = registry.get(text.language).segmentation
            n, shortest = settings.lengths_for(segmentation)
            tokens = segment(text.text, segmentation)
            entry = stats.setdefault(text.benchmark, {"items": 0, "texts": 0, "too_short": 0, "ngrams": 0})
            entry["texts"] += 1
            if text.field == "question":
                entry["items"] += 1
            length = n if len(tokens) >= n else len(tokens)
            if length < shortest:
                entry["too_short"] += 1
                continue
            parts.append((_tag(window_hashes(token_hashes(tokens), [length])[length], length), ref))
            lengths[segmentation].add(length)
            entry["ngrams"] += len(parts[-1][0])
        keys = np.concatenate([h for h, _ in parts]) if parts else np.zeros(0, np.uint64)
        refs = (
            np.concatenate([np.full(len(h), r, dtype=np.int32) for h, r in parts])
            if parts
            else np.zeros(0, np.int32)
        )
        order = np.argsort(keys, kind="stable")
        checked = {"space": sorted(lengths["space"]), "char": sorted(lengths["space"] | lengths["char"])}
        return cls(keys[order], refs[order], checked, texts), stats

    def find(self, tokens: list[str], segmentation: str = "space") -> tuple[BenchmarkText, int, int] | None:
        """The first benchmark text sharing an n-gram with `tokens`: (text, position, length)."""
        return self.find_batch([tokens], segmentation)[0]

    def find_batch(
        self, token_lists: list[list[str]], segmentation: str = "space"
    ) -> list[tuple[BenchmarkText, int, int] | None]:
        """`find` for many documents of one segmentation at once: their tokens are hashed and their
        windows rolled as one sequence (windows straddling two documents are dropped), so numpy runs
        a few times per batch rather than per document."""
        found: list[tuple[BenchmarkText, int, int] | None] = [None] * len(token_lists)
        lengths = [n for n in self.lengths.get(segmentation, []) if n > 0]
        if not len(self.keys) or not lengths:
            return found
        sizes = np.fromiter(map(len, token_lists), dtype=np.int64, count=len(token_lists))
        starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        hashes = token_hashes(list(chain.from_iterable(token_lists)))
        doc_of_token = np.repeat(np.arange(len(token_lists)), sizes)
        best: dict[int, tuple[int, int, int]] = {}  # doc -> (position, -length, ref): earliest, then longest
        for n, windows in window_hashes(hashes, lengths).items():
            tagged = _tag(windows, n)
            candidates = np.flatnonzero(self._maybe[_presence_slot(tagged)])
            if not len(candidates):
                continue
            slots = np.minimum(np.searchsorted(self.keys, tagged[candidates]), len(self.keys) - 1)
            hit = self.keys[slots] == tagged[candidates]
            for start, slot in zip(candidates[hit].tolist(), slots[hit].tolist(), strict=True):
                doc = int(doc_of_token[start])
                position = start - int(starts[doc])
                if position + n > sizes[doc]:
                    continue  # the window runs into the next document
                candidate = (position, -n, int(self.refs[slot]))
                if doc not in best or candidate < best[doc]:
                    best[doc] = candidate
        for doc, (position, negative_length, ref) in best.items():
            found[doc] = (self.texts[ref], position, -negative_length)
        return found

    def save(self, path: Path) -> None:
        meta = {"lengths": self.lengths, "texts": [t.__dict__ for t in self.texts]}
        with atomic.atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, keys=self.keys, refs=self.refs, meta=np.array(json.dumps(meta)))

    @classmethod
    def load(cls, path: Path) -> NgramIndex:
        with np.load(path) as data:
            meta = json.loads(str(data["meta"]))
            texts = [BenchmarkText(**t) for t in meta["texts"]]
            return cls(data["keys"], data["refs"], meta["lengths"], texts)
