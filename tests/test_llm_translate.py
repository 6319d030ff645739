"""The translate stage end to end against a real chat-completions server on loopback.

The server "translates" with TICO-19's human translations, so outputs are real target-language
text; faults are injected at fixed rates. Covered: translation memory offline, the waiting report,
faults with nothing lost and nothing twice, re-runs sending nothing, structure of exam items and
conversations, long documents, glossary terms, budgets, and kill -9 followed by a re-run.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import ROOT, SHARED_DATA, fake_upstream, record, require_shared_data
from helpers.llm_server import FakeLLM, LoopbackServer, tico_parallel

from pipeline.dag import run_stage
from pipeline.llm.checks import OutputChecker
from pipeline.llm.segments import sentence_pieces
from pipeline.schema import derived_id
from pipeline.text.fasttext_lid import LanguageIdentifier

pytestmark = pytest.mark.slow  # runs stages, subprocesses or training: not in `make test-fast`

KEY_ENV = "MEDBABEL_TEST_LLM_KEY"
KEY = "sk-medbabel-test-9f8e7d6c5b4a"
TARGETS = ["sw", "fr", "ru"]
FAULTS_20 = {
    "rate_limit": 0.04,
    "server_error": 0.04,
    "timeout": 0.02,
    "truncated": 0.02,
    "malformed": 0.02,
    "empty": 0.01,
    "wrong_language": 0.03,
    "chatter": 0.02,
}
CHECK_REASONS = {
    "wrong_language",
    "length_ratio",
    "copy_of_source",
    "chatter",
    "numbers_changed",
    "empty_output",
}


@pytest.fixture(scope="module")
def parallel(registry):
    """English TICO-19 sentences (ending in . ? or !, so that joined ones split again) whose human
    translations into TARGETS pass every check."""
    require_shared_data()
    checker = OutputChecker(registry, LanguageIdentifier(registry))
    clean = {}
    for english, translations in tico_parallel(SHARED_DATA / "tico19_health_sentences.jsonl.gz").items():
        if not english.endswith((".", "?", "!")) or len(sentence_pieces(english, 10_000)[1]) != 1:
            continue
        if not all(t in translations for t in TARGETS):
            continue
        if all(checker.check_translation(english, translations[t], "en", t) is None for t in TARGETS):
            clean[english] = translations
    assert len(clean) > 200
    return clean


@pytest.fixture(scope="module")
def server(parallel):
    with LoopbackServer(FakeLLM(parallel, hang_s=1.0, api_key=KEY)) as running:
        yield running


@pytest.fixture
def fake(server, monkeypatch):
    server.llm.set_faults({}, seed=0)
    server.llm.reset_counters()
    server.llm.seen.clear()
    server.llm.latency_s = 0.0
    server.llm.record_bodies = False
    monkeypatch.setenv(KEY_ENV, KEY)
    return server.llm


def llm_settings(server, **overrides) -> dict:
    settings = {
        "base_url": server.base_url,
        "model": "fake-mt",
        "api_key_env": KEY_ENV,
        "concurrency": 16,
        "backoff_base_s": 0.001,
        "backoff_max_s": 0.02,
        "timeout_s": 0.3,
    }
    settings.update(overrides)
    return settings


def sentences(parallel, start: int, count: int) -> list[str]:
    return list(parallel)[start : start + count]


def docs_from(
    parallel, n_docs: int, per_paragraph: int = 2, paragraphs: int = 2, start: int = 0
) -> list[dict]:
    pool = list(parallel)[start:]
    docs, cursor = [], 0
    for i in range(n_docs):
        paras = []
        for _ in range(paragraphs):
            paras.append(" ".join(pool[cursor : cursor + per_paragraph]))
            cursor += per_paragraph
        docs.append(
            record(f"doc{i:03d}", "\n\n".join(paras), source="tico", source_type="paper", url=f"u{i}")
        )
    return docs


def expected_translation(parallel, text: str, target: str) -> str:
    return "\n\n".join(" ".join(parallel[s][target] for s in _split(p)) for p in text.split("\n\n"))


def _split(paragraph: str) -> list[str]:
    return [p.text for p in sentence_pieces(paragraph, 10_000)[1]]


def read_dir(directory: Path) -> list[dict]:
    files = sorted(p for p in directory.glob("*.parquet") if not p.name.startswith("."))
    return [row for f in files for row in pq.read_table(f).to_pylist()]


def write_tmx(path: Path, pairs: list[tuple[str, str]], target: str) -> Path:
    from xml.sax.saxutils import escape

    units = "".join(
        f'<tu><tuv xml:lang="en"><seg>{escape(en)}</seg></tuv>'
        f'<tuv xml:lang="{target}"><seg>{escape(tr)}</seg></tuv></tu>'
        for en, tr in pairs
    )
    path.write_text(f'<?xml version="1.0"?><tmx version="1.4"><header/><body>{units}</body></tmx>')
    return path


# ---- offline ---------------------------------------------------------------------------------------
def test_offline_uses_memory_and_reports_what_waits(parallel, write_config, tmp_path, capsys):
    out = tmp_path / "out"
    known = sentences(parallel, 0, 6)
    tmx = write_tmx(tmp_path / "mem.tmx", [(s, parallel[s]["sw"]) for s in known], "sw")
    docs = [
        record("covered1", known[0]),
        record("covered2", f"{known[1]} {known[2]}\n\n{known[3]}"),
        record("partly", f"{known[4]} {sentences(parallel, 50, 1)[0]}"),
        record("unknown", sentences(parallel, 60, 1)[0]),
        record("french", "Une phrase en français.", language="fr"),
    ]
    fake_upstream(out, "collect", docs)
    _, cfg = write_config({"translate": {"targets": ["sw", "fr"], "translation_memories": [str(tmx)]}})
    summary = run_stage("translate", cfg, out)

    rows = {r["id"]: r for r in read_dir(out / "translate" / "output")}
    assert set(rows) == {derived_id("covered1", "tr", "sw"), derived_id("covered2", "tr", "sw")}
    two = rows[derived_id("covered2", "tr", "sw")]
    assert (
        two["text"] == f"{parallel[known[1]]['sw']} {parallel[known[2]]['sw']}\n\n{parallel[known[3]]['sw']}"
    )
    assert (
        two["origin"] == "translation_memory" and two["llm_model"] is None and two["parent_id"] == "covered2"
    )
    assert two["group_id"] == "covered2" and two["language"] == "sw" and two["source"] == "test"
    waiting = summary["work"]["waiting_for_endpoint"]
    assert waiting["per_language"] == {"sw": 2, "fr": 4} and waiting["total"] == 6
    assert summary["llm"]["requests"] == 0 and summary["llm"]["endpoint"] is None
    assert "need an LLM endpoint" in summary["notes"][0] and "llm.base_url" in summary["notes"][0]
    assert "6 item(s) need an LLM endpoint" in capsys.readouterr().err
    assert (out / "translate" / ".done").exists() and (out / "llm_cache.sqlite").exists()


def test_disabled_or_without_targets_does_nothing(write_config, tmp_path):
    out = tmp_path / "out"
    fake_upstream(out, "collect", [record("a", "Fever.")])
    _, cfg = write_config({"translate": {"targets": []}})
    assert run_stage("translate", cfg, out)["translate"] == "no translate.targets configured"
    assert not list((out / "translate").glob("output/*.parquet"))


# ---- faults, resume, cache -------------------------------------------------------------------------
def test_under_20_percent_faults_nothing_is_lost_or_doubled_and_a_rerun_sends_nothing(
    parallel, server, fake, write_config, tmp_path
):
    out = tmp_path / "out"
    docs = docs_from(parallel, 40)
    fake_upstream(out, "collect", docs)
    fake.set_faults(FAULTS_20, seed=7)
    _, cfg = write_config({"llm": llm_settings(server), "translate": {"targets": TARGETS}})
    summary = run_stage("translate", cfg, out)

    output = read_dir(out / "translate" / "output")
    quarantine = read_dir(out / "translate" / "quarantine")
    items = {derived_id(d["id"], "tr", t) for d in docs for t in TARGETS}
    ids = [r["id"] for r in output] + [r["id"] for r in quarantine]
    assert len(ids) == len(set(ids)) == len(items) and set(ids) == items  # every item once
    assert sum(fake.outcomes[k] for k in FAULTS_20 if k in fake.outcomes) > 0.1 * fake.requests
    assert {r["quarantine_reason"] for r in quarantine} <= CHECK_REASONS
    assert all(r["quarantine_detail"] and r["quarantine_stage"] == "translate" for r in quarantine)
    assert len(output) >= 0.9 * len(items)
    by_parent = {d["id"]: d for d in docs}
    for row in output:
        parent = by_parent[row["parent_id"]]
        assert row["text"] == expected_translation(parallel, parent["text"], row["language"])
        assert (
            row["origin"] == "translated" and row["llm_model"] == "fake-mt" and row["prompt_version"] == "v1"
        )
        assert row["group_id"] == parent["id"] and row["url"] == parent["url"] and row["source"] == "tico"
    llm = summary["llm"]
    # The client may give up on a request (timeout) before the server has even counted it.
    lost = llm["failures"].get("timeout", 0) + llm["failures"].get("connection_error", 0)
    assert llm["requests"] - lost <= fake.requests <= llm["requests"]
    assert set(llm["per_language"]) == set(TARGETS)
    assert 0 < llm["failures"]["rate_limited"] <= fake.outcomes["rate_limit"]
    assert llm["prompt_tokens"] > 0 and summary["quarantined"] == len(quarantine)

    # Re-run (stage wiped, cache kept), with the faults still on: no request at all, same result.
    fake.reset_counters()
    again = run_stage("translate", cfg, out, force=True)
    assert fake.requests == 0 and again["llm"]["requests"] == 0 and again["llm"]["cache_hits"] > 0
    assert sorted(map(json.dumps, read_dir(out / "translate" / "output"))) == sorted(map(json.dumps, output))
    assert len(read_dir(out / "translate" / "quarantine")) == len(quarantine)


def test_identical_segments_are_requested_once(parallel, server, fake, write_config, tmp_path):
    out = tmp_path / "out"
    text = " ".join(sentences(parallel, 0, 2))
    fake_upstream(out, "collect", [record(f"same{i}", text) for i in range(5)])
    _, cfg = write_config({"llm": llm_settings(server), "translate": {"targets": ["sw"]}})
    run_stage("translate", cfg, out)
    assert fake.requests == 1 and len(read_dir(out / "translate" / "output")) == 5


def test_a_shared_cache_outside_out_is_named_at_start(parallel, server, fake, write_config, tmp_path, capfd):
    """An absolute llm.cache_path (a cache shared between runs) is the one file a run writes outside
    OUT: the stage says so, with the path, when it starts."""
    out, shared = tmp_path / "out", tmp_path / "shared-cache" / "llm.sqlite"
    fake_upstream(out, "collect", [record("one", sentences(parallel, 0, 1)[0])])
    llm = llm_settings(server, cache_path=str(shared))
    _, cfg = write_config({"llm": llm, "translate": {"targets": ["sw"]}})
    run_stage("translate", cfg, out)
    assert f"[translate] LLM cache outside OUT (llm.cache_path): {shared}" in capfd.readouterr().err
    assert shared.is_file() and not (out / "llm_cache.sqlite").exists()


def test_memory_from_earlier_runs_serves_another_model(parallel, server, fake, write_config, tmp_path):
    out = tmp_path / "out"
    fake_upstream(out, "collect", docs_from(parallel, 3, paragraphs=1, per_paragraph=1))
    _, cfg = write_config({"llm": llm_settings(server), "translate": {"targets": ["sw"]}})
    run_stage("translate", cfg, out)
    first = fake.requests
    _, other = write_config(
        {"llm": llm_settings(server, model="another-model"), "translate": {"targets": ["sw"]}}
    )
    run_stage("translate", other, out)
    rows = read_dir(out / "translate" / "output")
    assert first == 3 and fake.requests == 3
    assert {r["origin"] for r in rows} == {"translation_memory"} and {r["llm_model"] for r in rows} == {None}


# ---- structure -------------------------------------------------------------------------------------
def test_exam_items_and_conversations_keep_their_structure(parallel, server, fake, write_config, tmp_path):
    out = tmp_path / "out"
    q, a, b, c, user, assistant = sentences(parallel, 10, 6)
    options = [f"(A) {a}", f"(B) {b}", f"(C) {c}"]
    exam_text = "\n".join([q, *options, "Answer: (B)"])
    fake_upstream(
        out,
        "collect",
        [
            record(
                "exam1",
                exam_text,
                source_type="exam",
                exam={"question": q, "options": options, "answer": "(B)"},
            ),
            record(
                "chat1",
                f"{user}\n\n{assistant}",
                source_type="dialogue",
                messages=[{"role": "user", "content": user}, {"role": "assistant", "content": assistant}],
            ),
        ],
    )
    _, cfg = write_config({"llm": llm_settings(server), "translate": {"targets": ["sw"]}})
    run_stage("translate", cfg, out)
    rows = {r["parent_id"]: r for r in read_dir(out / "translate" / "output")}
    exam = rows["exam1"]["exam"]
    assert exam["question"] == parallel[q]["sw"] and exam["answer"] == "(B)"
    assert exam["options"] == [
        f"(A) {parallel[a]['sw']}",
        f"(B) {parallel[b]['sw']}",
        f"(C) {parallel[c]['sw']}",
    ]
    assert rows["exam1"]["text"] == "\n".join([exam["question"], *exam["options"], "Answer: (B)"])
    chat = rows["chat1"]
    assert chat["messages"] == [
        {"role": "user", "content": parallel[user]["sw"]},
        {"role": "assistant", "content": parallel[assistant]["sw"]},
    ]
    assert chat["text"] == f"{parallel[user]['sw']}\n\n{parallel[assistant]['sw']}"
    assert fake.requests == 6  # one per field: the question, three options, two turns


def test_long_documents_are_split_within_the_limit_and_reassembled_in_order(
    parallel, server, fake, write_config, tmp_path
):
    out = tmp_path / "out"
    doc = docs_from(parallel, 1, per_paragraph=10, paragraphs=3, start=100)[0]
    fake_upstream(out, "collect", [doc])
    fake.record_bodies = True
    _, cfg = write_config(
        {"llm": llm_settings(server), "translate": {"targets": ["fr"], "max_segment_chars": 300}}
    )
    run_stage("translate", cfg, out)
    (row,) = read_dir(out / "translate" / "output")
    assert row["text"] == expected_translation(parallel, doc["text"], "fr")
    sent = [body["messages"][-1]["content"] for body in fake.bodies]
    assert len(sent) >= len(doc["text"]) // 300 and all(len(s) <= 300 for s in sent)


def test_glossary_terms_found_in_a_segment_reach_the_prompt(parallel, server, fake, write_config, tmp_path):
    out = tmp_path / "out"
    with_term = next(s for s in parallel if " fever" in s.lower())
    without = next(s for s in parallel if "fever" not in s.lower() and "cough" not in s.lower())
    fake_upstream(out, "collect", [record("g1", with_term), record("g2", without)])
    glossary = tmp_path / "terms.csv"
    glossary.write_text("en,sw\nfever,homa\ncough,kikohozi\n")
    fake.record_bodies = True
    _, cfg = write_config(
        {"llm": llm_settings(server), "translate": {"targets": ["sw"], "glossaries": [str(glossary)]}}
    )
    run_stage("translate", cfg, out)
    systems = {body["messages"][-1]["content"]: body["messages"][0]["content"] for body in fake.bodies}
    assert "- fever → homa" in systems[with_term] and "kikohozi" not in systems[with_term]
    assert "medical terms" not in systems[without]


# ---- budgets ---------------------------------------------------------------------------------------
def test_budget_cap_stops_cleanly_and_resuming_honours_what_was_spent(
    parallel, server, fake, write_config, tmp_path
):
    out = tmp_path / "out"
    docs = docs_from(parallel, 30, paragraphs=1, per_paragraph=1)
    fake_upstream(out, "collect", docs)
    # ~100 tokens a request at $1000 per million tokens: about $0.10 each; the cap allows ~5.
    llm = llm_settings(
        server, concurrency=2, budget_usd=0.5, prices={"fake-mt": {"input": 1000, "output": 1000}}
    )
    _, cfg = write_config({"llm": llm, "translate": {"targets": ["sw"]}})
    summary = run_stage("translate", cfg, out)
    done = read_dir(out / "translate" / "output")
    stopped = summary["work"]["stopped_by_budget"]["total"]
    assert 3 <= len(done) < 30 and len(done) + stopped == 30
    assert 0.5 <= summary["llm"]["cost_usd"] < 0.5 + 2 * 0.2
    assert any("budget_usd was reached" in note for note in summary["notes"])
    assert all(r["text"] and r["origin"] == "translated" for r in done)
    assert (out / "translate" / ".done").exists()
    # Same attempt again: the budget is spent, so only what the cache holds comes back.
    fake.reset_counters()
    again = run_stage("translate", cfg, out, force=True)
    assert fake.requests == 0 and len(read_dir(out / "translate" / "output")) == len(done)
    assert again["work"]["stopped_by_budget"]["total"] == stopped


def test_per_target_document_budgets(parallel, server, fake, write_config, tmp_path):
    out = tmp_path / "out"
    fake_upstream(out, "collect", docs_from(parallel, 6, paragraphs=1, per_paragraph=1))
    translate = {"targets": ["sw", "fr"], "budget_docs_per_target": 3, "target_budgets": {"fr": {"docs": 1}}}
    _, cfg = write_config({"llm": llm_settings(server), "translate": translate})
    summary = run_stage("translate", cfg, out)
    languages = [r["language"] for r in read_dir(out / "translate" / "output")]
    assert sorted(languages) == ["fr", "sw", "sw", "sw"]
    assert summary["work"]["over_target_budget"]["per_language"] == {"fr": 5, "sw": 3}


# ---- crash and resume in a real process ------------------------------------------------------------
def _run_cli(config: Path, out: Path, env: dict, log: Path) -> subprocess.Popen:
    """The stage in its own process (and process group), with every debug log on, into `log`."""
    code = (
        "import logging, sys; logging.basicConfig(level=logging.DEBUG); "
        "from pipeline.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    with open(log, "wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-c", code, "run", "translate", "--config", str(config), "--out", str(out)],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _cached_rows(out: Path) -> int:
    path = out / "llm_cache.sqlite"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_kill_9_mid_stage_then_rerun_completes_without_duplicates_or_leaks(
    parallel, server, fake, write_config, tmp_path
):
    out = tmp_path / "out"
    docs = docs_from(parallel, 40, paragraphs=1, per_paragraph=2, start=20)
    fake_upstream(out, "collect", docs)
    fake.latency_s = 0.03
    fake.set_faults({**FAULTS_20, "echo_key": 0.04}, seed=3)
    config, _ = write_config(
        {"llm": llm_settings(server, concurrency=4), "translate": {"targets": ["sw", "fr"]}}
    )
    env = {**os.environ, KEY_ENV: KEY, "OPENAI_LOG": "debug", "PYTHONPATH": str(ROOT)}

    first = _run_cli(config, out, env, tmp_path / "first.log")
    deadline = time.monotonic() + 60
    while _cached_rows(out) < 15 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.poll() is None, "the stage finished before it could be killed"
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    completed_at_kill = dict(fake.completed)
    assert _cached_rows(out) >= 15 and not (out / "translate" / ".done").exists()
    assert not list((out / "translate" / "output").glob("*.parquet"))

    second = _run_cli(config, out, env, tmp_path / "second.log")
    assert second.wait(timeout=120) == 0, (tmp_path / "second.log").read_text()[-3000:]
    # Only requests in flight at the kill were sent again (their replies never reached the cache).
    sent_again = [k for k, n in completed_at_kill.items() if fake.completed[k] > n]
    assert len(sent_again) <= 4 and max(fake.completed.values()) <= 2
    output = read_dir(out / "translate" / "output")
    quarantine = read_dir(out / "translate" / "quarantine")
    ids = [r["id"] for r in output + quarantine]
    assert len(ids) == len(set(ids)) == 2 * len(docs)
    assert fake.outcomes["echo_key"] > 0  # the server echoed the key back in error bodies
    echoed = [r for r in quarantine if r["quarantine_reason"] == "llm_http_400"]
    assert all("***" in r["quarantine_detail"] for r in echoed)
    # The key appears nowhere: not in the logs, outputs, summaries, cache or config.
    for path in [p for p in tmp_path.rglob("*") if p.is_file()]:
        assert KEY.encode() not in path.read_bytes(), path


def test_per_target_token_budget_counts_source_tokens(parallel, server, fake, write_config, tmp_path):
    from pipeline.text.tokenizer import load_tokenizer

    out = tmp_path / "out"
    docs = docs_from(parallel, 6, paragraphs=1, per_paragraph=1)
    fake_upstream(out, "collect", docs)
    sizes = [len(load_tokenizer()(d["text"], add_special_tokens=False)["input_ids"]) for d in docs]
    budget = sizes[0] + sizes[1] + sizes[2]  # exactly the first three documents
    _, cfg = write_config(
        {"llm": llm_settings(server), "translate": {"targets": ["sw"], "budget_tokens_per_target": budget}}
    )
    summary = run_stage("translate", cfg, out)
    parents = sorted(r["parent_id"] for r in read_dir(out / "translate" / "output"))
    fitting = [
        d["id"] for d, n in zip(docs, sizes, strict=True) if n <= budget - sum(sizes[:3]) or d in docs[:3]
    ]
    assert parents[:3] == [d["id"] for d in docs[:3]] and set(parents) <= set(fitting)
    assert summary["work"]["over_target_budget"]["per_language"]["sw"] == 6 - len(parents)


@pytest.mark.parametrize(
    ("translate", "message"),
    [
        ({"targets": ["sw", "xx"]}, "unknown language code 'xx'"),
        (
            {"targets": ["sw"], "translation_memories": ["nowhere.tmx"]},
            r"translate\.translation_memories: file not found",
        ),
        ({"targets": ["sw"], "prompt_version": "v9"}, "unknown prompt version 'v9'"),
    ],
)
def test_config_mistakes_fail_before_old_output_is_touched(
    parallel, write_config, tmp_path, translate, message
):
    from pipeline.cli import main

    out = tmp_path / "out"
    known = sentences(parallel, 0, 1)[0]
    tmx = write_tmx(tmp_path / "mem.tmx", [(known, parallel[known]["sw"])], "sw")
    fake_upstream(out, "collect", [record("a", known)])
    _, cfg = write_config({"translate": {"targets": ["sw"], "translation_memories": [str(tmx)]}})
    run_stage("translate", cfg, out)
    before = read_dir(out / "translate" / "output")
    path, bad = write_config({"translate": translate}, name="bad.yaml")
    with pytest.raises(ValueError, match=message):
        run_stage("translate", bad, out)
    assert read_dir(out / "translate" / "output") == before and len(before) == 1
    assert main(["check-config", "--config", str(path), "--out", str(out)]) != 0
