"""Whole-example packing: chat examples never split across rows, over-long ones truncated or skipped."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from helpers.train_shards import make_rows, sentence, write_shards

from moe_train.data import DocumentTokenizer, manifest_languages
from moe_train.loss import IGNORE_INDEX
from moe_train.packing import SequencePacker
from moe_train.sampling import DataSelection, DocumentStream
from pipeline.text.tokenizer import load_tokenizer

SEQ_LEN = 96


def mixed_rows(language: str, n: int, seed: int, split: str) -> list[dict]:
    """Chat rows from a few tokens to well past SEQ_LEN (some prompts alone fill a row) and text rows."""
    rows = make_rows(language, n, seed, split, qa_every=2)
    rng = random.Random(f"mixed-{seed}-{language}-{split}")
    for i, row in enumerate(rows):
        if row["messages"] is not None:
            q_words = rng.choice([3, 8, 20, 40, 140]) if i % 10 else 150  # 150 words: a prompt > SEQ_LEN
            a_words = rng.choice([2, 10, 30, 60, 120])
            q, a = sentence(rng, language, q_words), sentence(rng, language, a_words)
            row["messages"] = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        else:
            row["text"] = sentence(rng, language, rng.choice([5, 30, 90, 200]))
    return rows


@pytest.fixture(scope="module")
def doc_tokenizer():
    return DocumentTokenizer(load_tokenizer())


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return write_shards(
        tmp_path_factory.mktemp("mixed") / "shards", {"en": 60, "fr": 40, "sw": 30}, row_maker=mixed_rows
    )


def pack_epoch(shards, doc_tokenizer, **packing):
    stream = DocumentStream(DataSelection(shards), doc_tokenizer, epochs=1)
    packer = SequencePacker(stream, SEQ_LEN, manifest_languages(shards), doc_tokenizer.eos_id, **packing)
    return list(packer), packer


def epoch_documents(shards, doc_tokenizer):
    return list(DocumentStream(DataSelection(shards), doc_tokenizer, epochs=1))


def segments(row):
    start = 0
    for length in row.doc_lengths:
        yield row.input_ids[start : start + length].tolist(), row.labels[start : start + length].tolist()
        start += length


def test_no_chat_example_is_split_and_every_trained_token_follows_its_whole_prompt(shards, doc_tokenizer):
    rows, packer = pack_epoch(shards, doc_tokenizer)
    chat_docs = [d for d in epoch_documents(shards, doc_tokenizer) if d.kind == "chat"]
    assert any(len(d.tokens) > SEQ_LEN for d in chat_docs)  # the corpus has over-long examples
    assert any(d.prompt_len >= SEQ_LEN for d in chat_docs)  # and prompts that fill a whole row
    placed = []
    for row in rows:
        assert len(row.input_ids) == SEQ_LEN and sum(row.doc_lengths) == SEQ_LEN
        for tokens, labels in segments(row):
            # a chat segment is the start of exactly one chat example: its whole prompt, then its answer
            owners = [d for d in chat_docs if d.tokens[: d.prompt_len] == tokens[: d.prompt_len]]
            if not owners:
                continue
            doc = owners[0]
            assert len(tokens) >= doc.prompt_len
            assert tokens == doc.tokens[: len(tokens)]
            assert all(label == IGNORE_INDEX for label in labels[: doc.prompt_len - 1])
            assert any(label != IGNORE_INDEX for label in labels)
            placed.append((doc, len(tokens)))
    stats = packer.stats
    fitting = [d for d in chat_docs if len(d.tokens) <= SEQ_LEN]
    truncatable = [d for d in chat_docs if len(d.tokens) > SEQ_LEN and d.prompt_len < SEQ_LEN]
    hopeless = [d for d in chat_docs if d.prompt_len >= SEQ_LEN]
    assert len(placed) == stats.chat_examples == len(fitting) + len(truncatable)
    assert stats.truncated == len(truncatable) > 0
    assert stats.skipped == len(hopeless) > 0
    assert sorted(n for d, n in placed if len(d.tokens) > SEQ_LEN) == [SEQ_LEN] * len(truncatable)
    assert stats.trained_without_prompt == 0
    assert stats.continued > 0 and stats.trained_in_continuations > 0  # plain text may continue
    summary = stats.summary()
    assert summary["trained_without_prompt_share"] == 0.0
    assert 0 < summary["padding_share"] < 1
    assert summary["padding"] == sum(int((r.language_ids < 0).sum()) for r in rows)
    json.dumps(summary)


def test_split_packing_trains_answers_without_their_prompt(shards, doc_tokenizer):
    """The measurement the issue started from: splitting chat rows leaves trained tokens context-less."""
    _, packer = pack_epoch(shards, doc_tokenizer, chat="split")
    assert packer.stats.trained_without_prompt > 0
    assert packer.stats.truncated == packer.stats.skipped == 0


def test_lookahead_fills_rows_and_zero_lookahead_is_the_originals_rule(shards, doc_tokenizer):
    rows0, strict = pack_epoch(shards, doc_tokenizer, lookahead=0)
    _, filled = pack_epoch(shards, doc_tokenizer, lookahead=8)
    assert filled.stats.padding < strict.stats.padding
    assert filled.stats.trained == strict.stats.trained  # the same tokens, fewer rows
    # lookahead 0: the rows are the stream's documents in order (the original's rule), text continuing
    docs = epoch_documents(shards, doc_tokenizer)
    expected = [d for d in docs if not (d.kind == "chat" and d.prompt_len >= SEQ_LEN)]
    index, emitted = 0, 0
    for row in rows0:
        start = 0
        for length in row.doc_lengths:
            tokens = row.input_ids[start : start + length].tolist()
            padding = (row.language_ids[start : start + length] < 0).all()
            start += length
            if padding:
                continue
            doc = expected[index]
            assert tokens == doc.tokens[emitted : emitted + length]
            emitted += length
            if doc.kind == "chat" or emitted == len(doc.tokens):
                index, emitted = index + 1, 0
    assert index == len(expected)


def test_overlong_skip_and_cross_document_attention(shards, doc_tokenizer):
    _, truncating = pack_epoch(shards, doc_tokenizer)
    rows, skipping = pack_epoch(shards, doc_tokenizer, overlong="skip")
    assert skipping.stats.truncated == 0
    assert skipping.stats.skipped == truncating.stats.skipped + truncating.stats.truncated
    crossed, _ = pack_epoch(shards, doc_tokenizer, cross_document_attention=True)
    for row in crossed:
        filled = int((row.language_ids >= 0).sum())
        assert row.doc_lengths[0] == filled
        assert row.position_ids[:filled].tolist() == list(range(filled))


def test_packer_resumes_exactly_with_waiting_examples(shards, doc_tokenizer):
    languages = manifest_languages(shards)
    packer = SequencePacker(DocumentStream(DataSelection(shards), doc_tokenizer), SEQ_LEN, languages, 0)
    for _ in range(7):
        next(packer)
    state = json.loads(json.dumps(packer.state()))
    assert state["pending"]  # some examples are waiting for a row
    expected = [next(packer) for _ in range(10)]
    stream = DocumentStream(DataSelection(shards), doc_tokenizer, state=state["stream"])
    resumed = SequencePacker(stream, SEQ_LEN, languages, 0, state=state)
    for want in expected:
        got = next(resumed)
        assert np.array_equal(got.input_ids, want.input_ids) and np.array_equal(got.labels, want.labels)
        assert got.doc_lengths == want.doc_lengths
    assert resumed.stats == packer.stats
