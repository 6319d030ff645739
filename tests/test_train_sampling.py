"""Priority sampling as the original: a weighted shuffle without replacement, higher weight earlier."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.train_shards import write_shards

from moe_train.data import DocumentTokenizer
from moe_train.sampling import DataSelection, WeightedShuffleStream, open_stream
from pipeline.text.tokenizer import load_tokenizer

# The original's scheme on the test shards: source "qa" (every third row) weight 16 seen once per epoch,
# "books" weight 2 seen twice (FreedomIntelligence/ApolloMoE,
# src/prepare/data_process_train_prodata_qwen2_language_family.py: data_priority, data_epoch).
WEIGHTS = {"qa": 16.0, "books": 2.0}
REPEATS = {"books": 2.0}
EPOCHS = 40


@pytest.fixture(scope="module")
def doc_tokenizer():
    return DocumentTokenizer(load_tokenizer())


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return write_shards(tmp_path_factory.mktemp("sampling") / "shards", {"en": 24, "fr": 12, "zh": 12})


def selection(shards, **kw) -> DataSelection:
    defaults = dict(source_priorities=WEIGHTS, source_repeats=REPEATS, sampling="weighted_shuffle")
    return DataSelection(shards, **{**defaults, **kw})


class IdSpy:
    """Records the id of every row the stream hands to the tokenizer, in order."""

    def __init__(self, doc_tokenizer):
        self.inner = doc_tokenizer
        self.ids: list[str] = []

    def documents(self, rows):
        self.ids.extend(r["id"] for r in rows)
        return self.inner.documents(rows)


def is_qa(row_id: str) -> bool:
    return int(row_id.split("-")[-1]) % 3 == 0  # train_shards.make_rows: every third row is "qa"


def mean_relative_position(is_heavy: np.ndarray) -> float:
    """Mean position (0 = first, 1 = last) of the heavy items in one shuffled order."""
    return float(np.flatnonzero(is_heavy).mean() / (len(is_heavy) - 1))


def reference_positions(n_heavy: int, n_light: int, runs: int) -> np.ndarray:
    """The original sampler: torch.multinomial(weights, n, replacement=False) over every item."""
    weights = torch.tensor([WEIGHTS["qa"]] * n_heavy + [WEIGHTS["books"]] * n_light, dtype=torch.double)
    out = []
    for seed in range(runs):
        order = torch.multinomial(weights, len(weights), False, generator=torch.Generator().manual_seed(seed))
        out.append(mean_relative_position((order < n_heavy).numpy()))
    return np.array(out)


def test_weighted_shuffle_matches_multinomial_without_replacement(shards, doc_tokenizer):
    spy = IdSpy(doc_tokenizer)
    stream = WeightedShuffleStream(selection(shards), spy, epochs=EPOCHS)
    for _ in stream:
        pass
    per_epoch = len(spy.ids) // EPOCHS
    assert per_epoch * EPOCHS == len(spy.ids)
    ours = []
    for e in range(EPOCHS):
        ids = spy.ids[e * per_epoch : (e + 1) * per_epoch]
        qa = [i for i in ids if is_qa(i)]
        books = [i for i in ids if not is_qa(i)]
        assert len(qa) == len(set(qa)) == 16  # weight 16, once per epoch
        assert len(books) == 64 and len(set(books)) == 32  # weight 2, twice per epoch
        ours.append(mean_relative_position(np.array([is_qa(i) for i in ids])))
    ours = np.array(ours)
    reference = reference_positions(16, 64, runs=2000)
    assert ours.mean() < 0.4  # higher weight earlier in expectation (uniform would be 0.5)
    tolerance = 4 * np.sqrt(reference.var() / len(ours) + reference.var() / len(reference))
    assert abs(ours.mean() - reference.mean()) < tolerance
    assert abs(ours.std() - reference.std()) < 0.5 * reference.std()  # the same spread of orders
    assert len(set(map(tuple, np.split(np.array(spy.ids), EPOCHS)))) == EPOCHS  # a new order each epoch


def test_weighted_shuffle_is_deterministic_and_seeded(shards, doc_tokenizer):
    def first_epoch(seed):
        spy = IdSpy(doc_tokenizer)
        list(WeightedShuffleStream(selection(shards, seed=seed), spy, epochs=1))
        return spy.ids

    assert first_epoch(0) == first_epoch(0)
    assert first_epoch(0) != first_epoch(1)


def test_weighted_shuffle_resumes_exactly_mid_epoch_and_across_epochs(shards, doc_tokenizer):
    full = IdSpy(doc_tokenizer)
    list(WeightedShuffleStream(selection(shards), full, epochs=3))
    for cut in (1, 37, 80, 81, 150):  # 80 items per epoch
        head = IdSpy(doc_tokenizer)
        stream = WeightedShuffleStream(selection(shards), head, epochs=3)
        for _ in range(cut):
            next(stream)
        state = json.loads(json.dumps(stream.state()))
        tail = IdSpy(doc_tokenizer)
        list(WeightedShuffleStream(selection(shards), tail, epochs=3, state=state))
        assert head.ids + tail.ids == full.ids


def test_open_stream_picks_the_mode_and_phases_keep_their_order(shards, doc_tokenizer):
    phases = open_stream(DataSelection(shards, source_priorities={"exam": 1.0}), doc_tokenizer, epochs=1)
    assert type(phases).__name__ == "DocumentStream"
    spy = IdSpy(doc_tokenizer)
    list(open_stream(DataSelection(shards, source_priorities={"exam": 1.0}), spy, epochs=1))
    assert all(is_qa(i) for i in spy.ids[-16:])  # phases: the higher priority comes *last*
    glob = IdSpy(doc_tokenizer)
    list(open_stream(selection(shards, source_priorities={"q*": 16.0, "*": 2.0}), glob, epochs=1))
    keyed = IdSpy(doc_tokenizer)
    list(open_stream(selection(shards), keyed, epochs=1))
    assert glob.ids == keyed.ids  # glob keys give the same weights as the names
