"""Sharded Parquet: token counts, the train/valid split, the final shard layout, manifest and card.

  links     (main process) records joined by `parent_id` / `group_id` form translation families; each
            family gets one split key so that a translation always lands in its parent's split;
  tokenize  every task counts Qwen2 tokens in batches, assigns the split and writes its records
            into sorted runs per (split, family, language) under OUT/shards/partitions/;
  merge     each task merges the runs of some (split, family, language) groups into the final
            shards, sorted by id, so the output is byte-identical whatever the task count;
  then the manifest (pipeline/manifest.py) and the dataset card with its plots.

Every file appears under its final name only when complete (tmp file + rename).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from pipeline import atomic
from pipeline.dag import StageContext, corpus_config_hash
from pipeline.dataset_card import write_dataset_card
from pipeline.manifest import Manifest, ShardFile, file_sha256, shard_relpath, write_manifest
from pipeline.record_io import (
    RecordFilter,
    Rejection,
    batched,
    count_per_language,
    document_to_record,
    list_parquet,
    read_table,
    write_error,
)
from pipeline.schema import RECORD_SCHEMA, rows_to_table

PARTITIONS = "partitions"
GROUP_INFO = "groups"


# ---- split -------------------------------------------------------------------------------------------


def split_of(key: str, valid_fraction: float, seed: int) -> str:
    """train | valid from a hash of the split key (a record's translation family)."""
    return "valid" if xxhash.xxh64_intdigest(key, seed=seed) / 2**64 < valid_fraction else "train"


def own_key(record_id: str) -> str:
    """The split key of a record linked to no other: itself."""
    return f"id:{record_id}"


def linked_split_keys(input_dirs: list[Path]) -> dict[str, str]:
    """Split key of every record that has a parent or a group: the smallest node of its connected
    component over id--parent_id and id--group_id links (so the key does not depend on the order the
    records are read in, and a chain translation -> rewrite -> original shares one key)."""
    parent: dict[str, str] = {}

    def find(node: str) -> str:
        root = node
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(node, node) != root:  # path compression
            parent[node], node = root, parent[node]
        return root

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
            parent.setdefault(min(ra, rb), min(ra, rb))

    linked_ids = []
    for directory in input_dirs:
        for path in list_parquet(directory):
            table = read_table(path, columns=["id", "parent_id", "group_id"])
            table = table.filter(pc.or_(pc.is_valid(table["parent_id"]), pc.is_valid(table["group_id"])))
            for record_id, parent_id, group_id in zip(
                *(table[c].to_pylist() for c in table.column_names), strict=True
            ):
                node = own_key(record_id)
                parent.setdefault(node, node)
                linked_ids.append(record_id)
                if parent_id:
                    union(node, own_key(parent_id))
                if group_id:
                    union(node, f"group:{group_id}")
    return {record_id: find(own_key(record_id)) for record_id in linked_ids}


# ---- pipeline steps ------------------------------------------------------------------------------------


class MissingFamilyFilter(RecordFilter):
    """A record without a family cannot be placed in the layout: set it aside."""

    name = "🚫 missing family"

    def check(self, doc: Document) -> Rejection | None:
        if doc.metadata.get("family"):
            return None
        return Rejection("missing_family", "no family tag (run the families stage first)")


class SplitAssigner(PipelineStep):
    """Fills `split` from the record's split key."""

    name = "🔀 split"
    type = "✂️ - FORMAT"

    def __init__(self, keys_path: Path, valid_fraction: float, seed: int):
        super().__init__()
        self.keys_path = Path(keys_path)
        self.valid_fraction = valid_fraction
        self.seed = seed

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        keys = json.loads(self.keys_path.read_text()) if self.keys_path.exists() else {}
        for doc in data:
            split = split_of(keys.get(doc.id) or own_key(doc.id), self.valid_fraction, self.seed)
            doc.metadata["split"] = split
            self.stat_update(f"split/{split}")
            yield doc


class TokenCounter(PipelineStep):
    """Fills `n_tokens` with the Qwen2 tokenizer's count (pipeline/text/tokenizer.py), in batches."""

    name = "🔢 Qwen2 tokens"
    type = "✂️ - FORMAT"

    def __init__(self, batch_size: int = 256):
        super().__init__()
        self.batch_size = batch_size

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from pipeline.text.tokenizer import qwen2_token_counter

        counter = qwen2_token_counter()
        for batch in batched(data, self.batch_size):
            with self.track_time(unit="batch"):
                counts = counter.count_batch([doc.text for doc in batch])
            for doc, n_tokens in zip(batch, counts, strict=True):
                doc.metadata["n_tokens"] = n_tokens
                self.stat_update(f"tokens/{doc.metadata['language']}", value=n_tokens)
            yield from batch


class PartitionWriter(PipelineStep):
    """Writes the task's records as id-sorted runs per (split, family, language)."""

    name = "🗂️ partitions"
    type = "💽 - WRITER"

    def __init__(self, partitions_dir: Path, buffer_rows: int):
        super().__init__()
        self.partitions_dir = Path(partitions_dir)
        self.buffer_rows = buffer_rows

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        buffers: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
        runs: dict[tuple[str, str, str], int] = defaultdict(int)
        written: Counter[str] = Counter()
        for doc in data or ():
            row = document_to_record(doc)
            group = (row["split"], row["family"], row["language"])
            buffers[group].append(row)
            written[row["language"]] += 1
            if len(buffers[group]) >= self.buffer_rows:
                self._flush(group, buffers.pop(group), rank, runs)
        for group in sorted(buffers):
            self._flush(group, buffers[group], rank, runs)
        count_per_language(self, "out", written)
        return
        yield

    def _flush(self, group: tuple[str, str, str], rows: list[dict], rank: int, runs: dict) -> None:
        with self.track_time(unit="run"):
            table = rows_to_table(rows).sort_by("id")
            path = self.partitions_dir.joinpath(*group) / f"{rank:05d}-{runs[group]:04d}.parquet"
            runs[group] += 1
            # runs are temporary (merged, then deleted): lz4 writes and reads back faster than zstd
            write_table_atomic(table, path, row_group_size=10_000, compression="lz4")


class ShardMerger(PipelineStep):
    """Merges the runs of this task's groups into final shards (sorted by id) and describes them."""

    name = "🧩 merge shards"
    type = "💽 - WRITER"

    def __init__(self, stage_dir: Path, groups: list[tuple[str, str, str]], settings: dict):
        super().__init__()
        self.stage_dir = Path(stage_dir)
        self.groups = groups
        self.settings = settings

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for group in self.groups[rank::world_size]:
            with self.track_time(unit="group"):
                info = merge_group(self.stage_dir, group, **self.settings)
            _write_json(self.stage_dir / GROUP_INFO / f"{'__'.join(group)}.json", info)
            self.stat_update("shards", value=len(info["files"]))
        return
        yield


# ---- merging -------------------------------------------------------------------------------------------


def write_table_atomic(table: pa.Table, path: Path, row_group_size: int, compression: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic.atomic_path(path) as tmp:
            pq.write_table(
                table.combine_chunks(),
                tmp,
                row_group_size=row_group_size,
                compression=None if compression == "none" else compression,
            )
    except OSError as exc:  # disk full, quota: say which file
        raise write_error(path, exc) from exc


def merge_group(
    stage_dir: Path, group: tuple[str, str, str], max_rows: int, row_group_size: int, compression: str
) -> dict:
    """Write the final shards of one group; returns their ShardFile records and per-group statistics."""
    split, family, language = group
    runs = list_parquet(stage_dir / PARTITIONS / split / family / language)
    ids = [read_table(run, columns=["id"])["id"] for run in runs]
    order = pa.table(
        {
            "id": pa.concat_arrays([c.combine_chunks() for c in ids]) if ids else pa.array([], pa.string()),
            "run": pa.array([i for i, c in enumerate(ids) for _ in range(len(c))], pa.int32()),
            "row": pa.array([j for c in ids for j in range(len(c))], pa.int64()),
        }
    ).sort_by("id")
    files, by_source_type, by_origin, by_license = (
        [],
        defaultdict(lambda: [0, 0]),
        defaultdict(int),
        defaultdict(int),
    )
    for index, start in enumerate(range(0, order.num_rows, max_rows)):
        chunk = order.slice(start, max_rows)
        pieces = []
        for run in sorted(set(chunk["run"].to_pylist())):
            rows = pc.filter(chunk["row"], pc.equal(chunk["run"], run))
            pieces.append(read_table(runs[run]).take(rows))
        table = pa.concat_tables(pieces).sort_by("id").cast(RECORD_SCHEMA)
        relpath = shard_relpath(split, family, language, index)
        path = stage_dir / relpath
        write_table_atomic(table, path, row_group_size, compression)
        tokens = pc.sum(table["n_tokens"]).as_py() or 0
        files.append(
            ShardFile(
                relpath,
                split,
                family,
                language,
                table.num_rows,
                tokens,
                path.stat().st_size,
                file_sha256(path),
            )
        )
        for source_type, n_tokens in zip(
            table["source_type"].to_pylist(), table["n_tokens"].to_pylist(), strict=True
        ):
            by_source_type[source_type][0] += 1
            by_source_type[source_type][1] += n_tokens or 0
        for origin in table["origin"].to_pylist():
            by_origin[origin] += 1
        for license_name in table["license"].to_pylist():
            by_license[license_name] += 1
    return {
        "group": list(group),
        "files": [f.__dict__ for f in files],
        "source_types": {k: {"docs": v[0], "tokens": v[1]} for k, v in sorted(by_source_type.items())},
        "origins": dict(sorted(by_origin.items())),
        "licenses": dict(sorted(by_license.items())),
    }


def _write_json(path: Path, data: dict) -> None:
    atomic.write_json(path, data, indent=1, ensure_ascii=False, sort_keys=True)


# ---- the stage -----------------------------------------------------------------------------------------


def run(ctx: StageContext) -> dict:
    s = ctx.cfg.shards
    scheme = ctx.registry.resolve_scheme(ctx.cfg.registry.scheme)
    keys_path = ctx.stage_dir / "split_keys.json"
    if not keys_path.exists():
        _write_json(keys_path, linked_split_keys(ctx.input_dirs()))
    readers = ctx.input_readers()
    if readers:
        ctx.run_pipeline(
            [
                *readers,
                MissingFamilyFilter(ctx.quarantine_dir, ctx.name),
                SplitAssigner(keys_path, s.valid_fraction, ctx.cfg.run.seed),
                TokenCounter(s.token_batch_size),
                PartitionWriter(ctx.stage_dir / PARTITIONS, s.sort_buffer_rows),
            ],
            name="tokenize",
        )
    partitions = ctx.stage_dir / PARTITIONS
    groups = sorted({tuple(p.relative_to(partitions).parts[:3]) for p in list_parquet(partitions)})
    if groups:
        settings = {
            "max_rows": s.max_rows_per_shard,
            "row_group_size": s.row_group_size,
            "compression": s.compression,
        }
        ctx.run_pipeline(
            [ShardMerger(ctx.stage_dir, groups, settings)],
            name="merge",
            tasks=min(len(groups), ctx.cfg.executor.tasks),
        )
    infos = [json.loads(p.read_text()) for p in sorted((ctx.stage_dir / GROUP_INFO).glob("*.json"))]
    manifest = Manifest(
        config_hash=corpus_config_hash(ctx.cfg, ctx.registry),
        scheme=scheme.name,
        files=sorted((ShardFile(**f) for info in infos for f in info["files"]), key=lambda f: f.path),
    )
    write_manifest(ctx.stage_dir, manifest)
    write_dataset_card(ctx, manifest, infos)
    shutil.rmtree(partitions, ignore_errors=True)
    return {"shards": manifest.totals, "tokens_per_language": _tokens_per_language(manifest)}


def _tokens_per_language(manifest: Manifest) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for f in manifest.files:
        totals[f.language] += f.tokens
    return dict(sorted(totals.items()))
