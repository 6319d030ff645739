"""The medical-relevance gate of web sources (quality stage): the run-time classifier as a per-source
filter with a threshold, curated sources exempt; and the FineWeb-Edu-style bootstrap, whose labels
come from an LLM (the loopback server) and whose classifier is evaluated on held-out labels."""

from __future__ import annotations

import gzip
import json
from collections import defaultdict

import pytest
from conftest import fake_upstream, record
from helpers.llm_server import FakeLLM, LoopbackServer, medical_label
from test_quality import GENERAL_TOPICS

from pipeline.dag import run_stage
from pipeline.medical_gate import evaluate, parse_label
from pipeline.record_io import list_parquet, read_records


def _tico_paragraphs(shared_data, per_paragraph: int = 3) -> list[str]:
    by_doc = defaultdict(list)
    with gzip.open(shared_data / "tico19_health_sentences.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if row["lang"] == "en" and row["text"] != "{NS}":
                by_doc[row["doc"]].append(row["text"])
    paragraphs = []
    for _, sentences in sorted(by_doc.items()):
        for i in range(0, len(sentences) - per_paragraph + 1, per_paragraph):
            paragraphs.append(" ".join(sentences[i : i + per_paragraph]))
    return paragraphs


def _general(i: int) -> str:
    parts = [GENERAL_TOPICS[(i + k) % len(GENERAL_TOPICS)][1] for k in range(0, 24, 5 + i % 3)]
    return f"Report {i} on {GENERAL_TOPICS[i % len(GENERAL_TOPICS)][0]}. " + " ".join(parts)


def _corpus(shared_data) -> tuple[list[dict], set[str], set[str]]:
    """Curated papers and general text (the classifier's classes), and a crawl mixing medical pages
    (real TICO-19 health text) with non-medical ones."""
    paragraphs = _tico_paragraphs(shared_data)
    rows = [
        record(f"paper-{i:03d}", t, source="papers", source_type="paper")
        for i, t in enumerate(paragraphs[::2])
    ]
    rows += [record(f"gen-{i:03d}", _general(i), source="misc", source_type="general") for i in range(40)]
    crawl_medical = {f"web-med-{i:03d}" for i in range(len(paragraphs[1::2]))}
    rows += [
        record(f"web-med-{i:03d}", t, source="crawl", source_type="web")
        for i, t in enumerate(paragraphs[1::2])
    ]
    crawl_other = {f"web-other-{i:03d}" for i in range(60)}
    rows += [
        record(f"web-other-{i:03d}", _general(100 + i), source="crawl", source_type="web") for i in range(60)
    ]
    return rows, crawl_medical, crawl_other


def _run(tmp_path, write_config, rows, quality: dict, llm: dict | None = None):
    fake_upstream(tmp_path, "families", rows)
    sources = [
        {
            "name": "papers",
            "path": "x",
            "format": "jsonl",
            "source_type": "paper",
            "license": "x",
            "language": "en",
        },
        {
            "name": "misc",
            "path": "x",
            "format": "jsonl",
            "source_type": "general",
            "license": "x",
            "language": "en",
        },
        {
            "name": "crawl",
            "path": "x",
            "format": "jsonl",
            "source_type": "web",
            "license": "x",
            "language": "en",
            "medical_gate": 0.5,
        },
    ]
    data = {"executor": {"tasks": 2, "workers": 1}, "sources": sources, "quality": quality}
    if llm:
        data["llm"] = llm
    _, cfg = write_config(data)
    summary = run_stage("quality", cfg, tmp_path)
    kept = {r["id"]: r for p in list_parquet(tmp_path / "quality" / "output") for r in read_records(p)}
    removed = {r["id"]: r for p in list_parquet(tmp_path / "quality" / "quarantine") for r in read_records(p)}
    return summary, kept, removed


@pytest.mark.slow
def test_gate_with_the_medical_classifier_filters_the_gated_source_only(tmp_path, write_config, shared_data):
    rows, crawl_medical, crawl_other = _corpus(shared_data)
    summary, kept, removed = _run(tmp_path, write_config, rows, {"medical_min_train_docs": 5})
    gate = summary["medical_gate"]
    assert gate["sources"] == {"crawl": 0.5} and gate["scored_by"] == "medical classifier"
    not_medical = {i for i, r in removed.items() if r["quarantine_reason"] == "not_medical"}
    assert not_medical and not_medical <= {r["id"] for r in rows if r["source"] == "crawl"}  # curated exempt
    assert gate["removed"] == len(not_medical)
    assert len(not_medical & crawl_other) >= 0.8 * len(crawl_other)
    assert len(crawl_medical & not_medical) <= 0.1 * len(crawl_medical)  # (some fall to other rules)
    detail = removed[sorted(not_medical)[0]]["quarantine_detail"]
    assert "< medical_gate 0.5 of source crawl" in detail
    # general documents are the classifier's negatives and stay (they are not gated)
    assert all(
        f"gen-{i:03d}" in kept or removed[f"gen-{i:03d}"]["quarantine_reason"] != "not_medical"
        for i in range(40)
    )


@pytest.mark.slow
def test_bootstrap_labels_with_the_llm_trains_and_reports_holdout_precision_recall(
    tmp_path, write_config, shared_data
):
    rows, crawl_medical, crawl_other = _corpus(shared_data)
    quality = {
        "medical_min_train_docs": 5,
        "medical_gate_bootstrap": {
            "enabled": True,
            "sample_docs": 80,
            "min_labels": 10,
            "holdout_fraction": 0.25,
        },
    }
    with LoopbackServer(FakeLLM({})) as server:
        llm = {"base_url": server.base_url, "model": "test-model", "max_retries": 1}
        summary, kept, removed = _run(tmp_path, write_config, rows, quality, llm)
        requests = server.llm.requests
    boot = summary["medical_gate"]["bootstrap"]
    assert summary["medical_gate"]["scored_by"] == "bootstrap classifier (LLM labels)"
    assert boot["status"] == "trained" and boot["sampled"] == 80 and requests == 80
    assert boot["labelled"]["medical"] + boot["labelled"]["general"] == 80
    metrics = boot["holdout_metrics"]
    assert metrics["documents"] == boot["holdout"] > 5
    assert metrics["precision"] >= 0.8 and metrics["recall"] >= 0.8
    crawl_ids = crawl_medical | crawl_other
    truth = {r["id"]: medical_label(r["text"]) for r in rows if r["id"] in crawl_ids}
    not_medical = {i for i, r in removed.items() if r["quarantine_reason"] == "not_medical"}
    wrong = [i for i in crawl_ids if (i in not_medical) != (truth[i] == "not medical")]
    assert len(wrong) <= 0.1 * len(crawl_ids), wrong
    # the labels are cached: a fresh run of the stage sends no request
    with LoopbackServer(FakeLLM({})) as server:
        llm = {"base_url": server.base_url, "model": "test-model", "max_retries": 1}
        (tmp_path / "quality").rename(tmp_path / "quality.first")
        again, _, _ = _run(tmp_path, write_config, rows, quality, llm)
        assert server.llm.requests == 0
    assert again["medical_gate"]["bootstrap"]["holdout_metrics"] == metrics


@pytest.mark.slow
def test_bootstrap_offline_falls_back_to_the_medical_classifier(tmp_path, write_config, shared_data):
    rows, _, _ = _corpus(shared_data)
    quality = {"medical_min_train_docs": 5, "medical_gate_bootstrap": {"enabled": True, "sample_docs": 20}}
    summary, _, _ = _run(tmp_path, write_config, rows, quality)
    gate = summary["medical_gate"]
    assert gate["bootstrap"] == {"status": "waiting_for_endpoint", "sampled": 20}
    assert gate["scored_by"] == "medical classifier"


def test_curated_sources_cannot_be_gated(write_config):
    from pipeline.config import ConfigError

    source = {"name": "b", "path": "x", "format": "jsonl", "source_type": "book", "license": "x"}
    with pytest.raises(ConfigError, match="'book' sources are curated"):
        write_config({"sources": [source | {"language": "en", "medical_gate": 0.5}]})


def test_label_parsing_and_metrics():
    assert parse_label("Medical.") == "medical" and parse_label("not medical") == "general"
    assert parse_label("NOT MEDICAL") == "general" and parse_label("maybe") is None
    metrics = evaluate(["medical", "medical", "general", "general"], [0.9, 0.2, 0.7, 0.1], 0.5)
    assert (metrics["precision"], metrics["recall"]) == (0.5, 0.5)
