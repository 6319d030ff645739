"""Training data: shards -> documents -> packed fixed-length sequences, streamed and resumable.

1. Selection. `manifest.json` (pipeline.manifest) lists the shard files; files are selected by split,
   language and family, rows by source type.
2. Order (`train.sampling.mode`). Both modes are deterministic functions of (seed, epoch, draw number), so
   the stream's whole position is a few integers and training resumes mid-epoch exactly.
   - `weighted_shuffle` (the paper): one epoch is a weighted shuffle without replacement of every row,
     each row repeated `source_repeats` times, with weights `source_priorities` (default 1): a higher
     weight means *earlier* in expectation. Each draw picks the next row with probability proportional to
     its weight, which is the sequential definition of `torch.multinomial(weights, n, replacement=False)`
     that the original sampler uses (FreedomIntelligence/ApolloMoE,
     src/prepare/data_process_train_prodata_qwen2_language_family.py, `WeightedRandomSampler`). Rows are
     grouped into *lanes* (shard file x source x repeat pass); a draw picks a lane with probability
     weight x rows left in it, then the lane's next row in file order. So which source comes next is
     distributed exactly as in the original; within a lane rows keep their file order (the original
     permutes them uniformly; medbabel reads Parquet sequentially).
   - `phases`: one epoch is a sequence of *rounds*, lower `source_priorities` first (default 0), so
     high-priority data is seen at the *end* of each epoch: a hard curriculum, the reverse of the paper's
     soft one. Within a round the open shard files are interleaved by seeded draws weighted by their
     remaining rows.
   In both, a source with `source_repeats: r` is seen r times per epoch: in repeat pass j a row is used if
   j < floor(r), or, for j = floor(r), if a seeded hash of its id falls under the fraction of r. Keys of
   `source_priorities` / `source_repeats` are a source name, a source type, an origin (`rewritten`), or a
   glob over them (`medical*`).
3. Documents. `messages` rows are rendered with the chat template (default the paper's
   `User:{q}\\nAssistant:{a}<|endoftext|>`): everything from `{a}` on is trained, the prompt is not.
   Plain-text rows are trained on every token and end with `<|endoftext|>`. Text inside records is
   tokenised with special tokens split, so a record cannot inject control tokens.
4. Packing (`train.packing`). Documents are placed into rows of exactly `seq_len` tokens.
   - Chat examples are never split (`chat: whole`, as the original): one that does not fit the rest of a
     row waits for the next row while later documents that fit fill the gap (up to `lookahead` waiting
     examples; `lookahead: 0` is the original's rule: the row is padded and the example starts the next).
     One longer than `seq_len` is truncated to its first `seq_len` tokens, keeping its prompt and the
     start of its answer (`overlong: truncate`), or left out (`overlong: skip`); a prompt that fills the
     whole row leaves nothing to train and is skipped. Both are counted.
   - Plain text continues across rows (pretraining style): the rest of a document that does not fit
     starts the next row as a new document, without attention to its first part.
   Position ids restart at 0 at each document and attention never crosses documents (see
   moe_train.attention), unless `cross_document_attention: true` (the original: one causal mask and one
   position count per row). Each token carries its document's family expert id (for hybrid routing) and
   language index (for per-language validation loss). `PackingStats` counts what the packer did.

Memory is independent of corpus size: one small record batch per open shard file (per lane).
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pyarrow.parquet as pq
import torch

from moe_train.loss import IGNORE_INDEX
from moe_train.routing import NO_EXPERT
from pipeline.manifest import ShardFile, load_manifest

if TYPE_CHECKING:
    from pipeline.config import TrainSection

EOS_TOKEN = "<|endoftext|>"
READ_BATCH_ROWS = 256
LANE_READ_ROWS = 64  # a weighted shuffle keeps one reader per (file, source, repeat pass)
_COLUMNS = ("id", "text", "messages", "language", "source", "source_type", "origin", "expert_id")
_ORDER_COLUMNS = ("id", "source", "source_type", "origin")  # what the order of a row depends on


class DataError(ValueError):
    """The data selection or a record cannot be used for training; the message says which and why."""


SamplingMode = Literal["phases", "weighted_shuffle"]


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
    sampling: SamplingMode = "phases"

    @classmethod
    def for_training(cls, shards_dir: Path, cfg: TrainSection, seed: int) -> DataSelection:
        """The train split as `cfg` (the train config section) selects and orders it."""
        return cls(
            shards_dir=Path(shards_dir),
            split="train",
            languages=tuple(cfg.languages),
            families=tuple(cfg.families),
            source_types=tuple(cfg.source_types),
            source_priorities=dict(cfg.source_priorities),
            source_repeats=dict(cfg.source_repeats),
            seed=seed,
            sampling=cfg.sampling.mode,
        )

    def files(self) -> list[ShardFile]:
        manifest = load_manifest(self.shards_dir)
        files = manifest.select(self.split, list(self.languages) or None, list(self.families) or None)
        return sorted((f for f in files if f.rows > 0), key=lambda f: f.path)

    def priority(self, row: dict) -> float:
        """The row's phase (`phases`, default 0) or weight (`weighted_shuffle`, default 1)."""
        default = 1.0 if self.sampling == "weighted_shuffle" else 0.0
        return float(source_value(self.source_priorities, row, default))

    def repeats(self, row: dict) -> float:
        return float(source_value(self.source_repeats, row, 1.0))

    def rounds(self) -> list[tuple[float, int]]:
        """(priority, repeat index) of each round of an epoch, in order (`phases`)."""
        priorities = sorted({0.0, *map(float, self.source_priorities.values())})
        n_repeats = max(1, math.ceil(max(self.source_repeats.values(), default=1.0)))
        return [(p, j) for p in priorities for j in range(n_repeats)]

    def repeat_passes(self, row: dict, epoch: int) -> list[int]:
        """The repeat passes of an epoch in which `row` is used (0, 1, .. for whole repeats, then the
        fraction by a seeded hash of the row id)."""
        repeats = self.repeats(row)
        whole = math.floor(repeats)
        passes = list(range(whole))
        if repeats > whole and _uniform(self.seed, "repeat", epoch, row["id"]) < repeats - whole:
            passes.append(whole)
        return passes


def source_value(table: dict[str, float], row: dict, default: float) -> float:
    """The value for a row: by source name, then source type, then origin (`rewritten`: the Apollo QA
    recipe's output), then the first glob key matching any of them."""
    names = [row.get(key) or "" for key in ("source", "source_type", "origin")]
    for name in names:
        if name in table:
            return table[name]
    for pattern, value in table.items():
        if any(c in pattern for c in "*?[") and any(fnmatchcase(name, pattern) for name in names):
            return value
    return default


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
    kind: str = "text"  # "chat" (a messages row: never split) or "text" (may continue in the next row)
    prompt_len: int = 0  # chat: tokens before the first trained one (the whole first prompt)
    offset: int = 0  # where this piece starts in its document (> 0: a continuation)

    @property
    def trained(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


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
            doc_kind = "text" if plan[0][0] == "text" else "chat"
            if doc_kind == "text":
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
            prompt_len = trained.index(True) if doc_kind == "chat" and True in trained else 0
            docs.append(
                Document(
                    tokens,
                    labels,
                    NO_EXPERT if expert is None else int(expert),
                    row["language"],
                    kind=doc_kind,
                    prompt_len=prompt_len,
                )
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

    def __init__(self, path: Path, rows: int, batch_rows: int = READ_BATCH_ROWS):
        self.path = path
        self.rows = rows
        self.batch_rows = batch_rows
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
                end = min(position - start + self.batch_rows, n)
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
    """`phases` order: deterministic, resumable stream of Documents over a DataSelection (module docstring).

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
        self._readers = [_ShardCursor(selection.shards_dir / f.path, f.rows) for f in self.files]
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
        if sel.priority(row) != priority:
            return False
        return repeat_index in sel.repeat_passes(row, self.epoch)

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


@dataclass(frozen=True)
class _Lane:
    """The rows of one source (source, source_type, origin) in one shard file used in one repeat pass."""

    file_index: int
    group: tuple[str, ...]
    repeat_pass: int
    weight: float
    rows: int

    def key(self, path: str) -> str:
        return "#".join([path, *self.group, str(self.repeat_pass)])


class WeightedShuffleStream:
    """`weighted_shuffle` order: a resumable weighted shuffle without replacement (module docstring).

    Each draw takes lane i with probability w_i * left_i / sum_j w_j * left_j: every row left has
    probability proportional to its weight, as in torch.multinomial without replacement. Counting the
    lanes reads the id, source and source_type columns of the selected files once per epoch.
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
        bad = {k: v for k, v in selection.source_priorities.items() if v < 0}
        if bad:
            raise DataError(f"train.source_priorities: weighted_shuffle weights must be >= 0, got {bad}")
        state = state or {}
        self.epoch = state.get("epoch", 0)
        self.draws = state.get("draws", 0)
        self._docs_this_epoch = state.get("docs_this_epoch", 0)
        self._weights: dict[tuple[str, ...], float] = {}  # source group -> weight
        self._open_epoch(state.get("lanes", {}))

    def _row_lanes(self, row: dict) -> list[tuple[tuple[str, ...], int]]:
        """(source group, repeat pass) of every lane `row` belongs to this epoch."""
        sel = self.selection
        if sel.source_types and row.get("source_type") not in sel.source_types:
            return []
        group = tuple(row.get(column) or "" for column in _ORDER_COLUMNS[1:])
        if group not in self._weights:
            self._weights[group] = sel.priority(row)
        if self._weights[group] <= 0:
            return []
        return [(group, j) for j in sel.repeat_passes(row, self.epoch)]

    def _open_epoch(self, lane_state: dict) -> None:
        counts: dict[tuple[int, tuple[str, ...], int], int] = {}
        for index, f in enumerate(self.files):
            path = self.selection.shards_dir / f.path
            try:
                columns = [c for c in _ORDER_COLUMNS if c in pq.read_schema(path).names]
                rows = pq.read_table(path, columns=columns).to_pylist()
            except Exception as exc:
                raise DataError(f"{path}: cannot read shard: {exc}") from None
            for row in rows:
                for group, j in self._row_lanes(row):
                    counts[index, group, j] = counts.get((index, group, j), 0) + 1
        self.lanes = [_Lane(i, g, j, self._weights[g], n) for (i, g, j), n in sorted(counts.items())]
        saved = [lane_state.get(lane.key(self.files[lane.file_index].path)) for lane in self.lanes]
        self.cursors = [s[0] if s else 0 for s in saved]
        self.taken = [s[1] if s else 0 for s in saved]
        self._readers = [
            _ShardCursor(
                self.selection.shards_dir / self.files[lane.file_index].path, lane.rows, LANE_READ_ROWS
            )
            for lane in self.lanes
        ]

    def state(self) -> dict:
        lanes = {
            lane.key(self.files[lane.file_index].path): [cursor, taken]
            for lane, cursor, taken in zip(self.lanes, self.cursors, self.taken, strict=True)
            if taken
        }
        return {
            "epoch": self.epoch,
            "draws": self.draws,
            "lanes": lanes,
            "docs_this_epoch": self._docs_this_epoch,
        }

    def __iter__(self) -> Iterator[Document]:
        return self

    def __next__(self) -> Document:
        while True:
            if self.epochs is not None and self.epoch >= self.epochs:
                raise StopIteration
            weights = [lane.weight * (lane.rows - t) for lane, t in zip(self.lanes, self.taken, strict=True)]
            total = sum(weights)
            if total <= 0:
                self._next_epoch()
                continue
            u = _uniform(self.selection.seed, "weighted_shuffle", self.epoch, self.draws)
            self.draws += 1
            index = _weighted_pick(weights, u * total)
            row = self._take(index)
            doc = self.doc_tokenizer.documents([row])[0]
            if doc is None or len(doc.tokens) < 2:
                continue
            self._docs_this_epoch += 1
            return doc

    def _take(self, index: int) -> dict:
        """The next row of lane `index` in its file."""
        lane = self.lanes[index]
        wanted = (lane.group, lane.repeat_pass)
        reader = self._readers[index]
        position = self.cursors[index]
        while True:
            for row in reader.rows_at(position):
                position += 1
                if wanted in self._row_lanes(row):
                    self.cursors[index] = position
                    self.taken[index] += 1
                    if self.taken[index] == lane.rows:
                        reader.close()
                    return row

    def _next_epoch(self) -> None:
        if self._docs_this_epoch == 0:
            raise DataError(
                f"{self.selection.shards_dir}: no usable documents in split {self.selection.split!r} "
                "after the source-type filter and the weights"
            )
        self.epoch, self.draws, self._docs_this_epoch = self.epoch + 1, 0, 0
        self._open_epoch({})


def open_stream(
    selection: DataSelection,
    doc_tokenizer: DocumentTokenizer,
    epochs: int | None = None,
    state: dict | None = None,
) -> DocumentStream | WeightedShuffleStream:
    """The document stream of `selection.sampling`."""
    kind = WeightedShuffleStream if selection.sampling == "weighted_shuffle" else DocumentStream
    return kind(selection, doc_tokenizer, epochs=epochs, state=state)


# --------------------------------------------------------------------------------------------------
# Packing


@dataclass
class PackedSequence:
    input_ids: np.ndarray  # (seq_len,) int64
    labels: np.ndarray  # (seq_len,) int64, IGNORE_INDEX where not trained
    position_ids: np.ndarray  # (seq_len,) int64, restarting at 0 per document
    expert_ids: np.ndarray  # (seq_len,) int64, NO_EXPERT for padding
    language_ids: np.ndarray  # (seq_len,) int64 index into the language list, -1 for padding
    doc_lengths: list[int]  # the attention blocks: documents, then padding


@dataclass
class PackingStats:
    """What the packer did, cumulative over a run (part of its resumable state)."""

    examples: int = 0  # documents packed (a continued text document counts once)
    chat_examples: int = 0
    truncated: int = 0  # chat examples longer than seq_len, cut to their prompt and answer start
    skipped: int = 0  # chat examples left out (overlong: skip, or a prompt filling the whole row)
    continued: int = 0  # pieces that continue a document from an earlier row
    rows: int = 0
    tokens: int = 0
    padding: int = 0
    trained: int = 0
    trained_without_prompt: int = 0  # chat tokens trained in a row that lacks their prompt (split mode)
    trained_in_continuations: int = 0  # text tokens trained in a row that lacks the text's start

    def summary(self) -> dict:
        """The counts plus the padding share and the shares of trained tokens without their context."""
        trained = max(self.trained, 1)
        return {
            **asdict(self),
            "padding_share": self.padding / max(self.tokens, 1),
            "trained_without_prompt_share": self.trained_without_prompt / trained,
            "trained_in_continuations_share": self.trained_in_continuations / trained,
        }


PackingChat = Literal["whole", "split"]
PackingOverlong = Literal["truncate", "skip"]


class SequencePacker:
    """Packs a document stream into fixed-length rows; resumable through `state()` (module docstring).

    `chat`: "whole" never splits a chat example (the default and the original), "split" treats chat like
    text (the behaviour before whole-example packing; for measurements). `lookahead`: how many examples
    may wait for a later row while shorter ones fill the current one (0: pad the row at once).
    """

    def __init__(
        self,
        stream: DocumentStream | WeightedShuffleStream,
        seq_len: int,
        languages: list[str],
        pad_id: int,
        state: dict | None = None,
        chat: PackingChat = "whole",
        overlong: PackingOverlong = "truncate",
        lookahead: int = 8,
        cross_document_attention: bool = False,
    ):
        self.stream = stream
        self.seq_len = seq_len
        self.language_index = {code: i for i, code in enumerate(languages)}
        self.pad_id = pad_id
        self.chat = chat
        self.overlong = overlong
        self.lookahead = lookahead
        self.cross_document_attention = cross_document_attention
        state = state or {}
        pending = state.get("pending") or []
        if isinstance(pending, dict):  # a checkpoint from before whole-example packing: one split document
            pending = [pending]
        self._pending = [Document(**doc) for doc in pending]
        self.sequences = state.get("sequences", 0)
        self.stats = PackingStats(**state.get("stats", {}))

    def state(self) -> dict:
        return {
            "stream": self.stream.state(),
            "pending": [doc.__dict__.copy() for doc in self._pending],
            "sequences": self.sequences,
            "stats": asdict(self.stats),
        }

    def __iter__(self) -> Iterator[PackedSequence]:
        return self

    def _next_document(self) -> Document | None:
        """The stream's next document, over-long chat examples truncated or skipped (None: stream ended)."""
        n = self.seq_len
        for doc in self.stream:
            if doc.kind != "chat" or self.chat == "split" or len(doc.tokens) <= n:
                return doc
            if self.overlong == "truncate" and any(label != IGNORE_INDEX for label in doc.labels[:n]):
                self.stats.truncated += 1
                return Document(
                    doc.tokens[:n], doc.labels[:n], doc.expert_id, doc.language, "chat", doc.prompt_len
                )
            self.stats.skipped += 1
        return None

    def _splittable(self, doc: Document) -> bool:
        return doc.kind == "text" or self.chat == "split"

    def __next__(self) -> PackedSequence:
        n = self.seq_len
        input_ids = np.full(n, self.pad_id, dtype=np.int64)
        labels = np.full(n, IGNORE_INDEX, dtype=np.int64)
        positions = np.zeros(n, dtype=np.int64)
        experts = np.full(n, NO_EXPERT, dtype=np.int64)
        languages = np.full(n, -1, dtype=np.int64)
        lengths: list[int] = []
        filled = 0
        stats = self.stats
        while filled < n:
            room = n - filled
            index = next(
                (i for i, d in enumerate(self._pending) if self._splittable(d) or len(d.tokens) <= room), None
            )
            if index is None:
                doc = None if len(self._pending) > self.lookahead else self._next_document()
                if doc is None:  # nothing fits and nothing more may wait, or the stream ended: pad
                    break
                self._pending.append(doc)
                continue
            doc = self._pending.pop(index)
            take = min(len(doc.tokens), room)
            span = slice(filled, filled + take)
            input_ids[span] = doc.tokens[:take]
            labels[span] = doc.labels[:take]
            positions[span] = np.arange(take)
            experts[span] = doc.expert_id
            languages[span] = self.language_index.get(doc.language, -1)
            lengths.append(take)
            filled += take
            trained = int((labels[span] != IGNORE_INDEX).sum())
            stats.trained += trained
            if doc.offset == 0:
                stats.examples += 1
                stats.chat_examples += doc.kind == "chat"
            else:
                stats.continued += 1
                if doc.kind == "chat":
                    stats.trained_without_prompt += trained
                else:
                    stats.trained_in_continuations += trained
            if take < len(doc.tokens):  # text: the rest starts the next row as a new document
                rest = Document(
                    doc.tokens[take:],
                    doc.labels[take:],
                    doc.expert_id,
                    doc.language,
                    doc.kind,
                    doc.prompt_len,
                    doc.offset + take,
                )
                self._pending.insert(index, rest)
        if filled == 0:
            raise StopIteration
        if filled < n:  # padding: its own (untrained) attention block
            positions[filled:] = np.arange(n - filled)
            lengths.append(n - filled)
        if self.cross_document_attention:  # the original: one block and one position count per row
            positions[:filled] = np.arange(filled)
            lengths = [filled] + ([n - filled] if filled < n else [])
        stats.rows += 1
        stats.tokens += n
        stats.padding += n - filled
        self.sequences += 1
        return PackedSequence(input_ids, labels, positions, experts, languages, lengths)


def training_packer(
    selection: DataSelection,
    doc_tokenizer: DocumentTokenizer,
    cfg: TrainSection,
    languages: list[str],
    state: dict | None = None,
) -> SequencePacker:
    """The training rows: `selection`'s stream packed as `cfg.packing` says, resumed from `state`."""
    stream = open_stream(selection, doc_tokenizer, state=(state or {}).get("stream"))
    packing = cfg.packing
    return SequencePacker(
        stream,
        cfg.seq_len,
        languages,
        doc_tokenizer.eos_id,
        state=state,
        chat=packing.chat,
        overlong=packing.overlong,
        lookahead=packing.lookahead,
        cross_document_attention=packing.cross_document_attention,
    )


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
