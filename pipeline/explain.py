"""`medbabel explain <id>`: where one record went through the stages, and every signal and decision
of language ID and quality on it, recomputed with the run's config.

It finds the record in each stage's output and quarantine (`OUT/<stage>/{output,quarantine}`), shows
its provenance (source, file, position) and the stage that set it aside with the reason, then runs
the language-ID verification and the quality rules on it again: the model's top predictions, the
declared language's probability, the common-word shares, and each rule's signal, bound, confidence
and score (or why the rule did not judge it).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from pipeline.config import Config
from pipeline.record_io import list_parquet
from pipeline.registry import load_registry


def find_record(out: Path, record_id: str) -> list[tuple[str, str, dict]]:
    """(stage, "output" | "quarantine", row) for every place the record is, in stage order."""
    from pipeline.dag import STAGES

    found = []
    for spec in STAGES:
        for kind in ("output", "quarantine"):
            for path in list_parquet(out / spec.name / kind):
                rows = pq.read_table(path, filters=[("id", "==", record_id)]).to_pylist()
                found += [(spec.name, kind, row) for row in rows]
    return found


def explain(cfg: Config, out: Path, record_id: str) -> dict:
    """Everything `medbabel explain` prints, as a dict."""
    places = find_record(out, record_id)
    if not places:
        raise KeyError(f"record {record_id!r} is in no stage output or quarantine under {out}")
    row = places[-1][2]
    quarantined = [(stage, r) for stage, kind, r in places if kind == "quarantine"]
    return {
        "id": record_id,
        "language": row["language"],
        "source": row["source"],
        "source_type": row["source_type"],
        "provenance": {k: row.get(k) for k in ("source_id", "source_file", "source_position", "parent_id")},
        "stages": [f"{stage}:{kind}" for stage, kind, _ in places],
        "removed_by": (
            {
                "stage": quarantined[-1][0],
                "reason": quarantined[-1][1]["quarantine_reason"],
                "detail": quarantined[-1][1]["quarantine_detail"],
            }
            if quarantined
            else None
        ),
        "text": row["text"],
        "langid": _langid(cfg, row),
        "quality": _quality(cfg, row),
    }


def _langid(cfg: Config, row: dict) -> dict:
    from pipeline.text.common_words import common_word_shares
    from pipeline.text.lid_verify import agrees, effective_length
    from pipeline.text.normalize import content_text
    from stages.langid import make_verifier

    registry = load_registry(cfg.registry_path())
    verifier = make_verifier(cfg.langid, registry, cfg.resolve)
    text = content_text(row["text"], row.get("messages"), row.get("exam"))
    predictions = verifier.identifier.predict([text], k=verifier.k)[0]
    verdict = verifier.verify(text, row["language"], predictions)
    group = registry.confusable_with(row["language"])
    look_alikes = registry.lid_look_alikes(verifier.model, row["language"])
    t = verifier.thresholds
    shares = common_word_shares(text, verifier.common_words, 1) or {}
    length = effective_length(text)
    agreeing = sum(p.score for p in predictions if agrees(p, group, look_alikes))
    return {
        "keep": verdict.keep,
        "reason": verdict.reason,
        "detail": verdict.detail,
        "predictions": [(p.language or p.label, round(p.score, 4)) for p in predictions],
        "declared_group": sorted(group) + list(look_alikes),
        "declared_group_probability": round(agreeing, 4),
        "threshold": t.for_language(row["language"]),
        "second_opinion": verifier.second_opinion(text) if verifier.second_opinion else "off",
        "length": length,
        "judged_as": (
            "very short: script and a confident top prediction only"
            if length < t.min_chars
            else "short: removed only on contrary evidence"
            if length < t.short_text_chars
            else "long"
        ),
        "common_word_shares": {k: round(v, 3) for k, v in sorted(shares.items(), key=lambda kv: -kv[1])[:5]},
    }


def _quality(cfg: Config, row: dict) -> dict:
    from pipeline.text.quality_signals import (
        RULES,
        assess,
        confidence,
        judged_bound,
        load_language_rules,
        rule_score,
    )
    from pipeline.text.segment import segment

    registry = load_registry(cfg.registry_path())
    q = cfg.quality
    rules = load_language_rules(registry, q.rules)
    lang_rules = rules.get(row["language"]) or rules["default"]
    source_type = row["source_type"]
    heuristics = source_type in q.heuristic_types
    min_words = q.min_words.get(source_type, q.min_words["default"])
    result = assess(
        row["text"],
        segment(row["text"], lang_rules.segmentation),
        lang_rules,
        min_words,
        None,
        0.0,
        heuristics,
    )
    signals = result.signals
    values = {**signals}
    if signals.get("stopword_ratio") is not None:
        values["stopwords"] = round(signals["stopword_ratio"] * signals["n_words"])
    bounds = {**lang_rules.bounds, "min_words": min_words * lang_rules.chars_per_word}
    table = []
    for rule in RULES:
        value = values.get(rule.signal)
        if rule.bound not in bounds or value is None:
            continue
        c = confidence(rule, signals, lang_rules, heuristics)
        bound = bounds[rule.bound]
        entry = {"rule": rule.bound, "signal": rule.signal, "value": round(float(value), 4), "bound": bound}
        if not c:
            why = (
                "web heuristic, not applied to " + source_type
                if not (rule.defect or heuristics)
                else "text too short"
            )
            entry["judged"] = f"no ({why})"
        else:
            loosened = judged_bound(rule, bound, c, signals)
            entry.update(
                confidence=round(c, 3),
                bound_used=round(loosened, 4),
                score=round(rule_score(value, loosened, rule.upper, rule.margin, rule.min_margin), 3),
            )
        table.append(entry)
    threshold = q.thresholds.get(source_type, q.thresholds["default"])
    return {
        "score_without_medical": round(result.score, 4),
        "threshold": threshold,
        "weakest": result.weakest,
        "heuristics_apply": heuristics,
        "rules": table,
        "stored_quality_score": row.get("quality_score"),
    }


def format_explanation(info: dict) -> str:
    lines = [
        f"record {info['id']}  [{info['language']}, {info['source']} ({info['source_type']})]",
        "  provenance: "
        + (", ".join(f"{k}={v}" for k, v in info["provenance"].items() if v is not None) or "-"),
        "  seen in:    " + " -> ".join(info["stages"]),
    ]
    removed = info["removed_by"]
    lines.append(
        f"  removed by: {removed['stage']}: {removed['reason']} ({removed['detail']})"
        if removed
        else "  kept"
    )
    text = " ".join(info["text"].split())
    lines.append(f"  text:       {text[:300]!r}")
    lid = info["langid"]
    lines += [
        f"  language ID: {'keep' if lid['keep'] else 'remove: ' + str(lid['reason'])} - {lid['judged_as']} ({lid['length']} chars)",
        f"    predictions: {', '.join(f'{code} {score:.2f}' for code, score in lid['predictions'])}",
        f"    declared group {'/'.join(lid['declared_group'])}: {lid['declared_group_probability']:.2f} "
        f"(threshold {lid['threshold']:.2f})",
        f"    common-word shares: {json.dumps(lid['common_word_shares'])}",
        f"    second opinion (CLD2): {lid['second_opinion'] or 'no registry language'}",
    ]
    if lid["detail"]:
        lines.append(f"    detail: {lid['detail']}")
    q = info["quality"]
    lines.append(
        f"  quality: score {q['score_without_medical']:.3f} without the medical classifier "
        f"(threshold {q['threshold']}), weakest {q['weakest'] or '-'}; web heuristics "
        f"{'apply' if q['heuristics_apply'] else 'do not apply'}"
    )
    for r in q["rules"]:
        judged = r.get("judged")
        tail = (
            judged
            if judged
            else f"confidence {r['confidence']:.2f}, bound used {r['bound_used']:g}, score {r['score']:.2f}"
        )
        lines.append(f"    {r['rule']:<28} {r['signal']:<22} {r['value']:>10g}  bound {r['bound']:g}  {tail}")
    return "\n".join(lines)
