"""Quality scoring and personal-data scrubbing.

Three datatrove passes (the first two only when both classes can reach their minimum, which is
checked first from the `id` and `source_type` columns alone):
  sample  every task keeps the classifier training text (medical source types vs general/web) of
          its documents with the smallest id hashes, personal data already scrubbed;
  train   one task trains the two out-of-fold fastText models under OUT/quality/classifier/;
  main    every task scrubs personal data, segments each document once, computes the heuristic
          signals and the medical score from that one segmentation, combines them into
          `quality_score` and sets aside documents under their source type's threshold with the
          weakest signal as the reason (`low_quality:<signal>`).
"""

from __future__ import annotations

import heapq
import json
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.parquet as pq
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from pipeline import atomic, medical_gate
from pipeline.dag import StageContext
from pipeline.llm.session import WaitingForEndpoint, cache_path
from pipeline.record_io import (
    ProjectedRecordReader,
    RecordFilter,
    RecordWriter,
    Rejection,
    list_parquet,
)
from pipeline.schema import QUALITY_SIGNALS
from pipeline.text import medical_classifier as mc
from pipeline.text.pii import scrub
from pipeline.text.quality_signals import HEURISTIC_TYPES, LanguageRules, assess, load_language_rules
from pipeline.text.segment import segment

SIGNAL_NAMES = tuple(name for name, _ in QUALITY_SIGNALS)


class MedicalSampler(PipelineStep):
    """Keeps, per class and fold, the classifier text of the `max_docs` smallest id hashes of a task."""

    name = "🩺 medical sample"
    type = "📊 - STATS"

    def __init__(
        self,
        sample_dir: Path,
        labels: dict[str, str],
        segmentation: dict[str, str],
        max_docs: int,
        seed: int,
        pii: bool,
        excluded_sources: frozenset[str] = frozenset(),
    ):
        super().__init__()
        self.sample_dir = Path(sample_dir)
        self.labels = labels
        self.excluded_sources = excluded_sources
        self.segmentation = segmentation
        self.max_docs = max_docs
        self.seed = seed
        self.pii = pii

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        heaps: dict[tuple[int, str], list[tuple[int, str]]] = defaultdict(list)
        for doc in data or ():
            label = self.labels.get(doc.metadata["source_type"])
            if label is None or doc.metadata["source"] in self.excluded_sources:
                continue  # gated sources are what the gate judges: not training examples
            with self.track_time():
                h = mc.id_hash(doc.id, self.seed)
                heap = heaps[(h & 1, label)]
                if len(heap) >= self.max_docs and -heap[0][0] < h:
                    continue
                text = scrub(doc.text)[0] if self.pii else doc.text
                words = segment(text, self.segmentation.get(doc.metadata["language"], "space"))
                item = (-h, mc.classifier_text(words))
                if len(heap) < self.max_docs:
                    heapq.heappush(heap, item)
                else:
                    heapq.heapreplace(heap, item)
                self.stat_update(f"sampled/{label}")
        self.sample_dir.mkdir(parents=True, exist_ok=True)
        path = self.sample_dir / f"{rank:05d}.jsonl"
        with atomic.atomic_open(path) as fh:
            for (fold, label), heap in sorted(heaps.items()):
                for neg_h, text in sorted(heap, reverse=True):
                    fh.write(json.dumps({"h": -neg_h, "fold": fold, "label": label, "text": text}) + "\n")
        return
        yield  # a generator that yields nothing: the pass ends here


class MedicalClassifierTrainer(PipelineStep):
    """Trains the two fold models from every task's sample (run as a single task)."""

    name = "🩺 medical classifier training"
    type = "📊 - STATS"

    def __init__(self, sample_dir: Path, model_dir: Path, settings: mc.TrainingSettings):
        super().__init__()
        self.sample_dir = Path(sample_dir)
        self.model_dir = Path(model_dir)
        self.settings = settings

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        with self.track_time(unit="training"):
            mc.train(sorted(self.sample_dir.glob("[!.]*.jsonl")), self.model_dir, self.settings)
        return
        yield


class PiiScrubber(PipelineStep):
    """Replaces personal data with typed placeholders; counts `pii/<TYPE>/<language>`."""

    name = "🕵️ personal data"
    type = "✂️ - FORMAT"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            with self.track_time():
                doc.text, counts = scrub(doc.text)
                for kind, n in counts.items():
                    self.stat_update(f"pii/{kind}/{doc.metadata['language']}", value=n)
                if doc.metadata.get("messages"):
                    doc.metadata["messages"] = [
                        {**turn, "content": scrub(turn["content"] or "")[0]}
                        for turn in doc.metadata["messages"]
                    ]
            yield doc


class QualityFilter(RecordFilter):
    """Signals, medical score and `quality_score`; sets aside what falls under its type's threshold."""

    name = "🥇 quality"
    batch_size = 256

    @classmethod
    def from_section(
        cls,
        q,
        registry,
        quarantine_dir,
        stage: str = "quality",
        model_dir: Path | None = None,
        seed: int = 0,
        gates: dict[str, float] | None = None,
        gate_model_dir: Path | None = None,
    ) -> QualityFilter:
        """The filter a `quality:` config section describes (without a medical classifier unless
        `model_dir` holds one): the stage, the precision benchmark and tests build it the same way."""
        return cls(
            quarantine_dir,
            stage,
            load_language_rules(registry, q.rules),
            dict(q.thresholds),
            dict(q.min_words),
            dict(q.medical_weight),
            model_dir,
            seed,
            gates,
            gate_model_dir,
            tuple(q.heuristic_types),
        )

    def __init__(
        self,
        quarantine_dir,
        stage: str,
        rules: dict[str, LanguageRules],
        thresholds: dict[str, float],
        min_words: dict[str, float],
        medical_weight: dict[str, float],
        model_dir: Path | None,
        seed: int,
        gates: dict[str, float] | None = None,
        gate_model_dir: Path | None = None,
        heuristic_types: tuple[str, ...] = HEURISTIC_TYPES,
    ):
        super().__init__(quarantine_dir, stage)
        self.gates = gates or {}
        self.gate_model_dir = gate_model_dir
        self._gate_scorer = None
        self.heuristic_types = frozenset(heuristic_types)
        self.rules = rules
        self.thresholds = thresholds
        self.min_words = min_words
        self.medical_weight = medical_weight
        self.model_dir = model_dir
        self.seed = seed
        self._scorer: mc.MedicalScorer | None = None

    def _medical_scores(self, docs: list[Document], words: list[list[str]]) -> list[float | None]:
        if self.model_dir is None:
            return [None] * len(docs)
        if self._scorer is None:
            self._scorer = mc.MedicalScorer(self.model_dir, self.seed)
        return self._scorer.score([d.id for d in docs], [mc.classifier_text(w) for w in words])

    def _gate_scores(self, docs, words, medical: list[float | None]) -> list[float | None]:
        """The medical-gate score of each document of a gated source (None elsewhere): the bootstrap
        classifier's when there is one, else the run-time classifier's medical score."""
        gated = [i for i, d in enumerate(docs) if d.metadata["source"] in self.gates]
        scores: list[float | None] = [None] * len(docs)
        if not gated:
            return scores
        if self.gate_model_dir is None:
            for i in gated:
                scores[i] = medical[i]
            return scores
        if self._gate_scorer is None:
            self._gate_scorer = medical_gate.GateScorer(self.gate_model_dir)
        values = self._gate_scorer.score(
            [docs[i].id for i in gated], [mc.classifier_text(words[i]) for i in gated]
        )
        for i, value in zip(gated, values, strict=True):
            scores[i] = value
        return scores

    def check_batch(self, docs: list[Document]) -> list[Rejection | None]:
        rules = [self.rules.get(d.metadata["language"]) or self.rules["default"] for d in docs]
        words = [segment(d.text, r.segmentation) for d, r in zip(docs, rules, strict=True)]
        medical = self._medical_scores(docs, words)
        gate_scores = self._gate_scores(docs, words, medical)
        verdicts = []
        for doc, doc_rules, doc_words, medical_score, gate_score in zip(
            docs, rules, words, medical, gate_scores, strict=True
        ):
            source_type = doc.metadata["source_type"]
            result = assess(
                doc.text,
                doc_words,
                doc_rules,
                _by_type(self.min_words, source_type),
                medical_score,
                _by_type(self.medical_weight, source_type),
                heuristics=source_type in self.heuristic_types,
            )
            doc.metadata["quality_signals"] = {name: result.signals.get(name) for name in SIGNAL_NAMES}
            doc.metadata["quality_score"] = result.score
            gate = self.gates.get(doc.metadata["source"])
            if gate is not None and gate_score is None:
                self.stat_update("medical_gate/unscored")  # no classifier: the gate cannot judge, keeps
            elif gate is not None and gate_score < gate:
                verdicts.append(
                    Rejection(
                        "not_medical",
                        f"medical score {gate_score:.3f} < medical_gate {gate} of source {doc.metadata['source']}",
                    )
                )
                continue
            threshold = _by_type(self.thresholds, source_type)
            if result.score >= threshold:
                verdicts.append(None)
                continue
            value = result.signals.get(result.weakest)
            verdicts.append(
                Rejection(
                    f"low_quality:{result.weakest}",
                    f"quality_score {result.score:.3f} < {threshold} for {source_type}; weakest: {result.weakest}"
                    + (f" = {value:.3g}" if value is not None else ""),
                )
            )
        return verdicts


def _by_type(mapping: dict[str, float], source_type: str) -> float:
    return mapping.get(source_type, mapping["default"])


def run(ctx: StageContext) -> dict:
    cfg, q = ctx.cfg, ctx.cfg.quality
    readers = ctx.input_readers()
    if not readers:
        return {"medical_classifier": {"status": "no input"}}
    model_dir = ctx.stage_dir / "classifier"
    gates = {s.name: s.medical_gate for s in cfg.sources if s.medical_gate is not None}
    info = {"status": "disabled"}
    if q.medical_classifier:
        info = _train_classifier(ctx, model_dir, frozenset(gates))
    gate_info, gate_model_dir = _bootstrap_gate(ctx, gates) if gates else (None, None)
    steps = [*readers]
    if q.pii:
        steps.append(PiiScrubber())
    steps += [
        QualityFilter.from_section(
            q,
            ctx.registry,
            ctx.quarantine_dir,
            ctx.name,
            model_dir if info.get("status") == "trained" else None,
            cfg.run.seed,
            gates,
            gate_model_dir,
        ),
        RecordWriter(ctx.output_dir),
    ]
    ctx.run_pipeline(steps)
    summary = {"medical_classifier": info, "pii_replacements": _pii_summary(ctx.counters())}
    if gates:
        counters = ctx.counters()
        summary["medical_gate"] = {
            "sources": gates,
            "scored_by": "bootstrap classifier (LLM labels)" if gate_model_dir else "medical classifier",
            "removed": int(counters.get("quarantined/not_medical", 0)),
            "unscored": int(counters.get("medical_gate/unscored", 0)),
            "bootstrap": gate_info,
        }
    return summary


def _bootstrap_gate(ctx: StageContext, gates: dict[str, float]) -> tuple[dict, Path | None]:
    """LLM labels on a sample of the gated sources, a classifier trained and evaluated on them.

    Returns the bootstrap report and the model directory (None: the gate uses the medical classifier)."""
    settings = ctx.cfg.quality.medical_gate_bootstrap
    if not settings.enabled:
        return {"status": "disabled"}, None
    gate_dir = ctx.stage_dir / "medical_gate"
    done = medical_gate.read_info(gate_dir)
    if done is not None and done.get("status") == "trained":  # resumed run: labels and model are kept
        return done, gate_dir
    segmentation = {code: lang.segmentation for code, lang in ctx.registry.languages.items()}
    sample_dir = gate_dir / "samples"
    sampler = GateSampler(sample_dir, frozenset(gates), segmentation, settings, ctx.cfg.run.seed)
    columns = ["id", "text", "language", "source"]
    readers = [ProjectedRecordReader(d, columns) for d in ctx.input_dirs() if list_parquet(d)]
    ctx.run_pipeline([*readers, sampler], name="gate_sample")
    items = GateSampler.merge(sample_dir, settings.sample_docs)
    cache_file = cache_path(ctx.cfg.llm, ctx.out)
    try:
        labels, accounting = medical_gate.label_sample(items, ctx.cfg.llm, settings, cache_file)
    except WaitingForEndpoint:
        return {"status": "waiting_for_endpoint", "sampled": len(items)}, None
    threshold = min(gates.values())
    info = medical_gate.train_and_evaluate(items, labels, settings, threshold, gate_dir, ctx.cfg.run.seed)
    info |= {"sampled": len(items), "llm": accounting}
    for path in sample_dir.glob("*.jsonl"):
        path.unlink()  # the sampled text is not kept: labels and the model are
    return info, gate_dir if info["status"] == "trained" else None


class GateSampler(PipelineStep):
    """Keeps the `sample_docs` documents of gated sources with the smallest id hashes of a task."""

    name = "🩺 medical gate sample"
    type = "📊 - STATS"

    def __init__(self, sample_dir: Path, sources: frozenset[str], segmentation, settings, seed: int):
        super().__init__()
        self.sample_dir = Path(sample_dir)
        self.sources = sources
        self.segmentation = segmentation
        self.settings = settings
        self.seed = seed

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        heap: list[tuple[int, str, str, str, str]] = []
        for doc in data or ():
            if doc.metadata["source"] not in self.sources:
                continue
            h = mc.id_hash(doc.id, self.seed)
            if len(heap) >= self.settings.sample_docs and -heap[0][0] < h:
                continue
            language = doc.metadata["language"]
            words = mc.classifier_text(segment(doc.text, self.segmentation.get(language, "space")))
            item = (-h, doc.id, language, doc.text[: self.settings.max_chars], words)
            if len(heap) < self.settings.sample_docs:
                heapq.heappush(heap, item)
            else:
                heapq.heapreplace(heap, item)
        with atomic.atomic_open(self.sample_dir / f"{rank:05d}.jsonl") as fh:
            for neg_h, doc_id, language, text, words in sorted(heap, reverse=True):
                fh.write(
                    json.dumps(
                        {"h": -neg_h, "id": doc_id, "language": language, "text": text, "words": words}
                    )
                    + "\n"
                )
        return
        yield

    @staticmethod
    def merge(sample_dir: Path, size: int) -> list[medical_gate.SampleItem]:
        rows = []
        for path in sorted(sample_dir.glob("[!.]*.jsonl")):
            with open(path, encoding="utf-8") as fh:
                rows += [json.loads(line) for line in fh]
        rows.sort(key=lambda r: (r["h"], r["id"]))
        return [medical_gate.SampleItem(r["id"], r["language"], r["text"], r["words"]) for r in rows[:size]]


def _train_classifier(ctx: StageContext, model_dir: Path, gated: frozenset[str] = frozenset()) -> dict:
    q = ctx.cfg.quality
    labels = {t: mc.MEDICAL for t in q.medical_positive_types} | {
        t: mc.GENERAL for t in q.medical_negative_types
    }
    settings = mc.TrainingSettings(
        q.medical_max_train_docs, q.medical_min_train_docs, q.medical_epochs, ctx.cfg.run.seed
    )
    info = _classes_too_small(ctx, model_dir, labels, settings, gated)
    if info is None:
        info = _sample_and_train(ctx, model_dir, labels, settings, gated)
    info["positive_types"] = list(q.medical_positive_types)
    info["negative_types"] = list(q.medical_negative_types)
    return info


def _classes_too_small(
    ctx: StageContext,
    model_dir: Path,
    labels: dict[str, str],
    settings: mc.TrainingSettings,
    gated: frozenset[str] = frozenset(),
) -> dict | None:
    """The "skipped" report when a class of a fold cannot reach its minimum, found from the `id` and
    `source_type` columns alone (no text is read, scrubbed or segmented); None when it may train.
    Reading stops as soon as every class of every fold has its minimum."""
    counts: Counter[tuple[int, str]] = Counter()
    for directory in ctx.input_dirs():
        for path in list_parquet(directory):
            for batch in pq.ParquetFile(path).iter_batches(columns=["id", "source_type", "source"]):
                for record_id, source_type, source in zip(*batch.to_pydict().values(), strict=True):
                    label = labels.get(source_type)
                    if label is not None and source not in gated:
                        counts[(mc.fold_of(record_id, settings.seed), label)] += 1
                if mc.class_report(counts, settings.min_docs)["status"] != "skipped":
                    return None
    info = mc.class_report(counts, settings.min_docs)
    mc.write_info(model_dir, info)
    return info


def _sample_and_train(
    ctx: StageContext,
    model_dir: Path,
    labels: dict[str, str],
    settings: mc.TrainingSettings,
    gated: frozenset[str] = frozenset(),
) -> dict:
    q = ctx.cfg.quality
    segmentation = {code: lang.segmentation for code, lang in ctx.registry.languages.items()}
    sample_dir = model_dir / "samples"
    sampler = MedicalSampler(
        sample_dir, labels, segmentation, q.medical_max_train_docs, ctx.cfg.run.seed, q.pii, gated
    )
    columns = ["id", "text", "language", "source_type", "source"]
    readers = [ProjectedRecordReader(d, columns) for d in ctx.input_dirs() if list_parquet(d)]
    ctx.run_pipeline([*readers, sampler], name="sample")
    ctx.run_pipeline(
        [MedicalClassifierTrainer(sample_dir, model_dir, settings)], name="train", tasks=1, workers=1
    )
    for path in sample_dir.glob("*.jsonl"):
        path.unlink()  # training text is not kept: only the models are
    return mc.read_info(model_dir)


def _pii_summary(counters: dict[str, float]) -> dict:
    """{"total": {TYPE: n}, "per_language": {lang: {TYPE: n}}} from the `pii/<TYPE>/<lang>` counters."""
    total: dict[str, int] = defaultdict(int)
    per_language: dict[str, dict[str, int]] = defaultdict(dict)
    for key, value in sorted(counters.items()):
        parts = key.split("/")
        if parts[0] == "pii" and len(parts) == 3:
            total[parts[1]] += int(value)
            per_language[parts[2]][parts[1]] = int(value)
    return {"total": dict(sorted(total.items())), "per_language": dict(per_language)}
