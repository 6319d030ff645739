"""The medical-domain classifier: fastText, trained at run time on the corpus itself (no model ships).

Documents of the medical source types are the positive class, those of the general/web types the
negative one. Every document falls in one of two folds by a seeded hash of its id; the model of
fold k is trained on fold k's sample and scores the documents of the *other* fold, so no document
is scored by a model that saw it (out-of-fold scores: training documents are not flattered).
Training is deterministic: the sample is the documents with the smallest id hashes, in hash order,
and fastText runs on one thread with a fixed seed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import xxhash

from pipeline import atomic

MEDICAL = "medical"
GENERAL = "general"
LABEL_PREFIX = "__label__"
MAX_TOKENS = 256  # the classifier reads a document's first tokens


def id_hash(doc_id: str, seed: int) -> int:
    return xxhash.xxh64_intdigest(doc_id, seed=seed)


def fold_of(doc_id: str, seed: int) -> int:
    return id_hash(doc_id, seed) & 1


def classifier_text(words: list[str]) -> str:
    """What the classifier reads: the document's first segmented tokens, space-joined."""
    return " ".join(words[:MAX_TOKENS])


@dataclass(frozen=True)
class TrainingSettings:
    max_docs: int  # per class and fold
    min_docs: int  # per class and fold, else no classifier
    epochs: int
    seed: int


def train(sample_files: list[Path], model_dir: Path, settings: TrainingSettings) -> dict:
    """Train the two fold models from the per-task samples; returns (and writes) `info.json`.

    Each sample file holds JSON lines {h, fold, label, text}; the `max_docs` smallest hashes per
    class and fold are kept, so the result does not depend on how the corpus was split into tasks.
    """
    model_dir.mkdir(parents=True, exist_ok=True)
    pools: dict[tuple[int, str], list[tuple[int, str]]] = {}
    for path in sorted(sample_files):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                item = json.loads(line)
                pools.setdefault((item["fold"], item["label"]), []).append((item["h"], item["text"]))
    counts = {}
    for key, items in pools.items():
        items.sort()
        del items[settings.max_docs :]
        counts[key] = len(items)
    info = class_report(counts, settings.min_docs)
    if info["status"] == "skipped":
        write_info(model_dir, info)
        return info
    for fold in (0, 1):
        train_file = model_dir / f".fold{fold}.train.txt"
        lines = _write_training_file(
            train_file, pools[(fold, MEDICAL)], pools[(fold, GENERAL)], settings.seed
        )
        with atomic.atomic_path(model_path(model_dir, fold)) as tmp:
            _train_isolated(train_file, tmp, settings, epochs_for(lines, settings.epochs))
        train_file.unlink()
    info["status"] = "trained"
    write_info(model_dir, info)
    return info


def class_report(counts: dict[tuple[int, str], int], min_docs: int) -> dict:
    """Documents per fold and class, and status "skipped" (with the reason) when a class of a fold
    has fewer than `min_docs`; else status "pending" (training may go ahead)."""
    info: dict = {
        "folds": [
            {"fold": f, MEDICAL: counts.get((f, MEDICAL), 0), GENERAL: counts.get((f, GENERAL), 0)}
            for f in (0, 1)
        ],
        "status": "pending",
    }
    too_few = [
        f"fold {f} has {counts.get((f, label), 0)} {label} documents"
        for f in (0, 1)
        for label in (MEDICAL, GENERAL)
        if counts.get((f, label), 0) < min_docs
    ]
    if too_few:
        info.update(status="skipped", reason=f"{'; '.join(too_few)} (need {min_docs})")
    return info


# fastText 0.9.2 initialises only the first tenth of the input matrix when thread=1 (the rest keeps
# whatever the allocator hands out), so training runs in a fresh process whose allocations are
# zero-filled (MALLOC_PERTURB_=255 on glibc; fresh pages elsewhere): the same data then always gives
# the same model, and never one with garbage rows.
_TRAIN_SCRIPT = """
import json, sys
import fasttext
job = json.loads(sys.argv[1])
import numpy as np
model = fasttext.train_supervised(input=job["input"], **job["params"])
model.save_model(job["output"])
# fastText reports neither a failed write (a full disk) nor a short read: read the model back
saved = fasttext.load_model(job["output"])
for name in ("get_input_matrix", "get_output_matrix"):
    if not np.array_equal(getattr(model, name)(), getattr(saved, name)()):
        sys.exit(f"{job['output']}: the saved model does not read back as trained (disk full?)")
"""


def _train_isolated(train_file: Path, output: Path, settings: TrainingSettings, epochs: int) -> None:
    params = dict(
        epoch=epochs,
        lr=0.5,
        wordNgrams=2,
        dim=16,
        minCount=1,
        bucket=1 << 18,
        loss="softmax",
        thread=1,
        seed=settings.seed,
        verbose=0,
    )
    job = json.dumps({"input": str(train_file), "output": str(output), "params": params})
    env = {**os.environ, "MALLOC_PERTURB_": "255"}
    result = subprocess.run(
        [sys.executable, "-c", _TRAIN_SCRIPT, job], env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"fastText training on {train_file} failed:\n{result.stderr[-2000:]}")


def train_model(train_file: Path, output: Path, seed: int, epochs: int) -> None:
    """A fastText model from a labelled training file, trained deterministically (as the fold models)."""
    with open(train_file, encoding="utf-8") as fh:
        lines = sum(1 for _ in fh)
    _train_isolated(train_file, output, TrainingSettings(0, 0, epochs, seed), epochs_for(lines, epochs))


def _write_training_file(path: Path, medical: list, general: list, seed: int) -> int:
    """Both classes at equal weight (the smaller one repeated), in a seeded order; returns the line count."""
    size = max(len(medical), len(general))
    lines = []
    for label, items in ((MEDICAL, medical), (GENERAL, general)):
        for i in range(size):
            h, text = items[i % len(items)]
            lines.append((xxhash.xxh64_intdigest(f"{h}:{i}", seed=seed), f"{LABEL_PREFIX}{label} {text}"))
    lines.sort()
    path.write_text("".join(line + "\n" for _, line in lines), encoding="utf-8")
    return len(lines)


def epochs_for(lines: int, configured: int) -> int:
    """Small samples get more passes (at least ~5,000 example updates, at most 100 epochs)."""
    return max(configured, min(100, -(-5_000 // max(lines, 1))))


def model_path(model_dir: Path, fold: int) -> Path:
    return model_dir / f"medical-fold{fold}.bin"


def read_info(model_dir: Path) -> dict:
    path = model_dir / "info.json"
    return json.loads(path.read_text()) if path.exists() else {"status": "disabled"}


def write_info(model_dir: Path, info: dict) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_json(model_dir / "info.json", info, indent=2)


class MedicalScorer:
    """Loads the two fold models once and scores documents out of fold."""

    def __init__(self, model_dir: Path, seed: int):
        import fasttext

        self.models = [fasttext.load_model(str(model_path(model_dir, fold))) for fold in (0, 1)]
        self.seed = seed

    def score(self, doc_ids: list[str], texts: list[str]) -> list[float | None]:
        """P(medical) for each document, from the model of the other fold (None for empty text)."""
        scores: list[float | None] = [None] * len(texts)
        for fold in (0, 1):
            idx = [i for i, d in enumerate(doc_ids) if texts[i] and fold_of(d, self.seed) == fold]
            if not idx:
                continue
            labels, probs = self.models[1 - fold].predict([texts[i] for i in idx], k=2)
            for i, doc_labels, doc_probs in zip(idx, labels, probs, strict=True):
                by_label = dict(zip(doc_labels, doc_probs, strict=True))
                medical = by_label.get(LABEL_PREFIX + MEDICAL)
                if medical is None:
                    medical = 1.0 - by_label.get(LABEL_PREFIX + GENERAL, 1.0)
                scores[i] = float(min(1.0, max(0.0, medical)))
        return scores
