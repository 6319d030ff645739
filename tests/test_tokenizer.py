"""The curation stages' token counter must count exactly what the Qwen2 tokenizer produces."""

from __future__ import annotations

import gzip
import json
from collections import defaultdict

import pytest
from tokenizers import Tokenizer

from pipeline.text.tokenizer import Qwen2TokenCounter, qwen2_token_counter, qwen2_tokenizer_dir


@pytest.fixture(scope="module")
def reference() -> Tokenizer:
    return Tokenizer.from_file(str(qwen2_tokenizer_dir() / "tokenizer.json"))


def reference_counts(reference: Tokenizer, texts: list[str]) -> list[int]:
    return [len(e.ids) for e in reference.encode_batch(texts, add_special_tokens=False)]


@pytest.mark.slow
def test_counts_equal_the_tokenizers_library_on_every_tico_language(reference, shared_data):
    by_language: dict[str, list[str]] = defaultdict(list)
    with gzip.open(shared_data / "tico19_health_sentences.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            by_language[row["lang"]].append(row["text"])
    assert len(by_language) >= 30
    counter = qwen2_token_counter()
    for language, sentences in sorted(by_language.items()):
        # whole sentences, and paragraphs of them joined by newlines (the pre-tokenizer's newline rules)
        texts = sentences[:150] + ["\n".join(sentences[i : i + 6]) for i in range(0, 150, 6)]
        ours = counter.count_batch(texts)
        theirs = reference_counts(reference, texts)
        mismatches = [t for t, a, b in zip(texts, ours, theirs, strict=True) if a != b]
        assert not mismatches, (
            f"{language}: {len(mismatches)} texts counted differently, e.g. {mismatches[0]!r}"
        )


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "\n\n\n",
        "  leading and trailing spaces  ",
        "tabs\tand\r\nwindows line ends\r\n",
        "It's, we'LL, they'VE: contractions in any case",
        "1234567890 digits split one by one; 3.14159",
        "emoji 🩺💊🧬 and symbols ©®™ ∑∆ √2",
        "decomposed e\u0301 vs composed é (NFC makes them equal)",
        "Hangul jamo \u1100\u1161\u11a8 compose under NFC",
        "User:what is fever?\nAssistant:a raised temperature<|endoftext|>",
        "<|im_start|>user\nhi<|im_end|>\n<think>hmm</think><tool_call>{}</tool_call>",
        "a lone <| and |> are plain text, as is <tool_call without its end",
        "null \x00 and control \x07 characters",
        "mixed scripts: русский العربية हिन्दी 中文 日本語 ไทย ພາສາລາວ",
    ],
)
def test_counts_equal_the_tokenizers_library_on_edge_cases(reference, text):
    assert qwen2_token_counter().count(text) == reference_counts(reference, [text])[0]


@pytest.mark.slow
def test_a_tokenizer_of_another_kind_is_refused_with_the_file_named(tmp_path):
    spec = json.loads((qwen2_tokenizer_dir() / "tokenizer.json").read_text(encoding="utf-8"))
    spec["normalizer"] = None
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    with pytest.raises(ValueError, match="tokenizer.json: not a Qwen2-style tokenizer"):
        Qwen2TokenCounter(path)


@pytest.mark.slow
def test_a_tokenizer_whose_merges_are_out_of_id_order_is_refused(tmp_path):
    spec = json.loads((qwen2_tokenizer_dir() / "tokenizer.json").read_text(encoding="utf-8"))
    merges = spec["model"]["merges"]
    merges[10], merges[11] = merges[11], merges[10]
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    with pytest.raises(ValueError, match="merges are not in token-id order"):
        Qwen2TokenCounter(path)
