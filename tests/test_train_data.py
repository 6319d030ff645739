"""Training data: chat template and loss masks, packing, per-document attention, the resumable stream."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.train_shards import write_shards

from moe_train.data import EOS_TOKEN, DataError, DocumentTokenizer, manifest_languages
from moe_train.loss import IGNORE_INDEX
from moe_train.packing import SequencePacker, collate
from moe_train.sampling import DataSelection, DocumentStream
from pipeline.text.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def doc_tokenizer():
    return DocumentTokenizer(load_tokenizer())


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return write_shards(tmp_path_factory.mktemp("data") / "shards", {"en": 24, "fr": 12, "zh": 12})


def row(**kw):
    base = dict(id="r", language="en", source="s", source_type="exam", expert_id=4, text="")
    base.update(kw)
    return base


def test_chat_rows_train_on_the_answer_and_eos_only(doc_tokenizer):
    tok = doc_tokenizer.tokenizer
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is fever?"},
        {"role": "assistant", "content": "A raised temperature."},
    ]
    doc = doc_tokenizer.documents([row(messages=messages)])[0]

    # template literals and record text are tokenised piecewise, so the mask boundary is exact
    def ids(text):
        return tok(text, add_special_tokens=False)["input_ids"]

    prompt = ids("User:") + ids("Be brief.\nWhat is fever?") + ids("\nAssistant:")
    answer = ids("A raised temperature.")
    eos = tok.convert_tokens_to_ids(EOS_TOKEN)
    assert doc.tokens == prompt + answer + [eos]
    assert (
        tok.decode(doc.tokens)
        == f"User:Be brief.\nWhat is fever?\nAssistant:A raised temperature.{EOS_TOKEN}"
    )
    # label t is token t+1 where that token is trained (answer and eos), else ignored
    expected = [IGNORE_INDEX] * (len(prompt) - 1) + answer + [eos, IGNORE_INDEX]
    assert doc.labels == expected
    assert doc.expert_id == 4 and doc.language == "en"


def test_plain_text_trains_on_every_token_and_control_tokens_are_not_injected(doc_tokenizer):
    tok = doc_tokenizer.tokenizer
    doc = doc_tokenizer.documents([row(text=f"fever {EOS_TOKEN} cough", expert_id=None)])[0]
    eos = tok.convert_tokens_to_ids(EOS_TOKEN)
    assert doc.tokens[-1] == eos and doc.tokens.count(eos) == 1  # the literal in the text is split
    assert doc.labels == doc.tokens[1:] + [IGNORE_INDEX]
    assert doc.expert_id == -1
    assert doc_tokenizer.documents([row(text="  ")]) == [None]


def test_custom_template_and_multi_turn(doc_tokenizer):
    custom = DocumentTokenizer(doc_tokenizer.tokenizer, "<Q>{q}</Q><A>{a}</A>")
    messages = [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": "three"},
        {"role": "assistant", "content": "four"},
    ]
    doc = custom.documents([row(messages=messages)])[0]
    text = custom.tokenizer.decode(doc.tokens)
    assert text == "<Q>one</Q><A>two</A><Q>three</Q><A>four</A>"
    trained = custom.tokenizer.decode([t for t in doc.labels if t != IGNORE_INDEX])
    assert trained == "two</A>four</A>"
    with pytest.raises(DataError, match="must contain"):
        DocumentTokenizer(doc_tokenizer.tokenizer, "{q} only")


def test_split_packing_restarts_positions_and_splits_long_documents(shards, doc_tokenizer):
    """`chat: split` (the packing before whole examples): the rows are the documents, concatenated and cut."""
    stream = DocumentStream(DataSelection(shards), doc_tokenizer)
    reference = DocumentStream(DataSelection(shards), doc_tokenizer)
    packer = SequencePacker(stream, 64, manifest_languages(shards), doc_tokenizer.eos_id, chat="split")
    rows = [next(packer) for _ in range(6)]
    flat_tokens = np.concatenate([r.input_ids for r in rows])
    flat_positions = np.concatenate([r.position_ids for r in rows])
    offset = 0
    while offset < len(flat_tokens):  # the rows are exactly the documents, concatenated and cut
        doc = next(reference)
        n = min(len(doc.tokens), len(flat_tokens) - offset)
        assert flat_tokens[offset : offset + n].tolist() == doc.tokens[:n]
        offset += n
    for r in rows:
        assert len(r.input_ids) == 64 and sum(r.doc_lengths) == 64 and r.position_ids[0] == 0
        starts = np.flatnonzero(r.position_ids == 0)
        assert np.diff(np.append(starts, 64)).tolist() == r.doc_lengths
        assert (r.expert_ids >= 0).all() and (r.language_ids >= 0).all()
    assert (flat_positions == 0).sum() > 6  # several documents per row
    batch = collate(rows[:2])
    assert batch.cu_seqlens.tolist() == [0, *np.cumsum(rows[0].doc_lengths + rows[1].doc_lengths).tolist()]
    assert batch.max_doc_len == max(rows[0].doc_lengths + rows[1].doc_lengths)


def test_no_attention_across_documents_in_a_packed_row():
    """Changing document A's tokens leaves document B's logits unchanged (SDPA with the packing mask)."""
    from test_upcycle import small_dense

    from moe_train.upcycle import upcycle

    model = upcycle(small_dense(), 7).eval()
    positions = torch.tensor([list(range(10)) + list(range(14))])
    tokens = torch.randint(0, 512, (1, 24))
    changed = tokens.clone()
    changed[0, :10] = torch.randint(0, 512, (10,))
    with torch.no_grad():
        a = model(tokens, position_ids=positions, use_cache=False).logits
        b = model(changed, position_ids=positions, use_cache=False).logits
        alone = model(tokens[:, 10:], position_ids=positions[:, 10:], use_cache=False).logits
    torch.testing.assert_close(a[0, 10:], b[0, 10:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a[0, 10:], alone[0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(a[0, :10], b[0, :10])


def test_stream_resumes_exactly_mid_epoch(shards, doc_tokenizer):
    languages = manifest_languages(shards)
    packer = SequencePacker(DocumentStream(DataSelection(shards), doc_tokenizer), 48, languages, 0)
    for _ in range(5):
        next(packer)
    state = packer.state()
    expected = [next(packer) for _ in range(8)]
    stream = DocumentStream(DataSelection(shards), doc_tokenizer, state=state["stream"])
    resumed = SequencePacker(stream, 48, languages, 0, state=state)
    for want in expected:
        got = next(resumed)
        assert got.input_ids.tolist() == want.input_ids.tolist()
        assert got.labels.tolist() == want.labels.tolist()
        assert got.doc_lengths == want.doc_lengths


def _epoch_ids(shards, doc_tokenizer, **selection) -> list[str]:
    ids = []
    tokenize = doc_tokenizer.documents

    def spy(rows):
        ids.extend(r["id"] for r in rows)
        return tokenize(rows)

    doc_tokenizer.documents = spy
    try:
        list(DocumentStream(DataSelection(shards, **selection), doc_tokenizer, epochs=1))
    finally:
        doc_tokenizer.documents = tokenize
    return ids


def test_selection_priorities_and_repeats(shards, doc_tokenizer):
    everything = _epoch_ids(shards, doc_tokenizer)
    assert len(everything) == len(set(everything)) == 48  # each row once per epoch
    assert everything != sorted(everything)  # languages are interleaved, not file by file
    assert everything == _epoch_ids(shards, doc_tokenizer)  # deterministic
    assert _epoch_ids(shards, doc_tokenizer, seed=1) != everything

    french = _epoch_ids(shards, doc_tokenizer, languages=("fr",))
    assert len(french) == 12 and all(i.startswith("fr-") for i in french)
    exams = _epoch_ids(shards, doc_tokenizer, source_types=("exam",))
    assert len(exams) == 16  # every third row of 24 + 12 + 12

    prioritised = _epoch_ids(shards, doc_tokenizer, source_priorities={"exam": 1.0})
    assert sorted(prioritised) == sorted(everything)
    assert {int(i.split("-")[-1]) % 3 for i in prioritised[-16:]} == {0}  # the exam rows come last

    repeated = _epoch_ids(shards, doc_tokenizer, source_repeats={"qa": 2.0, "books": 0.5})
    qa = [i for i in repeated if int(i.split("-")[-1]) % 3 == 0]
    books = [i for i in repeated if int(i.split("-")[-1]) % 3 != 0]
    assert len(qa) == 32 and len(set(qa)) == 16  # twice each
    assert 8 <= len(books) <= 24 and len(set(books)) == len(books)  # about half, once each


def test_missing_manifest_and_empty_selection_are_clear_errors(tmp_path, shards, doc_tokenizer):
    with pytest.raises(FileNotFoundError, match="manifest"):
        DocumentStream(DataSelection(tmp_path), doc_tokenizer)
    with pytest.raises(DataError, match="no shard files"):
        DocumentStream(DataSelection(shards, languages=("de",)), doc_tokenizer)
    with pytest.raises(DataError, match="no usable documents"):
        next(DocumentStream(DataSelection(shards, source_types=("web",)), doc_tokenizer))
