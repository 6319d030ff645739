"""Language-ID evaluation: paragraphs whose language is known, verified as declared and as mis-declared.

Data: TICO-19 health sentences (consecutive sentences of one document joined into paragraphs,
codes mapped with `registry.normalize_code`, languages outside the registry used only as
"another language" text) and `bench/heldout_paragraphs.jsonl` (original paragraphs for the
registry languages TICO-19 lacks).

Figures, per declared language and overall:
* keep rate: paragraphs truly in the declared language that verification keeps (goal >= 0.98);
* catch rate: paragraphs in another language (outside the declared language's confusable group),
  declared as this one, that verification rejects (goal >= 0.95);
* accuracy: top-1 prediction equals the true language, on languages the model has (goal >= 0.90),
  strictly and counting a confusable-group partner as correct.
"""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.registry import Registry, UnknownLanguageError
from pipeline.text.lid_verify import LanguageVerifier

HELDOUT = Path(__file__).resolve().parent / "heldout_paragraphs.jsonl"
SENTENCES_PER_PARAGRAPH = 4


@dataclass(frozen=True)
class Paragraph:
    language: str  # registry code, or the raw TICO code for languages outside the registry
    in_registry: bool
    text: str
    origin: str  # tico19 | heldout


def load_paragraphs(tico_path: Path, registry: Registry, heldout: Path = HELDOUT) -> list[Paragraph]:
    """TICO-19 paragraphs (every language) and the held-out paragraphs."""
    by_doc: dict[tuple[str, str], list[str]] = defaultdict(list)
    with gzip.open(tico_path, "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if row["text"].strip() and row["text"] != "{NS}":
                by_doc[(row["lang"], row["doc"])].append(row["text"].strip())
    out = []
    for (raw, _), sentences in sorted(by_doc.items()):
        try:
            code, known = registry.normalize_code(raw), True
        except UnknownLanguageError:
            code, known = raw, False
        for i in range(0, len(sentences), SENTENCES_PER_PARAGRAPH):
            out.append(Paragraph(code, known, " ".join(sentences[i : i + SENTENCES_PER_PARAGRAPH]), "tico19"))
    with open(heldout, encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            out.append(Paragraph(registry.normalize_code(row["lang"]), True, row["text"], "heldout"))
    return out


def judged_pairs(
    paragraphs: list[Paragraph], declared_codes: Iterable[str], registry: Registry
) -> Iterator[tuple[int, str, bool]]:
    """What the keep and catch rates count: (paragraph index, declared language, whether the paragraph
    is truly in it). A paragraph counts for keep as its own language, and for catch as every other
    language outside its confusable group (a confusable partner is not another language)."""
    declared_codes = list(declared_codes)
    groups = {code: registry.confusable_with(code) for code in declared_codes}
    for i, para in enumerate(paragraphs):
        for declared in declared_codes:
            if para.in_registry and para.language == declared:
                yield i, declared, True
            elif not (para.in_registry and para.language in groups[declared]):
                yield i, declared, False


def evaluate(verifier: LanguageVerifier, paragraphs: list[Paragraph]) -> dict:
    """Keep / catch / accuracy figures per language and overall (macro: every language weighs the same)."""
    registry = verifier.registry
    predictions = verifier.identifier.predict([p.text for p in paragraphs], k=verifier.k)
    per_lang: dict[str, dict] = {
        code: {"paragraphs": 0, "kept": 0, "catch_tried": 0, "caught": 0, "top1": 0, "top1_group": 0}
        for code in registry.codes
    }
    caught_by_source: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    groups = {code: registry.confusable_with(code) for code in registry.codes}
    for i, declared, truly in judged_pairs(paragraphs, registry.codes, registry):
        para, preds = paragraphs[i], predictions[i]
        keep = verifier.verify(para.text, declared, preds).keep
        stats = per_lang[declared]
        if truly:
            stats["paragraphs"] += 1
            stats["kept"] += keep
            top = preds[0].language if preds else None
            stats["top1"] += top == declared
            stats["top1_group"] += top in groups[declared]
        else:
            stats["catch_tried"] += 1
            stats["caught"] += not keep
            if para.in_registry:
                caught_by_source[para.language][0] += not keep
                caught_by_source[para.language][1] += 1

    def rate(a: int, b: int) -> float | None:
        return round(a / b, 4) if b else None

    table = {}
    for code, s in per_lang.items():
        covered = bool(registry.get(code).lid_labels_for(verifier.model))
        table[code] = {
            "model_has_language": covered,
            "paragraphs": s["paragraphs"],
            "keep_rate": rate(s["kept"], s["paragraphs"]),
            "catch_rate": rate(s["caught"], s["catch_tried"]),
            "caught_when_text_is_this_language": rate(*caught_by_source[code]),
            "accuracy": rate(s["top1"], s["paragraphs"]) if covered else None,
            "accuracy_group": rate(s["top1_group"], s["paragraphs"]) if covered else None,
        }

    def mean(key: str, only_covered: bool = False) -> float:
        values = [
            row[key]
            for row in table.values()
            if row[key] is not None and (row["model_has_language"] or not only_covered)
        ]
        return round(sum(values) / len(values), 4)

    kept = sum(s["kept"] for s in per_lang.values())
    total = sum(s["paragraphs"] for s in per_lang.values())
    caught = sum(s["caught"] for s in per_lang.values())
    tried = sum(s["catch_tried"] for s in per_lang.values())
    return {
        "paragraphs": len(paragraphs),
        "paragraphs_in_registry_languages": total,
        "languages_evaluated": sum(1 for s in per_lang.values() if s["paragraphs"]),
        "keep_rate": round(kept / total, 4),
        "keep_rate_macro": mean("keep_rate"),
        "catch_rate": round(caught / tried, 4),
        "catch_rate_macro": mean("catch_rate"),
        "accuracy_macro": mean("accuracy", only_covered=True),
        "accuracy_group_macro": mean("accuracy_group", only_covered=True),
        "min_keep_rate": min((r["keep_rate"], c) for c, r in table.items() if r["keep_rate"] is not None),
        "min_catch_rate": min((r["catch_rate"], c) for c, r in table.items() if r["catch_rate"] is not None),
        "per_language": table,
    }
