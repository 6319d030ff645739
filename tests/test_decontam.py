"""Decontamination: benchmark copies are found (word and character n-grams), nothing else is removed."""

from __future__ import annotations

import gzip
import json

import pytest
from conftest import fake_upstream, record

from pipeline.benchmarks import BenchmarkError, read_benchmark
from pipeline.dag import run_stage
from pipeline.record_io import list_parquet, read_records
from pipeline.text.ngram_index import IndexSettings, NgramIndex, benchmark_texts
from pipeline.text.segment import segment

SERIAL = {"executor": {"tasks": 1, "workers": 1}}

EN_QUESTION = (
    "A 45-year-old man presents with crushing chest pain radiating to the left arm for two hours, "
    "with ST elevation in leads II, III and aVF. Which coronary artery is most likely occluded?"
)
ZH_QUESTION = "患者男性，六十五岁，突发右侧肢体无力伴言语不清三小时，头颅CT未见出血，首选的治疗是"
JA_OPTION = "発症から四時間半以内であれば組織プラスミノーゲン活性化因子の静脈内投与を行う"
ITEMS = [
    {
        "id": "mine:en:1",
        "lang": "en",
        "question": EN_QUESTION,
        "options": "(A) Left anterior descending artery\n(B) Right coronary artery\n(C) Left circumflex artery\n(D) Fever",
        "answer": "(B)",
    },
    {
        "id": "mine:zh:1",
        "lang": "zh",
        "question": ZH_QUESTION,
        "options": "(A) 静脉溶栓\n(B) 手术治疗\n(C) 降压治疗\n(D) 抗生素",
        "answer": "(A)",
    },
    {
        "id": "mine:ja:1",
        "lang": "ja",
        "question": "脳梗塞の急性期治療として正しいものはどれか。",
        "options": f"(A) {JA_OPTION}\n(B) 抗菌薬を投与する",
        "answer": "(A)",
    },
]

CLEAN = [
    # share medical vocabulary and short phrases with the items, but no long n-gram
    record(
        "clean-en",
        "Chest pain radiating to the left arm is a classic symptom of myocardial infarction. "
        "ST elevation in leads II, III and aVF suggests an inferior infarction, usually from the right "
        "coronary artery. Fever is not typical.",
    ),
    record("clean-zh", "突发右侧肢体无力是脑卒中的常见表现，应尽快就医并完成头颅CT检查以排除出血。", "zh"),
    record("clean-ja", "脳梗塞の急性期には、発症からの時間に応じて治療法を選ぶことが重要である。", "ja"),
]
COPIES = [
    # a copy inside other text, with different case and punctuation
    record(
        "copy-en",
        "Practice question 12: "
        + EN_QUESTION.upper().replace(",", " ;")
        + " Answer: the right coronary artery.",
    ),
    record("copy-zh", f"【真题】{ZH_QUESTION}（A）静脉溶栓。解析：发病4.5小时内首选静脉溶栓。", "zh"),
    record("copy-ja", f"正解は「{JA_OPTION}」である。", "ja"),
    # an English question quoted in Chinese text: the character segmenter keeps Latin words whole
    record("copy-en-in-zh", f"这道英文考题是：{EN_QUESTION}答案见下页。", "zh"),
]


def _write_benchmark(path, items):
    path.write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items), encoding="utf-8")
    return path


def _texts(name, path, registry, fmt="xmedbench"):
    return benchmark_texts(read_benchmark(name, path, fmt, registry).items)


YES_NO = {"options": "(A) yes\n(B) no", "answer": "(A)"}


def _ids(directory):
    return {r["id"]: r for p in list_parquet(directory) for r in read_records(p)}


def test_copies_found_and_nothing_else_removed(tmp_path, write_config):
    bench = _write_benchmark(tmp_path / "mine.jsonl", ITEMS)
    _, cfg = write_config(
        {**SERIAL, "decontam": {"benchmarks": [{"name": "mine", "path": str(bench), "format": "xmedbench"}]}}
    )
    fake_upstream(tmp_path, "quality", CLEAN + COPIES)
    summary = run_stage("decontam", cfg, tmp_path)

    kept = _ids(tmp_path / "decontam" / "output")
    quarantined = _ids(tmp_path / "decontam" / "quarantine")
    assert set(kept) == {"clean-en", "clean-zh", "clean-ja"}
    assert set(quarantined) == {"copy-en", "copy-zh", "copy-ja", "copy-en-in-zh"}
    assert {r["quarantine_reason"] for r in quarantined.values()} == {"benchmark_overlap"}
    assert quarantined["copy-en"]["quarantine_detail"].startswith("mine | mine:en:1 | question | ")
    assert quarantined["copy-zh"]["quarantine_detail"].startswith("mine | mine:zh:1 | question | ")
    assert quarantined["copy-ja"]["quarantine_detail"].startswith("mine | mine:ja:1 | option A | ")

    assert [(r["id"], r["item"], r["field"]) for r in summary["removed"]] == [
        ("copy-en", "mine:en:1", "question"),
        ("copy-en-in-zh", "mine:en:1", "question"),
        ("copy-ja", "mine:ja:1", "option A"),
        ("copy-zh", "mine:zh:1", "question"),
    ]
    assert summary["removed_by_benchmark"] == {"mine": 4}
    assert summary["benchmarks"]["mine"]["items"] == 3
    # the short options ("Fever", "静脉溶栓", "抗菌薬を投与する") are too short to index
    assert summary["benchmarks"]["mine"]["too_short"] == 4 + 4 + 1


def test_character_ngrams_for_unsegmented_scripts(tmp_path, registry):
    """A Chinese text sharing 50 characters with a long item is caught; 49 is not enough."""
    long_item = (
        "临床上" + "高血压患者长期服用血管紧张素转换酶抑制剂后出现持续性干咳的机制主要是缓激肽降解减少" * 2
    )
    path = _write_benchmark(tmp_path / "b.jsonl", [{"lang": "zh", "question": long_item, **YES_NO}])
    index, _ = NgramIndex.build(_texts("b", path, registry), registry, IndexSettings(13, 50, 10, 20))
    assert index.lengths == {"space": [], "char": [50]}
    inside = segment("前言：" + long_item[5:55] + "。以上。", "char")
    assert index.find(inside, "char") is not None
    assert index.find(segment("前言：" + long_item[5:54] + "。以上。", "char"), "char") is None


def test_batched_lookup_equals_one_by_one_and_never_matches_across_documents(tmp_path, registry):
    question = "which drug is the first line treatment for uncomplicated falciparum malaria in adults today"
    path = _write_benchmark(tmp_path / "b.jsonl", [{"lang": "en", "question": question, **YES_NO}])
    index, _ = NgramIndex.build(_texts("b", path, registry), registry, IndexSettings(13, 50, 10, 20))
    words = question.split()
    documents = [
        "an unrelated sentence about fever " + question + " and more",  # a copy
        " ".join(words[:7]),  # the first 7 words end this document ...
        " ".join(words[7:]),  # ... and the rest start the next: together a copy, apart none
        "short",
        "",
        "a second copy: " + question,
    ]
    tokens = [segment(text, "space") for text in documents]
    one_by_one = [index.find(t, "space") for t in tokens]
    assert index.find_batch(tokens, "space") == one_by_one
    assert [found is not None for found in one_by_one] == [True, False, False, False, False, True]
    assert one_by_one[0][1:] == (5, 13) and one_by_one[5][1:] == (3, 13)


def test_xmedbench_copies_found_in_real_text(tmp_path, write_config, shared_data):
    bench = shared_data / "xmedbench_dev_mcq.jsonl.gz"
    with gzip.open(bench, "rt", encoding="utf-8") as fh:
        items = [json.loads(line) for line in fh]
    pick = {
        lang: next(
            i for i in items if i["lang"] == lang and len(i["question"]) > (40 if lang == "zh" else 120)
        )
        for lang in ("en", "zh", "es", "ar", "hi")
    }
    clean = []
    with gzip.open(shared_data / "tico19_health_sentences.jsonl.gz", "rt", encoding="utf-8") as fh:
        for n, line in enumerate(fh):
            row = json.loads(line)
            if row["lang"] in pick and n % 7 == 0:
                clean.append(record(f"tico-{n}", row["text"], row["lang"]))
    copies = [
        record(f"copy-{lang}", f"{clean[k]['text']} {item['question']} {item['options']}", lang)
        for k, (lang, item) in enumerate(pick.items())
    ]
    _, cfg = write_config(
        {
            **SERIAL,
            "decontam": {
                "benchmarks": [{"name": "xmedbench_dev", "path": str(bench), "format": "xmedbench"}]
            },
        }
    )
    fake_upstream(tmp_path, "quality", clean + copies)
    summary = run_stage("decontam", cfg, tmp_path)

    assert {r["id"] for r in summary["removed"]} == {f"copy-{lang}" for lang in pick}
    assert {r["id"]: r["item"] for r in summary["removed"]} == {f"copy-{k}": v["id"] for k, v in pick.items()}
    assert summary["docs_out"] == len(clean)
    assert summary["benchmarks"]["xmedbench_dev"]["items"] == len(items)


def test_bad_benchmark_rows_are_rejected_with_line_and_reason(tmp_path, registry, write_config):
    path = tmp_path / "bad.jsonl"
    good = {"question": "A good question here?", "lang": "en", **YES_NO}
    path.write_text(
        "\n".join(
            [
                json.dumps(good),
                "{not json",
                json.dumps({**good, "question": ""}),
                json.dumps({**good, "lang": "xx-unknown"}),
            ]
        )
        + "\n"
    )
    read = read_benchmark("bad", path, "xmedbench", registry)
    assert len(read.items) == 1
    assert [(r.line, r.reason) for r in read.rejected] == [
        (2, "malformed_json"),
        (3, "missing_question"),
        (4, "unknown_language"),
    ]
    with pytest.raises(BenchmarkError, match="not found"):
        read_benchmark("missing", tmp_path / "missing.jsonl", "xmedbench", registry)

    # a benchmark with no usable question stops the stage, naming the file and the reason
    path.write_text("{not json\n")
    _, cfg = write_config(
        {**SERIAL, "decontam": {"benchmarks": [{"name": "bad", "path": str(path), "format": "xmedbench"}]}}
    )
    fake_upstream(tmp_path, "quality", CLEAN)
    with pytest.raises(
        BenchmarkError,
        match=r"bad\.jsonl: benchmark 'bad' .* no usable question: 1 of 1 rows rejected as 'malformed_json'",
    ):
        run_stage("decontam", cfg, tmp_path)
    # ... unless it is optional
    _, cfg = write_config(
        {
            **SERIAL,
            "decontam": {
                "benchmarks": [{"name": "bad", "path": str(path), "format": "xmedbench", "optional": True}]
            },
        }
    )
    summary = run_stage("decontam", cfg, tmp_path)
    assert summary["benchmarks"]["bad"]["rejected"] == {"malformed_json": 1}


def test_a_benchmark_without_format_is_an_error_that_suggests_one(tmp_path, write_config, shared_data):
    bench = shared_data / "benchmarks" / "medqa_usmle_test.jsonl"
    _, cfg = write_config({**SERIAL, "decontam": {"benchmarks": [{"name": "medqa", "path": str(bench)}]}})
    fake_upstream(tmp_path, "quality", CLEAN)
    with pytest.raises(BenchmarkError, match="names no format:; the file looks like format: mcq_dict"):
        run_stage("decontam", cfg, tmp_path)


def test_no_benchmarks_passes_everything_with_a_warning(tmp_path, write_config):
    _, cfg = write_config(SERIAL)
    fake_upstream(tmp_path, "quality", CLEAN + COPIES)
    summary = run_stage("decontam", cfg, tmp_path)
    assert summary["docs_out"] == len(CLEAN + COPIES) and summary["removed"] == []
    assert "no benchmarks configured" in summary["warning"]


def test_sample_benchmark_copies_found_and_nothing_else(registry):
    """The embedded sample's planted copies of benchmark/medqa_sample.jsonl, and only those."""
    from helpers.sample_texts import SAMPLE, planted, sample_texts

    texts = _texts("medqa_sample", SAMPLE / "benchmark" / "medqa_sample.jsonl", registry)
    index, _ = NgramIndex.build(texts, registry, IndexSettings(13, 50, 10, 20))
    found = {}
    for sample_id, language, text in sample_texts():
        segmentation = registry.get(registry.normalize_code(language)).segmentation
        match = index.find(segment(text, segmentation), segmentation)
        if match:
            found[sample_id] = match[0].item
    assert found == {p["sample_id"]: p["benchmark_id"] for p in planted("benchmark_copy")}
