"""Training data: shards -> documents -> packed fixed-length sequences, streamed and resumable.

1. Selection. `manifest.json` (pipeline.manifest) lists the shard files; files are selected by split,
   language and family, rows by source type.
2. Order. One epoch is a sequence of *rounds*. Rows are grouped by priority (`source_priorities`,
   keyed by source name or source type; default 0) and lower priorities come first, so high-priority data
   (say exam QA) is seen at the end of each epoch, as in the paper's priority sampling. A source with
   `source_repeats: r` is seen r times per epoch: in repeat round j a row is used if j < floor(r), or, for
   j = floor(r), if a seeded hash of its id falls under the fraction of r. Within a round the open shard
   files are interleaved by seeded draws weighted by their remaining rows, so languages mix evenly.
   Every draw is a hash of (seed, epoch, round, draw number): the order is deterministic and the stream's
   whole position is a few integers, so training resumes mid-epoch exactly.
3. Documents. `messages` rows are rendered with the chat template (default the paper's
   `User:{q}\\nAssistant:{a}<|endoftext|>`): everything from `{a}` on is trained, the prompt is not.
   Plain-text rows are trained on every token and end with `<|endoftext|>`. Text inside records is
   tokenised with special tokens split, so a record cannot inject control tokens.
4. Packing. Documents are concatenated into rows of exactly `seq_len` tokens; a document that does not
   fit is split and continues in the next row. Position ids restart at 0 at each document (and each row),
   and attention never crosses documents (see moe_train.attention). Each token carries its document's
   family expert id (for hybrid routing) and language index (for per-language validation loss).

Memory is independent of corpus size: one small record batch per open shard file.
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from moe_train.loss import IGNORE_INDEX
from moe_train.routing import NO_EXPERT
from pipeline.manifest import ShardFile, load_manifest, shard_path, verify_shard

EOS_TOKEN = "<|endoftext|>"
READ_BATCH_ROWS = 256
_COLUMNS = ("id", "text", "messages", "language", "source", "source_type", "expert_id")


class DataError(ValueError):
    """The data selection or a record cannot be used for training; the message says which and why."""


@dataclass(frozen=True)
class DataSelection:
    """Which shard rows to train on and how to order them (built from the train config section)."""

    shards_dir: Path
    split: str = "train"
    languages: tuple[str, ...] = ()
    families: tuple[str, ...] = ()
    source_types: tuple[str, ...] = ()
    source_priorities: dict[str, float] = field(default_factory=dict)
    source_repeats: dict[str, float] = field(default_factory=dict)
    seed: int = 0

    def files(self) -> list[ShardFile]:
        manifest = load_manifest(self.shards_dir)
        files = manifest.select(self.split, list(self.languages) or None, list(self.families) or None)
        return sorted((f for f in files if f.rows > 0), key=lambda f: f.path)

    def priority(self, source: str, source_type: str) -> float:
        return self.source_priorities.get(source, self.source_priorities.get(source_type, 0.0))

    def repeats(self, source: str, source_type: str) -> float:
        return self.source_repeats.get(source, self.source_repeats.get(source_type, 1.0))

    def rounds(self) -> list[tuple[float, int]]:
        """(priority, repeat index) of each round of an epoch, in order."""
        priorities = sorted({0.0, *map(float, self.source_priorities.values())})
        n_repeats = max(1, math.ceil(max(self.source_repeats.values(), default=1.0)))
        return [(p, j) for p in priorities for j in range(n_repeats)]


def _uniform(*key: object) -> float:
    """A deterministic uniform number in [0, 1) from a key (counter-based randomness)."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return struct.unpack("<Q", digest)[0] / 2**64


# --------------------------------------------------------------------------------------------------
# Documents


@dataclass
class Document:
    tokens: list[int]
    labels: list[int]  # next-token targets, already shifted; IGNORE_INDEX where not trained
    expert_id: int
    language: str


class DocumentTokenizer:
    """Turns records into Documents with the chat template and loss masks."""

    def __init__(self, tokenizer, chat_template: str = "User:{q}\nAssistant:{a}" + EOS_TOKEN):
        if "{q}" not in chat_template or "{a}" not in chat_template:
            raise DataError(f"chat_template must contain {{q}} and {{a}}: {chat_template!r}")
        if chat_template.index("{q}") > chat_template.index("{a}"):
            raise DataError(f"chat_template must put {{q}} before {{a}}: {chat_template!r}")
        self.tokenizer = tokenizer
        self.eos_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
        if self.eos_id is None or self.eos_id == tokenizer.unk_token_id:
            raise DataError(f"the tokenizer has no {EOS_TOKEN} token")
        pieces = re.split(r"(\{q\}|\{a\})", chat_template)
        literal_ids = self._encode([p for p in pieces if p not in ("{q}", "{a}")], split_special=False)
        self.template: list[tuple[str, list[int]]] = []  # ("q" | "a" | "lit", ids)
        literal_iter = iter(literal_ids)
        for piece in pieces:
            if piece in ("{q}", "{a}"):
                self.template.append((piece[1], []))
            else:
                self.template.append(("lit", next(literal_iter)))

    def _encode(self, texts: list[str], split_special: bool) -> list[list[int]]:
        if not texts:
            return []
        return self.tokenizer(
            texts, add_special_tokens=False, split_special_tokens=split_special, verbose=False
        )["input_ids"]

    def documents(self, rows: list[dict]) -> list[Document | None]:
        """One Document per row (None when a row has no usable text)."""
        # Gather every free-text piece of every row and tokenise them in one batched call.
        texts: list[str] = []
        plans: list[list[tuple[str, int]] | None] = []
        for row in rows:
            turns = _turns(row.get("messages"))
            if turns is None:
                text = row.get("text") or ""
                if not text.strip():
                    plans.append(None)
                    continue
                plans.append([("text", len(texts))])
                texts.append(text)
            elif not turns:
                plans.append(None)
            else:
                plan = []
                for question, answer in turns:
                    plan.append(("q", len(texts)))
                    texts.append(question)
                    plan.append(("a", len(texts)))
                    texts.append(answer)
                plans.append(plan)
        encoded = self._encode(texts, split_special=True)
        docs: list[Document | None] = []
        for row, plan in zip(rows, plans, strict=True):
            if plan is None:
                docs.append(None)
                continue
            tokens: list[int] = []
            trained: list[bool] = []
            if plan[0][0] == "text":
                ids = [*encoded[plan[0][1]], self.eos_id]
                tokens, trained = ids, [True] * len(ids)
            else:
                for turn in range(0, len(plan), 2):
                    q_ids, a_ids = encoded[plan[turn][1]], encoded[plan[turn + 1][1]]
                    in_answer = False
                    for kind, ids in self.template:
                        if kind == "q":
                            ids = q_ids
                        elif kind == "a":
                            ids, in_answer = a_ids, True
                        tokens.extend(ids)
                        trained.extend([in_answer] * len(ids))
            labels = [t if m else IGNORE_INDEX for t, m in zip(tokens[1:], trained[1:], strict=True)] + [
                IGNORE_INDEX
            ]
            expert = row.get("expert_id")
            docs.append(
                Document(tokens, labels, NO_EXPERT if expert is None else int(expert), row["language"])
            )
        return docs


def _turns(messages) -> list[tuple[str, str]] | None:
    """(question, answer) pairs of a messages list; None for a plain-text row.

    System turns are prepended to the next question; a trailing question without answer is dropped.
    """
    if messages is None:
        return None
    turns, pending = [], []
    for message in messages:
        role, content = message.get("role"), message.get("content") or ""
        if role in ("system", "user"):
            pending.append(content)
        elif role == "assistant":
            turns.append(("\n".join(pending), content))
            pending = []
    return turns


# --------------------------------------------------------------------------------------------------
# The resumable document stream


class _ShardCursor:
    """Reads one shard file's rows from a position, a record batch at a time."""

    def __init__(self, shards_dir: Path, shard: ShardFile):
        self.shards_dir = shards_dir
        self.shard = shard
        self.path = shard_path(shards_dir, shard)
        self.rows = shard.rows
        self._verified = False
        self._file: pq.ParquetFile | None = None
        self._buffer: list[dict] = []
        self._buffer_start = 0

    def rows_at(self, position: int) -> list[dict]:
        """The buffered rows starting at `position` (loads the batch that holds it if needed)."""
        offset = position - self._buffer_start
        if not 0 <= offset < len(self._buffer):
            self._load(position)
            offset = 0
        return self._buffer[offset:]

    def _load(self, position: int) -> None:
        if not self._verified:
            verify_shard(self.shards_dir, self.shard)  # size and sha256, before reading a byte
            self._verified = True
        if self._file is None:
            try:
                self._file = pq.ParquetFile(self.path)
            except Exception as exc:
                raise DataError(f"{self.path}: cannot read shard: {exc}") from None
        meta = self._file.metadata
        columns = [c for c in _COLUMNS if c in self._file.schema_arrow.names]
        start = 0
        for group in range(meta.num_row_groups):
            n = meta.row_group(group).num_rows
            if position < start + n:
                table = self._file.read_row_group(group, columns=columns)
                end = min(position - start + READ_BATCH_ROWS, n)
                self._buffer = table.slice(position - start, end - (position - start)).to_pylist()
                self._buffer_start = position
                return
            start += n
        raise DataError(
            f"{self.path}: row {position} is past the end ({start} rows; manifest says {self.rows})"
        )

    def close(self) -> None:
        self._file, self._buffer = None, []


class DocumentStream:
    """Deterministic, resumable stream of Documents over a DataSelection (see module docstring).

    `state()` is a small JSON-able dict; `DocumentStream(..., state=s)` continues right after it.
    """

    def __init__(
        self,
        selection: DataSelection,
        doc_tokenizer: DocumentTokenizer,
        epochs: int | None = None,
        state: dict | None = None,
    ):
        self.selection = selection
        self.doc_tokenizer = doc_tokenizer
        self.epochs = epochs
        self.files = selection.files()
        if not self.files:
            raise DataError(
                f"{selection.shards_dir}: no shard files for split={selection.split!r}, "
                f"languages={list(selection.languages) or 'all'}, families={list(selection.families) or 'all'}"
            )
        self.rounds = selection.rounds()
        state = state or {}
        self.epoch = state.get("epoch", 0)
        self.round = state.get("round", 0)
        self.draws = state.get("draws", 0)
        self.cursors = [state.get("cursors", {}).get(f.path, 0) for f in self.files]
        self._readers = [_ShardCursor(selection.shards_dir, f) for f in self.files]
        self._docs_this_epoch = state.get("docs_this_epoch", 0)

    def state(self) -> dict:
        return {
            "epoch": self.epoch,
            "round": self.round,
            "draws": self.draws,
            "cursors": {f.path: c for f, c in zip(self.files, self.cursors, strict=True) if c},
            "docs_this_epoch": self._docs_this_epoch,
        }

    def __iter__(self) -> Iterator[Document]:
        return self

    def __next__(self) -> Document:
        while True:
            if self.epochs is not None and self.epoch >= self.epochs:
                raise StopIteration
            remaining = [f.rows - c for f, c in zip(self.files, self.cursors, strict=True)]
            total = sum(remaining)
            if total == 0:
                self._next_round()
                continue
            u = _uniform(self.selection.seed, self.epoch, self.round, self.draws)
            self.draws += 1
            index = _weighted_pick(remaining, u * total)
            row = self._readers[index].rows_at(self.cursors[index])[0]
            self.cursors[index] += 1
            if self.cursors[index] == self.files[index].rows:
                self._readers[index].close()
            if not self._eligible(row):
                continue
            doc = self.doc_tokenizer.documents([row])[0]
            if doc is None or len(doc.tokens) < 2:
                continue
            self._docs_this_epoch += 1
            return doc

    def _eligible(self, row: dict) -> bool:
        sel = self.selection
        if sel.source_types and row.get("source_type") not in sel.source_types:
            return False
        priority, repeat_index = self.rounds[self.round]
        if sel.priority(row.get("source", ""), row.get("source_type", "")) != priority:
            return False
        repeats = sel.repeats(row.get("source", ""), row.get("source_type", ""))
        whole = math.floor(repeats)
        if repeat_index < whole:
            return True
        return repeat_index == whole and _uniform(sel.seed, "repeat", self.epoch, row["id"]) < repeats - whole

    def _next_round(self) -> None:
        self.cursors = [0] * len(self.files)
        self.draws = 0
        self.round += 1
        if self.round == len(self.rounds):
            if self._docs_this_epoch == 0:
                raise DataError(
                    f"{self.selection.shards_dir}: no usable documents in split {self.selection.split!r} "
                    "after the source-type filter"
                )
            self.round, self.epoch, self._docs_this_epoch = 0, self.epoch + 1, 0


def _weighted_pick(weights: list[int], target: float) -> int:
    acc = 0
    for index, weight in enumerate(weights):
        acc += weight
        if target < acc:
            return index
    return max(i for i, w in enumerate(weights) if w > 0)


# --------------------------------------------------------------------------------------------------
# Packing


@dataclass
class PackedSequence:
    input_ids: np.ndarray  # (seq_len,) int64
    labels: np.ndarray  # (seq_len,) int64, IGNORE_INDEX where not trained
    position_ids: np.ndarray  # (seq_len,) int64, restarting at 0 per document
    expert_ids: np.ndarray  # (seq_len,) int64, NO_EXPERT for padding
    language_ids: np.ndarray  # (seq_len,) int64 index into the language list, -1 for padding
    doc_lengths: list[int]


class SequencePacker:
    """Packs a DocumentStream into fixed-length rows; resumable through `state()`."""

    def __init__(
        self,
        stream: DocumentStream,
        seq_len: int,
        languages: list[str],
        pad_id: int,
        state: dict | None = None,
    ):
        self.stream = stream
        self.seq_len = seq_len
        self.language_index = {code: i for i, code in enumerate(languages)}
        self.pad_id = pad_id
        pending = (state or {}).get("pending")
        self._pending = Document(**pending) if pending else None
        self.sequences = (state or {}).get("sequences", 0)

    def state(self) -> dict:
        pending = self._pending
        return {
            "stream": self.stream.state(),
            "pending": None if pending is None else pending.__dict__.copy(),
            "sequences": self.sequences,
        }

    def __iter__(self) -> Iterator[PackedSequence]:
        return self

    def __next__(self) -> PackedSequence:
        n = self.seq_len
        input_ids = np.full(n, self.pad_id, dtype=np.int64)
        labels = np.full(n, IGNORE_INDEX, dtype=np.int64)
        positions = np.zeros(n, dtype=np.int64)
        experts = np.full(n, NO_EXPERT, dtype=np.int64)
        languages = np.full(n, -1, dtype=np.int64)
        lengths: list[int] = []
        filled = 0
        while filled < n:
            doc = self._pending or next(self.stream, None)
            self._pending = None
            if doc is None:  # a finite stream ran out: pad the rest as its own (untrained) document
                if filled == 0:
                    raise StopIteration
                positions[filled:] = np.arange(n - filled)
                lengths.append(n - filled)
                break
            take = min(len(doc.tokens), n - filled)
            span = slice(filled, filled + take)
            input_ids[span] = doc.tokens[:take]
            labels[span] = doc.labels[:take]
            positions[span] = np.arange(take)
            experts[span] = doc.expert_id
            languages[span] = self.language_index.get(doc.language, -1)
            lengths.append(take)
            filled += take
            if take < len(doc.tokens):  # the rest continues in the next row as a new document
                self._pending = Document(doc.tokens[take:], doc.labels[take:], doc.expert_id, doc.language)
        self.sequences += 1
        return PackedSequence(input_ids, labels, positions, experts, languages, lengths)


# --------------------------------------------------------------------------------------------------
# Batches


@dataclass
class Batch:
    """Tensors for one micro-batch (rows stacked); `doc_lengths` covers the flattened rows in order."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    position_ids: torch.Tensor
    expert_ids: torch.Tensor
    language_ids: torch.Tensor
    cu_seqlens: torch.Tensor  # int32 (docs + 1,), cumulative document lengths over the flattened batch
    max_doc_len: int
    doc_lengths: list[int]

    def to(self, device: torch.device) -> Batch:
        move = dict(device=device, non_blocking=True)
        return Batch(
            self.input_ids.to(**move),
            self.labels.to(**move),
            self.position_ids.to(**move),
            self.expert_ids.to(**move),
            self.language_ids.to(**move),
            self.cu_seqlens.to(**move),
            self.max_doc_len,
            self.doc_lengths,
        )

    @property
    def n_tokens(self) -> int:
        return self.input_ids.numel()


def collate(sequences: list[PackedSequence]) -> Batch:
    lengths = [n for seq in sequences for n in seq.doc_lengths]
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(torch.tensor(lengths, dtype=torch.int64), 0).to(torch.int32)

    def stack(name: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([getattr(s, name) for s in sequences]))

    batch = Batch(
        stack("input_ids"),
        stack("labels"),
        stack("position_ids"),
        stack("expert_ids"),
        stack("language_ids"),
        cu,
        max(lengths),
        lengths,
    )
    if torch.cuda.is_available():
        for name in ("input_ids", "labels", "position_ids", "expert_ids", "language_ids", "cu_seqlens"):
            setattr(batch, name, getattr(batch, name).pin_memory())
    return batch


def manifest_languages(shards_dir: Path) -> list[str]:
    """Every language in the manifest, sorted: the index space of `language_ids`."""
    return sorted({f.language for f in load_manifest(shards_dir).files})
