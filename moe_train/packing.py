"""Packing: documents into rows of exactly `seq_len` tokens (`train.packing`), and the batches of rows.

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
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from moe_train.data import Document, DocumentTokenizer
from moe_train.loss import IGNORE_INDEX
from moe_train.routing import NO_EXPERT
from moe_train.sampling import DataSelection, DocumentStream, WeightedShuffleStream, open_stream

if TYPE_CHECKING:
    from pipeline.config import TrainSection


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
