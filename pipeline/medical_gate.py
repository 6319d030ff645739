"""The medical-relevance gate's bootstrap, FineWeb-Edu style: an LLM labels a sample, fastText learns it.

Documents of gated sources (web/general sources with `medical_gate`) are sampled by a seeded id
hash; the LLM endpoint (pipeline/llm: the client, its request cache and budget) labels each as
medical or not with a short rubric; the labels split by hash into a training part and a held-out
part; a fastText classifier trained on the first is evaluated on the second (precision and recall
of the medical class at the gate's threshold, in the stage summary) and scores every other
document of the gated sources. Labelled documents keep their LLM label (score 1 or 0).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import xxhash

from pipeline import atomic
from pipeline.config import LLMSection, MedicalGateBootstrap
from pipeline.llm.cache import CacheKey, normalize_segment
from pipeline.llm.session import CheckFailed, LLMSession, WaitingForEndpoint
from pipeline.record_io import Rejection
from pipeline.text import medical_classifier as mc

RUBRIC = """You judge whether a document belongs in a corpus of medical text.
Answer "medical" if its main subject is health or medicine: diseases, symptoms, diagnosis, treatment,
drugs, anatomy, physiology, nursing, public health, medical research or health care.
Answer "not medical" for anything else (news, sport, cooking, travel, shopping, adverts, gambling, adult
content, spam), even when it mentions health in passing.
Reply with exactly one of: medical | not medical"""
TASK = "medical_label"
LABELS_FILE = "labels.jsonl"
MODEL_FILE = "gate.bin"
INFO_FILE = "info.json"


def label_messages(text: str) -> list[dict]:
    return [{"role": "system", "content": RUBRIC}, {"role": "user", "content": text}]


def parse_label(answer: str) -> str | None:
    """mc.MEDICAL, mc.GENERAL, or None for an answer that is neither."""
    words = answer.strip().strip(".\"'*").lower().split()
    if words[:2] == ["not", "medical"] or words[:1] in (["non-medical"], ["nonmedical"]):
        return mc.GENERAL
    if words[:1] == ["medical"]:
        return mc.MEDICAL
    return None


def _check(answer: str) -> Rejection | None:
    if parse_label(answer) is None:
        return Rejection("bad_label", f"reply must be 'medical' or 'not medical', got {answer[:60]!r}")
    return None


@dataclass(frozen=True)
class SampleItem:
    id: str
    language: str
    text: str  # the first max_chars characters
    words: str  # classifier text (segmented tokens)


def label_sample(
    items: list[SampleItem], llm: LLMSection, settings: MedicalGateBootstrap, cache_file: Path
) -> tuple[dict[str, str], dict]:
    """LLM labels {id: label} of the sample and the request accounting; unlabelled items (a reply
    that failed its check twice, a request that failed for good) are counted, not guessed."""
    session = LLMSession(llm, cache_file, stage_key="quality/medical_gate")
    labels: dict[str, str] = {}
    failures: dict[str, int] = {}

    async def one(item: SampleItem) -> tuple[str, str | None]:
        source = normalize_segment(item.text)
        key = CacheKey(llm.model, settings.prompt_version, TASK, item.language, item.language, source)
        try:
            answer = await session.ask(key, lambda _reason: label_messages(source), _check)
        except CheckFailed:
            failures["bad_label"] = failures.get("bad_label", 0) + 1
            return item.id, None
        except WaitingForEndpoint:
            raise
        except Exception as exc:  # LLMFailure, BudgetReached: this item stays unlabelled
            kind = getattr(exc, "kind", type(exc).__name__)
            failures[kind] = failures.get(kind, 0) + 1
            return item.id, None
        return item.id, parse_label(answer)

    try:
        for doc_id, label in session.run(session.gather_in_order([one(item) for item in items])):
            if label is not None:
                labels[doc_id] = label
        accounting = {
            "requests": session.accounting.total_requests,
            "cost_usd": round(session.accounting.spent, 6),
            "unlabelled": failures,
        }
    finally:
        session.close()
    return labels, accounting


def is_holdout(doc_id: str, fraction: float, seed: int) -> bool:
    return xxhash.xxh64_intdigest(f"holdout\x1f{doc_id}", seed=seed) < fraction * 2**64


def train_and_evaluate(
    items: list[SampleItem],
    labels: dict[str, str],
    settings: MedicalGateBootstrap,
    threshold: float,
    model_dir: Path,
    seed: int,
) -> dict:
    """Train on the non-held-out labels, evaluate on the held-out ones; writes labels, model and info."""
    model_dir.mkdir(parents=True, exist_ok=True)
    by_id = {item.id: item for item in items}
    labelled = [(doc_id, label) for doc_id, label in sorted(labels.items())]
    atomic.write_text(
        model_dir / LABELS_FILE,
        "".join(json.dumps({"id": i, "label": label}) + "\n" for i, label in labelled),
    )
    train = [(i, label) for i, label in labelled if not is_holdout(i, settings.holdout_fraction, seed)]
    holdout = [(i, label) for i, label in labelled if is_holdout(i, settings.holdout_fraction, seed)]
    counts = {label: sum(lab == label for _, lab in train) for label in (mc.MEDICAL, mc.GENERAL)}
    info: dict = {
        "labelled": {label: sum(lab == label for _, lab in labelled) for label in (mc.MEDICAL, mc.GENERAL)},
        "train": counts,
        "holdout": len(holdout),
    }
    if min(counts.values()) < settings.min_labels:
        info.update(
            status="skipped", reason=f"training labels per class {counts} < min_labels {settings.min_labels}"
        )
        atomic.write_json(model_dir / INFO_FILE, info, indent=2)
        return info
    train_file = model_dir / ".train.txt"
    train_file.write_text(
        "".join(f"{mc.LABEL_PREFIX}{label} {by_id[i].words}\n" for i, label in train), encoding="utf-8"
    )
    with atomic.atomic_path(model_dir / MODEL_FILE) as tmp:
        mc.train_model(train_file, tmp, seed, settings.epochs)
    train_file.unlink()
    scorer = GateScorer(model_dir, use_labels=False)
    scores = scorer.score([i for i, _ in holdout], [by_id[i].words for i, _ in holdout])
    info["holdout_metrics"] = evaluate([label for _, label in holdout], scores, threshold)
    info["status"] = "trained"
    atomic.write_json(model_dir / INFO_FILE, info, indent=2)
    return info


def evaluate(truth: list[str], scores: list[float], threshold: float) -> dict:
    """Precision and recall of the medical class when documents scoring >= threshold are kept."""
    kept = [s >= threshold for s in scores]
    medical = [t == mc.MEDICAL for t in truth]
    tp = sum(k and m for k, m in zip(kept, medical, strict=True))
    fp = sum(k and not m for k, m in zip(kept, medical, strict=True))
    fn = sum(m and not k for k, m in zip(kept, medical, strict=True))
    return {
        "threshold": threshold,
        "documents": len(truth),
        "precision": round(tp / (tp + fp), 4) if tp + fp else None,
        "recall": round(tp / (tp + fn), 4) if tp + fn else None,
        "true_positives": tp,
        "false_positives": fp,
        "false_negatives": fn,
    }


class GateScorer:
    """P(medical) for gated documents: the LLM label where there is one, else the bootstrap model."""

    def __init__(self, model_dir: Path, use_labels: bool = True):
        import fasttext

        self.model = fasttext.load_model(str(model_dir / MODEL_FILE))
        self.labels: dict[str, str] = {}
        if use_labels:
            with open(model_dir / LABELS_FILE, encoding="utf-8") as fh:
                for line in fh:
                    item = json.loads(line)
                    self.labels[item["id"]] = item["label"]

    def score(self, doc_ids: list[str], texts: list[str]) -> list[float]:
        out = [0.0] * len(texts)
        todo = []
        for i, doc_id in enumerate(doc_ids):
            label = self.labels.get(doc_id)
            if label is None:
                todo.append(i)
            else:
                out[i] = 1.0 if label == mc.MEDICAL else 0.0
        if todo:
            labels, probs = self.model.predict([texts[i] or " " for i in todo], k=2)
            for i, doc_labels, doc_probs in zip(todo, labels, probs, strict=True):
                by_label = dict(zip(doc_labels, doc_probs, strict=True))
                medical = by_label.get(mc.LABEL_PREFIX + mc.MEDICAL)
                if medical is None:
                    medical = 1.0 - by_label.get(mc.LABEL_PREFIX + mc.GENERAL, 1.0)
                out[i] = float(min(1.0, max(0.0, medical)))
        return out


def read_info(model_dir: Path) -> dict | None:
    path = model_dir / INFO_FILE
    return json.loads(path.read_text()) if path.exists() else None
