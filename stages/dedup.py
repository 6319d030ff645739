"""Dedup: exact (normalised-text hash) and near-duplicate (MinHash + LSH) removal, per language.

Four datatrove pipelines, shaped like datatrove's MinHash stages so the work spreads over tasks:

1. signatures (one task per input shard): segment each document once, hash its normalised text,
   compute its MinHash signature, LSH band keys (language-salted, so a document and its
   translation never share a bucket) and sorted shingle hashes; write them under `work/signatures/`.
2. buckets (bands spread over the tasks): documents sharing a band key are candidate pairs; each candidate
   is verified (`dedup.verify`: by the exact Jaccard of the two documents' shingle sets, by the
   signatures' estimate, or not at all as in stock datatrove) against `dedup.verify_threshold`,
   and kept pairs are written to `work/buckets/`.
3. clusters (one task): union-find over exact-hash groups and verified pairs; the kept document of
   each cluster is the one with the highest source priority, then the longest text, then the
   smallest id. Assignments go to `work/clusters/`.
4. filter (same tasks as 1, same inputs in the same order): every kept record gets
   `dup_cluster_id` (the kept record's id) and `dup_cluster_size`; the others go to the quarantine
   as `exact_duplicate` / `near_duplicate` with the kept id as detail.

Everything that decides an outcome depends on content, source priority and ids only, so the result
is the same for any number of tasks. Once the filter pass is done, the large per-document arrays
(signatures, band keys, shingle hashes) are deleted; the document tables and cluster assignments stay.
"""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from pipeline import atomic
from pipeline.config import DedupSection
from pipeline.dag import StageContext
from pipeline.record_io import (
    ProjectedRecordReader,
    RecordFilter,
    RecordWriter,
    Rejection,
    list_parquet,
    read_table,
)
from pipeline.registry import Registry
from pipeline.text.minhash import (
    MinHasher,
    estimated_jaccard,
    language_salt,
    normalized_text_hash,
    sorted_jaccard,
    unique_per_document,
)
from pipeline.text.reference_index import ReferenceIndex
from pipeline.text.segment import segment

KEEP, EXACT, NEAR = 0, 1, 2
# Exact verification skips candidates whose signature estimate is this far below the threshold
# (the estimate's standard deviation with 112 permutations is under 0.05).
_EXACT_PREFILTER_MARGIN = 0.25
REASONS = {EXACT: "exact_duplicate", NEAR: "near_duplicate"}
_META_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("language", pa.string()),
        ("priority", pa.int64()),
        ("length", pa.int64()),
        ("exact", pa.uint64()),
        ("has_tokens", pa.bool_()),
        ("n_shingles", pa.int64()),
    ]
)
_CLUSTER_SCHEMA = pa.schema(
    [("id", pa.string()), ("kept_id", pa.string()), ("size", pa.int32()), ("status", pa.int8())]
)


def _save_array(path: Path, array: np.ndarray) -> None:
    with atomic.atomic_open(path, "wb") as fh:
        np.save(fh, array)


def _write_table(path: Path, table: pa.Table) -> None:
    with atomic.atomic_path(path) as tmp:
        pq.write_table(table, tmp)


class DedupWorkspace:
    """The intermediate files of one dedup run, and the global document numbering over tasks.

    Document `g` is local document `g - offset[rank]` of signature task `rank`; the numbering is
    internal (outcomes never depend on it).
    """

    def __init__(self, root: Path, tasks: int, minhasher: MinHasher):
        self.root = Path(root)
        self.tasks = tasks
        self.minhasher = minhasher

    def signature_paths(self, rank: int) -> tuple[Path, Path, Path, Path]:
        """Per task: document table, signatures, band keys, and sorted unique shingle hashes."""
        base = self.root / "signatures"
        return (
            base / f"{rank:05d}.meta.parquet",
            base / f"{rank:05d}.sig",
            base / f"{rank:05d}.bands",
            base / f"{rank:05d}.shingles",
        )

    def pairs_path(self, band: int) -> Path:
        return self.root / "buckets" / f"{band:03d}.pairs.npy"

    def cluster_path(self, rank: int) -> Path:
        return self.root / "clusters" / f"{rank:05d}.parquet"

    @property
    def cluster_summary_path(self) -> Path:
        return self.root / "clusters" / "summary.json"

    def meta(self, columns: list[str]) -> pa.Table:
        tables = [read_table(self.signature_paths(r)[0], columns=columns) for r in range(self.tasks)]
        return pa.concat_tables(tables)

    def counts(self) -> np.ndarray:
        return np.array(
            [pq.ParquetFile(self.signature_paths(r)[0]).metadata.num_rows for r in range(self.tasks)],
            dtype=np.int64,
        )

    def _matrices(self, which: int, dtype, width: int) -> list[np.ndarray]:
        out = []
        for rank, rows in enumerate(self.counts()):
            path = self.signature_paths(rank)[which]
            out.append(
                np.memmap(path, dtype=dtype, mode="r", shape=(int(rows), width))
                if rows
                else np.empty((0, width), dtype)
            )
        return out

    def band_column(self, band: int) -> np.ndarray:
        return np.concatenate(
            [m[:, band] for m in self._matrices(2, np.uint64, self.minhasher.bands)]
            or [np.empty(0, np.uint64)]
        )

    def shingle_store(self) -> ShingleStore:
        return ShingleStore(self)

    def signatures_of(self, docs: np.ndarray) -> np.ndarray:
        """Signature rows of global document numbers `docs` (read from the memory-mapped files)."""
        matrices = self._matrices(1, np.uint32, self.minhasher.num_perm)
        offsets = np.concatenate([[0], np.cumsum([len(m) for m in matrices])])
        out = np.empty((len(docs), self.minhasher.num_perm), dtype=np.uint32)
        rank_of = np.searchsorted(offsets, docs, side="right") - 1
        for rank, matrix in enumerate(matrices):
            sel = np.flatnonzero(rank_of == rank)
            if len(sel):
                local = docs[sel] - offsets[rank]
                order = np.argsort(local)
                out[sel[order]] = matrix[local[order]]
        return out


class ShingleStore:
    """Sorted unique shingle hashes of every document (memory-mapped), for exact Jaccard of pairs."""

    def __init__(self, workspace: DedupWorkspace):
        counts = workspace.meta(["n_shingles"]).column("n_shingles").to_numpy()
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.files = []
        for rank in range(workspace.tasks):
            path = workspace.signature_paths(rank)[3]
            self.files.append(
                np.memmap(path, dtype=np.uint32, mode="r") if path.stat().st_size else np.empty(0, np.uint32)
            )
        self.file_starts = np.concatenate([[0], np.cumsum([len(f) for f in self.files])]).astype(np.int64)

    def get(self, doc: int) -> np.ndarray:
        start, end = self.offsets[doc], self.offsets[doc + 1]
        rank = int(np.searchsorted(self.file_starts, start, side="right") - 1)
        base = self.file_starts[rank]
        return self.files[rank][start - base : end - base]

    def jaccard(self, pairs: np.ndarray) -> np.ndarray:
        return np.array([sorted_jaccard(self.get(a), self.get(b)) for a, b in pairs], dtype=np.float64)


class DedupSignatures(PipelineStep):
    """Pass 1: normalised-text hash, MinHash signature and band keys of every document of a task."""

    name = "🔏 dedup signatures"
    type = "🫂 - DEDUP"

    def __init__(
        self,
        workspace: DedupWorkspace,
        registry: Registry,
        priorities: dict[str, int],
        batch_size: int = 1024,
    ):
        super().__init__()
        self.workspace = workspace
        self.segmentation = {code: lang.segmentation for code, lang in registry.languages.items()}
        self.priorities = priorities
        self.batch_size = batch_size

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        meta_path, *array_paths = self.workspace.signature_paths(rank)
        meta_path.parent.mkdir(parents=True, exist_ok=True)
        tmp_paths = [atomic.temporary_name(path) for path in array_paths]
        meta: dict[str, list] = {name: [] for name in _META_SCHEMA.names}
        batch: list[Document] = []
        outputs = [open(path, "wb") for path in tmp_paths]  # noqa: SIM115 (closed below)
        try:
            for doc in data or ():
                batch.append(doc)
                if len(batch) >= self.batch_size:
                    self._process(batch, meta, outputs)
                    batch = []
            if batch:
                self._process(batch, meta, outputs)
        finally:
            for out in outputs:
                out.close()
        for tmp, final in zip(tmp_paths, array_paths, strict=True):
            atomic.commit(tmp, final)
        _write_table(
            meta_path, pa.table(meta, schema=_META_SCHEMA)
        )  # written last: marks the task's files complete
        return
        yield  # a generator that yields nothing: the last step of its pipeline

    def _process(self, docs: list[Document], meta: dict[str, list], outputs: list) -> None:
        mh = self.workspace.minhasher
        with self.track_time(unit="batch"):
            tokens = []
            for doc in docs:
                language = doc.metadata["language"]
                doc_tokens = segment(doc.text, self.segmentation.get(language, "space"))
                tokens.append(doc_tokens)
                meta["id"].append(doc.id)
                meta["language"].append(language)
                meta["priority"].append(self.priorities.get(doc.metadata.get("source"), 0))
                meta["length"].append(len(doc.text))
                meta["exact"].append(normalized_text_hash(doc_tokens, doc.text, language))
                meta["has_tokens"].append(bool(doc_tokens))
            flat, counts = mh.shingles(tokens)
            signatures = mh.signatures_of_shingles(flat, counts)
            salts = np.fromiter((language_salt(d.metadata["language"]) for d in docs), np.uint64, len(docs))
            unique, unique_counts = unique_per_document(flat, counts)
            meta["n_shingles"].extend(unique_counts.tolist())
            sig_out, bands_out, shingles_out = outputs
            sig_out.write(signatures.tobytes())
            bands_out.write(mh.band_keys(signatures, salts).tobytes())
            shingles_out.write(unique.tobytes())
            self.stat_update("signatures", value=len(docs))


class DedupBuckets(PipelineStep):
    """Pass 2 (bands spread over tasks): candidate pairs sharing a band key, verified."""

    name = "🪣 dedup buckets"
    type = "🫂 - DEDUP"

    def __init__(
        self, workspace: DedupWorkspace, verify: str, verify_threshold: float, all_pairs_max_bucket: int = 32
    ):
        super().__init__()
        self.workspace = workspace
        self.verify = verify
        self.verify_threshold = verify_threshold
        self.all_pairs_max_bucket = all_pairs_max_bucket

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        ws = self.workspace
        meta = ws.meta(["exact", "has_tokens"])
        exact = meta.column("exact").to_numpy()
        has_tokens = meta.column("has_tokens").to_numpy(zero_copy_only=False)
        # One document per normalised text takes part; its exact duplicates join it in the cluster pass.
        _, first = np.unique(exact, return_index=True)
        eligible = np.zeros(len(exact), dtype=bool)
        eligible[first] = True
        docs = np.flatnonzero(eligible & has_tokens)
        for band in range(rank, ws.minhasher.bands, world_size):
            with self.track_time():
                pairs = self._band_pairs(band, docs, exact)
            ws.pairs_path(band).parent.mkdir(parents=True, exist_ok=True)
            _save_array(ws.pairs_path(band), pairs.astype(np.int64).reshape(-1, 2))
        return
        yield

    def _band_pairs(self, band: int, docs: np.ndarray, exact: np.ndarray) -> np.ndarray:
        ws = self.workspace
        keys = ws.band_column(band)[docs]
        order = np.lexsort((exact[docs], keys))  # by key, then a content-defined order
        pairs = self._candidate_pairs(docs[order], keys[order])
        self.stat_update("candidate_pairs", value=len(pairs))
        if len(pairs) and self.verify != "off":
            estimate = estimated_jaccard(ws.signatures_of(pairs[:, 0]), ws.signatures_of(pairs[:, 1]))
            if self.verify == "signature":
                pairs = pairs[estimate >= self.verify_threshold]
            else:  # exact: pairs the estimate leaves plausible get their exact shingle-set Jaccard
                pairs = pairs[estimate >= self.verify_threshold - _EXACT_PREFILTER_MARGIN]
                pairs = pairs[ws.shingle_store().jaccard(pairs) >= self.verify_threshold]
        self.stat_update("verified_pairs", value=len(pairs))
        return pairs

    def _candidate_pairs(self, docs: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """Every pair within small buckets; the first member against the rest in large ones."""
        if len(keys) < 2:
            return np.empty((0, 2), dtype=np.int64)
        starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
        sizes = np.diff(np.concatenate([starts, [len(keys)]]))
        multi = sizes >= 2
        starts, sizes = starts[multi], sizes[multi]
        group_first = np.repeat(starts, sizes)
        members = np.concatenate(
            [np.arange(s, s + n) for s, n in zip(starts, sizes, strict=True)] or [[]]
        ).astype(np.int64)
        star = members != group_first
        pairs = [np.stack([docs[group_first[star]], docs[members[star]]], axis=1)]
        extra = [
            (docs[a], docs[b])
            for s, n in zip(starts, sizes, strict=True)
            if 3 <= n <= self.all_pairs_max_bucket
            for a, b in combinations(range(s + 1, s + n), 2)
        ]
        if extra:
            pairs.append(np.array(extra, dtype=np.int64))
        return np.concatenate(pairs).astype(np.int64)


def connected_components(labels: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Component of every node, as its smallest member, from initial `labels` and extra `edges`.

    `labels[i] <= i` must point at a root (`labels[labels] == labels`). Each round hooks the root
    of the larger label of every edge onto the smaller one, then jumps pointers until every node
    points at a root again; it stops when every edge joins equal labels. Vectorised, no Python
    loop per edge.
    """
    labels = labels.astype(np.int64, copy=True)
    if len(edges) == 0:
        return labels
    u, v = edges[:, 0], edges[:, 1]
    while True:
        lu, lv = labels[u], labels[v]
        differ = lu != lv
        if not differ.any():
            return labels
        low = np.minimum(lu[differ], lv[differ])
        np.minimum.at(labels, lu[differ], low)
        np.minimum.at(labels, lv[differ], low)
        while True:
            jumped = labels[labels]
            if np.array_equal(jumped, labels):
                break
            labels = jumped


class DedupClusters(PipelineStep):
    """Pass 3 (one task): union-find over exact groups and verified pairs, pick each cluster's kept document."""

    name = "🧩 dedup clusters"
    type = "🫂 - DEDUP"

    def __init__(self, workspace: DedupWorkspace, exact: bool, near: bool):
        super().__init__()
        self.workspace = workspace
        self.exact = exact
        self.near = near

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        ws = self.workspace
        with self.track_time():
            meta = ws.meta(["id", "priority", "length", "exact"])
            n = meta.num_rows
            exact = meta.column("exact").to_numpy()
            labels = np.arange(n, dtype=np.int64)
            if self.exact or self.near:  # identical normalised texts are duplicates either way
                _, first, inverse = np.unique(exact, return_index=True, return_inverse=True)
                labels = first[inverse]
            pairs = [np.empty((0, 2), dtype=np.int64)]
            if self.near:
                pairs += [np.load(ws.pairs_path(b)) for b in range(ws.minhasher.bands)]
            labels = connected_components(labels, np.unique(np.concatenate(pairs), axis=0))
            id_rank = np.empty(n, dtype=np.int64)
            id_rank[pc.sort_indices(meta.column("id")).to_numpy()] = np.arange(n)
            priority = meta.column("priority").to_numpy()
            length = meta.column("length").to_numpy()
            # Kept document: highest source priority, then longest text, then smallest id.
            order = np.lexsort((id_rank, -length, -priority, labels))
            is_head = (
                np.concatenate([[True], labels[order][1:] != labels[order][:-1]]) if n else np.zeros(0, bool)
            )
            kept_of_label = np.empty(n, dtype=np.int64)
            kept_of_label[labels[order][is_head]] = order[is_head]
            kept = kept_of_label[labels]
            size = np.bincount(labels, minlength=n)[labels].astype(np.int32)
            status = np.where(
                kept == np.arange(n), KEEP, np.where(self.exact & (exact == exact[kept]), EXACT, NEAR)
            )
            ids = meta.column("id")
            kept_ids = ids.take(pa.array(kept))
        offsets = np.concatenate([[0], np.cumsum(ws.counts())])
        ws.cluster_path(0).parent.mkdir(parents=True, exist_ok=True)
        for task in range(ws.tasks):
            lo, hi = int(offsets[task]), int(offsets[task + 1])
            _write_table(
                ws.cluster_path(task),
                pa.table(
                    [
                        ids[lo:hi],
                        kept_ids[lo:hi],
                        pa.array(size[lo:hi]),
                        pa.array(status[lo:hi].astype(np.int8)),
                    ],
                    schema=_CLUSTER_SCHEMA,
                ),
            )
        summary = {
            "documents": int(n),
            "clusters_with_duplicates": int(np.count_nonzero(np.bincount(labels, minlength=n) > 1)),
            "largest_cluster": int(size.max()) if n else 0,
            "exact_duplicates": int(np.count_nonzero(status == EXACT)),
            "near_duplicates": int(np.count_nonzero(status == NEAR)),
        }
        atomic.write_json(ws.cluster_summary_path, summary, indent=2)
        return
        yield


class DedupFilter(RecordFilter):
    """Pass 4: annotate kept records with their cluster, set the others aside with the kept id."""

    name = "🫂 dedup filter"

    def __init__(self, workspace: DedupWorkspace, quarantine_dir: str | Path, stage: str):
        super().__init__(quarantine_dir, stage)
        self.workspace = workspace
        self._rows = None

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        table = read_table(self.workspace.cluster_path(rank))
        self._rows = zip(
            table.column("id").to_pylist(),
            table.column("kept_id").to_pylist(),
            table.column("size").to_pylist(),
            table.column("status").to_pylist(),
            strict=True,
        )
        yield from super().run(data or (), rank, world_size)
        if next(self._rows, None) is not None:
            raise RuntimeError(
                f"dedup: task {rank} read fewer documents than its signature pass; re-run the stage"
            )

    def check(self, doc: Document) -> Rejection | None:
        row = next(self._rows, None)
        if row is None or row[0] != doc.id:
            raise RuntimeError(
                f"dedup: task inputs changed between passes (expected {row and row[0]!r}, read {doc.id!r}); "
                "re-run the stage"
            )
        _, kept_id, size, status = row
        doc.metadata["dup_cluster_id"] = kept_id
        doc.metadata["dup_cluster_size"] = size
        return None if status == KEEP else Rejection(REASONS[status], kept_id)


class ReferenceFilter(RecordFilter):
    """Sets aside new records that duplicate a document of the earlier corpus (`dedup.reference`),
    naming that document; the index is built before the filter pass (ReferenceIndex.ensure)."""

    name = "📚 reference dedup"
    batch_size = 256

    def __init__(
        self, index: ReferenceIndex, threshold: float, exact: bool, near: bool, quarantine_dir, stage: str
    ):
        super().__init__(quarantine_dir, stage)
        self.index = index
        self.threshold = threshold
        self.exact = exact
        self.near = near

    def check_batch(self, docs: list[Document]) -> list[Rejection | None]:
        verdicts: list[Rejection | None] = [None] * len(docs)
        by_language: dict[str, list[int]] = {}
        for i, doc in enumerate(docs):
            by_language.setdefault(doc.metadata["language"], []).append(i)
        mh = self.index.minhasher
        for language, rows in by_language.items():
            split = self.index.segmentation.get(language, "space")
            tokens = [segment(docs[i].text, split) for i in rows]
            exact = np.array(
                [normalized_text_hash(t, docs[i].text, language) for t, i in zip(tokens, rows, strict=True)],
                dtype=np.uint64,
            )
            signatures = mh.signatures_of_shingles(*mh.shingles(tokens))
            salts = np.full(len(rows), language_salt(language), dtype=np.uint64)
            threshold = self.threshold if self.near else 2.0  # above any similarity: exact matches only
            matches = self.index.lookup(
                language, exact, signatures, mh.band_keys(signatures, salts), threshold
            )
            for i, match in zip(rows, matches, strict=True):
                if match is None or (match.kind == "exact" and not (self.exact or self.near)):
                    continue
                how = (
                    "exact copy" if match.kind == "exact" else f"near copy (Jaccard ~{match.similarity:.2f})"
                )
                verdicts[i] = Rejection(
                    "reference_duplicate", f"{how} of {match.reference_id} in {self.index.reference}"
                )
        return verdicts


def run(ctx: StageContext) -> dict:
    cfg: DedupSection = ctx.cfg.dedup
    tasks = ctx.cfg.executor.tasks
    minhasher = MinHasher(cfg.ngram, cfg.bands, cfg.rows, cfg.seed)
    ws = DedupWorkspace(ctx.stage_dir / "work", tasks, minhasher)
    priorities = {source.name: source.priority for source in ctx.cfg.sources}
    # pass 1 needs four columns and counts nothing (the filter pass counts the stage's `in/<lang>`)
    columns = ["id", "text", "language", "source"]
    uncounted = [ProjectedRecordReader(d, columns) for d in ctx.input_dirs() if list_parquet(d)]

    ctx.run_pipeline(
        [*uncounted, DedupSignatures(ws, ctx.registry, priorities)], name="signatures", tasks=tasks
    )
    ctx.run_pipeline(
        [DedupBuckets(ws, cfg.verify, cfg.verify_threshold)], name="buckets", tasks=min(cfg.bands, tasks)
    )
    ctx.run_pipeline([DedupClusters(ws, cfg.exact, cfg.near)], name="clusters", tasks=1)
    reference_steps, reference = [], None
    if cfg.reference:
        segmentation = {code: lang.segmentation for code, lang in ctx.registry.languages.items()}
        index = ReferenceIndex(ctx.cfg.resolve(cfg.reference), minhasher, cfg.seed, segmentation)
        reference = {"path": str(index.reference), "index": str(index.directory), **index.ensure()}
        reference_steps = [
            ReferenceFilter(index, cfg.verify_threshold, cfg.exact, cfg.near, ctx.quarantine_dir, ctx.name)
        ]
    ctx.run_pipeline(
        [
            *ctx.input_readers(),
            DedupFilter(ws, ctx.quarantine_dir, ctx.name),
            *reference_steps,
            RecordWriter(ctx.output_dir),
        ],
        name="filter",
        tasks=tasks,
    )
    clusters = json.loads(ws.cluster_summary_path.read_text())
    for rank in range(tasks):  # every pass is done: the large per-document arrays are no longer needed
        for path in ws.signature_paths(rank)[1:]:
            path.unlink(missing_ok=True)
    return {
        "dedup": {
            **clusters,
            "ngram": cfg.ngram,
            "bands": cfg.bands,
            "rows": cfg.rows,
            "verify": cfg.verify,
            "verify_threshold": cfg.verify_threshold,
        }
    } | ({"reference": _reference_summary(reference, ctx.counters())} if reference else {})


def _reference_summary(reference: dict, counters: dict[str, float]) -> dict:
    keep = ("path", "index", "reused", "shards", "languages")
    return {key: reference[key] for key in keep} | {
        "removed": int(counters.get("quarantined/reference_duplicate", 0))
    }
