"""The rewrite stage (Apollo QA recipe) against the loopback chat-completions server."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from conftest import SHARED_DATA, fake_upstream, record, require_shared_data
from helpers.llm_server import FakeLLM, LoopbackServer, tico_parallel

from pipeline.dag import run_stage
from pipeline.llm.cache import normalize_segment
from pipeline.schema import derived_id
from stages.rewrite import passages as split_passages

pytestmark = pytest.mark.slow  # runs stages, subprocesses or training: not in `make test-fast`


@pytest.fixture(scope="module")
def passages():
    """Real English and French passages: TICO-19 sentences, five to a paragraph."""
    require_shared_data()
    parallel = tico_parallel(SHARED_DATA / "tico19_health_sentences.jsonl.gz")
    english = [s for s in parallel if s.endswith(".") and "fr" in parallel[s]][:60]
    out = {}
    for i in range(6):
        chunk = english[i * 10 : (i + 1) * 10]
        out[f"en{i}"] = ("en", "\n\n".join(" ".join(chunk[j : j + 5]) for j in (0, 5)))
        out[f"fr{i}"] = (
            "fr",
            "\n\n".join(" ".join(parallel[s]["fr"] for s in chunk[j : j + 5]) for j in (0, 5)),
        )
    return out


@pytest.fixture(scope="module")
def server():
    with LoopbackServer(FakeLLM({}, hang_s=1.0)) as running:
        yield running


@pytest.fixture
def fake(server):
    server.llm.set_faults({}, seed=0)
    server.llm.reset_counters()
    return server.llm


def llm(server) -> dict:
    return {"base_url": server.base_url, "model": "fake-qa", "backoff_base_s": 0.001, "timeout_s": 0.3}


def read_dir(directory):
    files = sorted(p for p in directory.glob("*.parquet") if not p.name.startswith("."))
    return [row for f in files for row in pq.read_table(f).to_pylist()]


def test_disabled_by_default_finishes_at_once_with_nothing(server, fake, write_config, tmp_path):
    out = tmp_path / "out"
    fake_upstream(out, "collect", [record("a", "A passage about fever. " * 20, source_type="book")])
    _, cfg = write_config({"llm": llm(server)})
    summary = run_stage("rewrite", cfg, out)
    assert summary["rewrite"] == "disabled" and fake.requests == 0
    assert (out / "rewrite" / ".done").exists() and not read_dir(out / "rewrite" / "output")


def test_passages_become_question_answer_pairs(passages, server, fake, write_config, tmp_path):
    out = tmp_path / "out"
    rows = [
        record(pid, text, language=lang, source_type="encyclopedia") for pid, (lang, text) in passages.items()
    ]
    rows.append(record("short", "Fever is common in children. It usually passes.", source_type="book"))
    rows.append(record("web", passages["en0"][1], source_type="web"))  # not a selected source type
    fake_upstream(out, "collect", rows)
    fake.set_faults({"server_error": 0.1, "rate_limit": 0.05, "truncated": 0.05}, seed=1)
    rewrite = {"enabled": True, "min_answer_chars": 100, "max_passage_chars": 400, "max_passages_per_doc": 2}
    _, cfg = write_config({"llm": llm(server), "rewrite": rewrite})
    summary = run_stage("rewrite", cfg, out)

    output = read_dir(out / "rewrite" / "output")
    quarantine = read_dir(out / "rewrite" / "quarantine")
    # The fake answers with the passage itself: passages under 100 characters give short answers.
    expected = {
        derived_id(pid, f"qa{i}", lang): len(text) >= 100
        for pid, (lang, doc) in [*passages.items(), ("short", ("en", rows[-2]["text"]))]
        for i, text in enumerate(split_passages(doc, 400, 2))
    }
    assert {r["id"] for r in output} == {i for i, long in expected.items() if long}
    assert {r["id"] for r in quarantine} == {i for i, long in expected.items() if not long}
    assert {r["quarantine_reason"] for r in quarantine} == {"answer_too_short"}
    assert any(r["parent_id"] == "short" for r in quarantine)
    for row in output:
        lang, text = passages[row["parent_id"]]
        question, answer = (m["content"] for m in row["messages"])
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert row["origin"] == "rewritten" and row["language"] == lang and row["llm_model"] == "fake-qa"
        assert row["id"] in {derived_id(row["parent_id"], f"qa{i}", lang) for i in range(2)}
        assert question.endswith("?") and len(answer) >= 100 and answer in normalize_segment(text)
        assert row["text"] == f"{question}\n\n{answer}" and row["source_type"] == "encyclopedia"
    assert summary["work"]["rewritten"]["per_language"] == {"en": 6, "fr": 6}
    assert summary["llm"]["failures"]["server_error"] > 0

    fake.reset_counters()
    run_stage("rewrite", cfg, out, force=True)
    assert fake.requests == 0 and len(read_dir(out / "rewrite" / "output")) == len(output)


def test_offline_rewrite_reports_waiting_items(passages, write_config, tmp_path):
    out = tmp_path / "out"
    fake_upstream(out, "collect", [record("p", passages["en1"][1], source_type="guideline")])
    _, cfg = write_config({"rewrite": {"enabled": True}})
    summary = run_stage("rewrite", cfg, out)
    assert summary["work"]["waiting_for_endpoint"]["per_language"] == {"en": 1}
    assert "llm.base_url" in summary["notes"][0]
