"""Which shard rows a run trains on and in what order: a deterministic, resumable document stream.

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

Memory is independent of corpus size: one small record batch per open shard file (per lane).
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pyarrow.parquet as pq

from moe_train.data import DataError, Document, DocumentTokenizer
from pipeline.manifest import ShardFile, load_manifest, shard_path, verify_shard

if TYPE_CHECKING:
    from pipeline.config import TrainSection

READ_BATCH_ROWS = 256
LANE_READ_ROWS = 64  # a weighted shuffle keeps one reader per (file, source, repeat pass)
_COLUMNS = ("id", "text", "messages", "language", "source", "source_type", "origin", "expert_id")
_ORDER_COLUMNS = ("id", "source", "source_type", "origin")  # what the order of a row depends on


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

    def required_files(self) -> list[ShardFile]:
        """`files()`, or an error naming the selection when it selects none."""
        files = self.files()
        if not files:
            raise DataError(
                f"{self.shards_dir}: no shard files for split={self.split!r}, "
                f"languages={list(self.languages) or 'all'}, families={list(self.families) or 'all'}"
            )
        return files

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


class _ShardCursor:
    """Reads one shard file's rows from a position, a record batch at a time."""

    def __init__(
        self, shards_dir: Path, shard: ShardFile, batch_rows: int = READ_BATCH_ROWS, verified: bool = False
    ):
        self.shards_dir = shards_dir
        self.shard = shard
        self.path = shard_path(shards_dir, shard)
        self.rows = shard.rows
        self.batch_rows = batch_rows
        self._verified = verified
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
        self.files = selection.required_files()
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
        self.files = selection.required_files()
        bad = {k: v for k, v in selection.source_priorities.items() if v < 0}
        if bad:
            raise DataError(f"train.source_priorities: weighted_shuffle weights must be >= 0, got {bad}")
        state = state or {}
        self.epoch = state.get("epoch", 0)
        self.draws = state.get("draws", 0)
        self._docs_this_epoch = state.get("docs_this_epoch", 0)
        self._weights: dict[tuple[str, ...], float] = {}  # source group -> weight
        self._verified: set[str] = set()  # shard files whose size and sha256 were checked
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
            if f.path not in self._verified:
                verify_shard(self.selection.shards_dir, f)  # size and sha256, before reading a byte
                self._verified.add(f.path)
            path = shard_path(self.selection.shards_dir, f)
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
                self.selection.shards_dir, self.files[lane.file_index], LANE_READ_ROWS, verified=True
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
