"""Dedup stage: planted exact / near duplicates are found, nothing else is removed, results do not
depend on the number of tasks, and an interrupted run resumes to the same output."""

from __future__ import annotations

import random
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from conftest import fake_upstream, record, write_records

from pipeline.dag import run_stage
from pipeline.record_io import list_parquet, read_records
from pipeline.text.minhash import jaccard, shingle_set
from pipeline.text.segment import segment
from stages.dedup import connected_components

SYLLABLES = "ka lo mi nu pe ra si to vu za ben dor fil gat hum jor kel lim mon nar".split()


def vocabulary(seed: int, size: int = 3000) -> list[str]:
    rng = random.Random(seed)
    return sorted({"".join(rng.choices(SYLLABLES, k=rng.randint(2, 4))) for _ in range(size)})


def random_text(rng: random.Random, words: list[str], n: int) -> str:
    return " ".join(rng.choice(words) for _ in range(n))


def substitute(rng: random.Random, text: str, edits: int) -> str:
    tokens = text.split()
    for pos in rng.sample(range(len(tokens)), edits):
        tokens[pos] = f"edit{rng.randint(0, 10**6)}"
    return " ".join(tokens)


def load(directory) -> list[dict]:
    return [row for path in list_parquet(directory) for row in read_records(path)]


def setup_run(out, rows, translate_rows=(), files: int = 1):
    """collect output split over `files` Parquet files; translate/rewrite complete (maybe empty)."""
    for i in range(files):
        write_records(out / "collect" / "output", rows[i::files], name=f"{i:05d}.parquet")
    (out / "collect" / ".done").write_text("test-fixture\n")
    fake_upstream(out, "translate", list(translate_rows))
    fake_upstream(out, "rewrite", [])


def config(write_config, tasks: int = 2, sources=None, **dedup):
    data = {"executor": {"tasks": tasks, "workers": 1}, "dedup": dedup}
    if sources:
        data["sources"] = sources
    return write_config(data, name=f"config-{tasks}.yaml")[1]


@pytest.fixture(scope="module")
def planted():
    """Unique documents in two languages plus planted duplicates with known expected outcomes."""
    rng = random.Random(7)
    words = {"en": vocabulary(1), "fr": vocabulary(2)}
    rows, expected_removed = [], {}
    for lang in ("en", "fr"):
        for i in range(60):
            rows.append(record(f"{lang}-{i:03d}", random_text(rng, words[lang], rng.randint(80, 140)), lang))
    by_id = {r["id"]: r for r in rows}
    # exact duplicates: case and punctuation differ; same length, so the smaller id is kept
    for i in range(5):
        original = by_id[f"en-{i:03d}"]
        rows.append(record(f"en-exact-{i}", original["text"].upper().replace(" ", ",", 3), "en"))
        expected_removed[f"en-exact-{i}"] = ("exact_duplicate", original["id"])
    # near duplicates: one substituted word and the last one dropped (word-5-gram Jaccard 0.87-0.93);
    # the original is longer, so it is kept
    for i in range(10, 30):
        original = by_id[f"en-{i:03d}"]
        text = substitute(rng, original["text"], 1).rsplit(" ", 1)[0]
        rows.append(record(f"en-near-{i}", text, "en"))
        expected_removed[f"en-near-{i}"] = ("near_duplicate", original["id"])
    # the same text under another language code (an untranslated "translation") is not a duplicate
    for i in range(40, 45):
        rows.append(record(f"fr-copy-of-en-{i}", by_id[f"en-{i:03d}"]["text"], "fr"))
    # unrelated documents that share a sentence are not near-duplicates
    for i in range(45, 50):
        shared = " ".join(by_id[f"en-{i:03d}"]["text"].split()[:20])
        rows.append(
            record(f"en-shares-a-sentence-{i}", shared + " " + random_text(rng, words["en"], 100), "en")
        )
    return rows, expected_removed


def test_planted_duplicates_found_and_nothing_else(tmp_path, write_config, planted):
    rows, expected_removed = planted
    setup_run(tmp_path, rows)
    summary = run_stage("dedup", config(write_config), tmp_path)

    quarantined = {
        r["id"]: (r["quarantine_reason"], r["quarantine_detail"])
        for r in load(tmp_path / "dedup" / "quarantine")
    }
    assert quarantined == expected_removed
    kept = {r["id"]: r for r in load(tmp_path / "dedup" / "output")}
    assert set(kept) == {r["id"] for r in rows} - set(expected_removed)
    for _, kept_id in expected_removed.values():
        assert kept[kept_id]["dup_cluster_id"] == kept_id
        assert kept[kept_id]["dup_cluster_size"] == 2
    assert kept["fr-copy-of-en-40"]["dup_cluster_size"] == 1  # translation not merged with its source
    assert kept["en-040"]["dup_cluster_size"] == 1
    assert all(r["dup_cluster_id"] == r["id"] for r in kept.values())
    assert summary["quarantined_by_reason"] == {"exact_duplicate": 5, "near_duplicate": 20}
    assert summary["docs_in"] == len(rows) and summary["docs_out"] == len(kept)


@pytest.mark.slow
def test_same_result_for_any_task_count_and_input_sharding(tmp_path, write_config, planted):
    rows, _ = planted
    results = []
    for tasks, files in ((1, 1), (3, 4)):
        out = tmp_path / f"t{tasks}"
        setup_run(out, rows, files=files)
        run_stage("dedup", config(write_config, tasks=tasks), out)
        kept = sorted(
            (r["id"], r["dup_cluster_id"], r["dup_cluster_size"]) for r in load(out / "dedup" / "output")
        )
        removed = sorted(
            (r["id"], r["quarantine_reason"], r["quarantine_detail"])
            for r in load(out / "dedup" / "quarantine")
        )
        results.append((kept, removed))
    assert results[0] == results[1]


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_output(tmp_path, write_config, planted):
    rows, _ = planted
    setup_run(tmp_path, rows, files=2)
    cfg = config(write_config, tasks=2)
    run_stage("dedup", cfg, tmp_path)
    stage = tmp_path / "dedup"
    before = sorted((r["id"], r["dup_cluster_id"]) for r in load(stage / "output"))
    # simulate a crash during the filter pass of task 1: its output and completion never happened
    (stage / ".done").unlink()
    (stage / "logs" / "filter" / "completions" / "00001").unlink()
    (stage / "output" / "00001.parquet").unlink()
    for path in (stage / "quarantine").glob("*-00001.parquet"):
        path.unlink()
    summary = run_stage("dedup", cfg, tmp_path)
    after = sorted((r["id"], r["dup_cluster_id"]) for r in load(stage / "output"))
    assert after == before
    assert summary["quarantined"] == 25


def test_source_priority_decides_the_kept_document(tmp_path, write_config):
    rng = random.Random(3)
    text = random_text(rng, vocabulary(5), 120)
    rows = [
        record("from-web", text + " and a longer tail", "en", source="web"),
        record("from-guideline", text, "en", source="guideline"),
    ]
    setup_run(tmp_path, rows)
    sources = [
        {
            "name": name,
            "path": "x.jsonl",
            "format": "jsonl",
            "source_type": "web",
            "license": "CC0",
            "language": "en",
            "priority": p,
        }
        for name, p in (("web", 0), ("guideline", 5))
    ]
    run_stage("dedup", config(write_config, sources=sources), tmp_path)
    kept = load(tmp_path / "dedup" / "output")
    assert [(r["id"], r["dup_cluster_size"]) for r in kept] == [("from-guideline", 2)]
    assert [r["quarantine_detail"] for r in load(tmp_path / "dedup" / "quarantine")] == ["from-guideline"]


@pytest.mark.slow
def test_near_dedup_can_be_switched_off(tmp_path, write_config, planted):
    rows, _ = planted
    setup_run(tmp_path, rows)
    summary = run_stage("dedup", config(write_config, near=False), tmp_path)
    assert summary["quarantined_by_reason"] == {"exact_duplicate": 5}


@pytest.mark.slow
def test_recall_and_precision_against_exact_jaccard(tmp_path, write_config):
    """Small version of the benchmark's figure: copies with 0-8 substituted words (Jaccard ~0.4-1.0)."""
    rng = random.Random(11)
    words = vocabulary(9)
    rows = []
    for i in range(200):
        base = random_text(rng, words, rng.randint(90, 160))
        rows.append(record(f"doc-{i:03d}", base))
        rows.append(record(f"doc-{i:03d}-edited", substitute(rng, base, rng.randint(0, 8))))
    setup_run(tmp_path, rows)
    run_stage("dedup", config(write_config), tmp_path)

    shingles = {r["id"]: shingle_set(segment(r["text"]), 5) for r in rows}
    cluster = {r["id"]: r["dup_cluster_id"] for r in load(tmp_path / "dedup" / "output")}
    removed = {r["id"]: r["quarantine_detail"] for r in load(tmp_path / "dedup" / "quarantine")}
    cluster.update(removed)
    true_pairs = [(a, b) for a, b in combinations(shingles, 2) if jaccard(shingles[a], shingles[b]) >= 0.8]
    recall = np.mean([cluster[a] == cluster[b] for a, b in true_pairs])
    precision = np.mean([jaccard(shingles[a], shingles[b]) >= 0.7 for a, b in removed.items()])
    assert len(true_pairs) > 60 and len(removed) > 60
    assert recall >= 0.95
    assert precision >= 0.98


def test_connected_components_matches_union_find():
    rng = np.random.default_rng(0)
    n = 500
    edges = rng.integers(0, n, size=(300, 2))
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)
    expected = np.array([find(i) for i in range(n)])
    np.testing.assert_array_equal(connected_components(np.arange(n), edges), expected)


@pytest.mark.slow
def test_reference_dedup_removes_planted_copies_of_an_earlier_corpus(tmp_path, write_config):
    """`dedup.reference`: copies (exact and near) of an earlier run's shards are removed, naming the
    earlier document; the rest is kept; the index is built once next to the shards and reused."""
    rng = random.Random(11)
    words = vocabulary(3)
    earlier = [record(f"old-{i:03d}", random_text(rng, words, rng.randint(80, 140))) for i in range(40)]
    earlier += [record(f"old-fr-{i}", random_text(rng, vocabulary(4), 100), "fr") for i in range(5)]
    reference = tmp_path / "earlier" / "shards"
    write_records(reference / "train" / "en", earlier[:20], name="00000.parquet")
    write_records(reference / "valid", earlier[20:], name="00000.parquet")
    new = [record(f"new-{i:03d}", random_text(rng, words, 120)) for i in range(30)]
    planted = {}
    for i in range(5):  # exact copies (case and punctuation changed)
        planted[f"copy-exact-{i}"] = earlier[i]["id"]
        new.append(record(f"copy-exact-{i}", earlier[i]["text"].upper().replace(" ", ", ", 2)))
    for i in range(20, 28):  # near copies: one word replaced, the last dropped
        planted[f"copy-near-{i}"] = earlier[i]["id"]
        new.append(record(f"copy-near-{i}", substitute(rng, earlier[i]["text"], 1).rsplit(" ", 1)[0]))
    # the same text under another language is not a copy (the index is per language)
    new.append(record("fr-version-of-old-030", earlier[30]["text"], "fr"))

    for run in (1, 2):
        out = tmp_path / f"run{run}"
        setup_run(out, new)
        cfg = config(write_config, reference=str(reference))
        summary = run_stage("dedup", cfg, out)
        removed = {r["id"]: r for r in load(out / "dedup" / "quarantine")}
        assert set(removed) == set(planted)
        for doc_id, old_id in planted.items():
            assert removed[doc_id]["quarantine_reason"] == "reference_duplicate"
            assert f" of {old_id} in " in removed[doc_id]["quarantine_detail"]
        assert removed["copy-exact-0"]["quarantine_detail"].startswith("exact copy")
        assert removed["copy-near-20"]["quarantine_detail"].startswith("near copy (Jaccard")
        kept = {r["id"] for r in load(out / "dedup" / "output")}
        assert kept == {r["id"] for r in new} - set(planted)
        ref = summary["reference"]
        assert ref["removed"] == len(planted) and ref["languages"] == {"en": 40, "fr": 5}
        assert ref["reused"] is (run == 2)
    index_dir = Path(ref["index"])
    assert index_dir.parent.parent == reference and (index_dir / "en.sig").exists()
    # the earlier shards changed: the index is rebuilt
    write_records(reference / "valid", earlier[20:30], name="00000.parquet")
    out = tmp_path / "run3"
    setup_run(out, new)
    summary = run_stage("dedup", config(write_config, reference=str(reference)), out)
    assert summary["reference"]["reused"] is False and summary["reference"]["languages"] == {"en": 30}
    assert summary["reference"]["removed"] == 5 + 8  # the near copies' originals are still there


def test_reference_dedup_names_a_missing_reference(tmp_path, write_config):
    setup_run(tmp_path, [record("a", "some text here for the test")])
    with pytest.raises(Exception, match="dedup.reference: .*nowhere is not a directory"):
        run_stage("dedup", config(write_config, reference=str(tmp_path / "nowhere")), tmp_path)
