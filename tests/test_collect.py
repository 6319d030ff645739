"""The collection stage: every format read into the schema, every kind of bad input rejected with its reason."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
import zstandard
from conftest import ROOT, run_stage_cli

from pipeline.config import CollectSection, ConfigError, SourceSection, load_config
from pipeline.dag import run_stage
from pipeline.readers import REJECT_REASONS
from pipeline.record_io import list_parquet
from pipeline.schema import RECORD_SCHEMA, stable_id
from pipeline.text.normalize import normalize_text, render_messages

EN = "Hand washing with soap removes most pathogens from the skin."
FR = "Le lavage des mains au savon élimine la plupart des agents pathogènes."


def _config(tmp_path: Path, sources: list[dict], tasks: int = 1, workers: int = 1, **collect) -> Path:
    data = {"executor": {"tasks": tasks, "workers": workers}, "sources": sources}
    if collect:
        data["collect"] = collect
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path


def run_collect(tmp_path: Path, sources: list[dict], out: str = "out", **kw):
    """Run the stage; return (summary, records sorted by id, rejects sorted by file/line)."""
    cfg = load_config(_config(tmp_path, sources, **kw))
    summary = run_stage("collect", cfg, tmp_path / out, force=True)
    records = sorted(
        (
            r
            for p in list_parquet(tmp_path / out / "collect" / "output")
            for r in pq.read_table(p).to_pylist()
        ),
        key=lambda r: r["id"],
    )
    rejects = sorted(
        (
            r
            for p in list_parquet(tmp_path / out / "collect" / "rejected")
            for r in pq.read_table(p).to_pylist()
        ),
        key=lambda r: (r["file"], r["line"] or 0),
    )
    return summary, records, rejects


def source(name: str, path: str, fmt: str = "jsonl", **kw) -> dict:
    base = {"name": name, "path": path, "format": fmt, "source_type": "paper", "license": "CC-BY-4.0"}
    if fmt not in ("tmx", "apollo") and "language" not in kw:
        base["language_field"] = "lang"
    base.update(kw)
    return base


def jsonl_bytes(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


# ---- text helpers ------------------------------------------------------------------------------------
def test_normalize_text_does_nfc_newlines_and_control_characters_only():
    raw = "Cafe\u0301\r\nline two\rline three\u2028tab\there\x00\x07\x1b end  \u200b"
    assert normalize_text(raw) == "Café\nline two\nline three\ntab\there end  \u200b"


def test_bidi_overrides_are_removed_and_joiners_kept():
    """Embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069) go; the zero-width joiner and
    non-joiner inside Indic and Persian-script words, and the bidi marks, stay."""
    overrides = "".join(chr(c) for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)])
    assert normalize_text(f"dose{overrides} 5 mg") == "dose 5 mg"
    trojan = "access = \u202euser\u2066 // admin\u2069\u2066"
    assert normalize_text(trojan) == "access = user // admin"
    persian = "می\u200cخواهم"  # ZWNJ between the prefix and the verb
    malayalam = "ന്\u200d"  # ZWJ forming a chillu
    hindi = "क्\u200dष"  # ZWJ in a conjunct
    marks = "\u200fשלום\u200e abc"  # RLM, LRM
    for text in (persian, malayalam, hindi, marks):
        assert normalize_text(text) == text


# ---- formats -------------------------------------------------------------------------------------------
def test_jsonl_plain_gz_and_zst_read_alike_with_normalised_text(tmp_path):
    rows = [
        {"text": "Cafe\u0301 au lait\r\ncauses no harm.\x07", "lang": "fr", "url": "https://example.org/1"},
        {"text": EN, "lang": "en-GB"},
    ]
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.jsonl").write_bytes(jsonl_bytes(rows))
    (data / "b.jsonl.gz").write_bytes(gzip.compress(jsonl_bytes(rows)))
    (data / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(jsonl_bytes(rows)))
    summary, records, rejects = run_collect(tmp_path, [source("web", "data", url_field="url")])
    assert rejects == [] and len(records) == 6
    for name in ("a.jsonl", "b.jsonl.gz", "c.jsonl.zst"):
        first = next(r for r in records if r["id"] == stable_id("web", name, "1"))
        assert first["text"] == "Café au lait\ncauses no harm."
        assert first["language"] == "fr" and first["url"] == "https://example.org/1"
        second = next(r for r in records if r["id"] == stable_id("web", name, "2"))
        assert second["language"] == "en" and second["messages"] is None
    assert {r["source"] for r in records} == {"web"} and {r["origin"] for r in records} == {"original"}
    assert summary["sources"]["web"] == {"format": "jsonl", "files": 3, "records": 6}
    assert summary["per_language"]["fr"]["out"] == 3


def test_json_array_file_is_read_item_by_item(tmp_path):
    items = [{"text": f"{EN} Item {i}.", "lang": "en", "id": f"doc-{i}"} for i in range(5)]
    (tmp_path / "docs.json").write_text(json.dumps(items, indent=2))
    _, records, rejects = run_collect(tmp_path, [source("arr", "docs.json", id_field="id")])
    assert rejects == []
    assert sorted(r["id"] for r in records) == sorted(stable_id("arr", f"doc-{i}") for i in range(5))


def test_csv_and_tsv_with_title_quoted_newlines_and_custom_delimiter(tmp_path):
    (tmp_path / "g.csv").write_text(
        'id,language,title,body\n1,es,Fiebre,"La fiebre es común.\nBeba agua."\n2,en,,"' + EN + '"\n',
        encoding="utf-8",
    )
    (tmp_path / "g.tsv").write_text(f"language\tbody\nfr\t{FR}\n", encoding="utf-8")
    (tmp_path / "g.txt").write_text("language;body\nde;Fieber ist häufig.\n", encoding="utf-8")
    common = {"language_field": "language", "text_field": "body", "source_type": "guideline"}
    _, records, rejects = run_collect(
        tmp_path,
        [
            source("csv", "g.csv", "csv", title_field="title", id_field="id", **common),
            source("tsv", "g.tsv", "tsv", **common),
            source("semi", "g.txt", "csv", csv_delimiter=";", **common),
        ],
    )
    assert rejects == []
    by_id = {r["id"]: r for r in records}
    assert by_id[stable_id("csv", "1")]["text"] == "Fiebre\n\nLa fiebre es común.\nBeba agua."
    assert by_id[stable_id("csv", "2")]["text"] == EN  # empty title: text only
    assert by_id[stable_id("tsv", "g.tsv", "2")]["text"] == FR
    assert by_id[stable_id("semi", "g.txt", "2")]["language"] == "de"


def test_parquet_reads_configured_columns(tmp_path):
    table = pa.table(
        {
            "content": [EN, FR, None],
            "lang": ["en", "fr", "en"],
            "extra": [[1], [2], [3]],  # a column the source does not name is not read
        }
    )
    pq.write_table(table, tmp_path / "p.parquet")
    _, records, rejects = run_collect(tmp_path, [source("pq", "p.parquet", "parquet", text_field="content")])
    assert [r["text"] for r in sorted(records, key=lambda r: r["language"])] == [EN, FR]
    assert [(r["reason"], r["line"]) for r in rejects] == [("missing_field", 3)]


TMX = """<?xml version="1.0" encoding="UTF-8"?>
<tmx version="1.4"><header srclang="en-US" datatype="plaintext" segtype="sentence" adminlang="en"
 creationtool="t" creationtoolversion="1" o-tmf="t"/>
<body>
<tu tuid="a"><tuv xml:lang="en-US"><seg>Take <bpt i="1">&lt;b&gt;</bpt>two<ept i="1">&lt;/b&gt;</ept> tablets daily.</seg></tuv>
<tuv xml:lang="FR"><seg>Prenez <hi>deux</hi> comprimés par jour.</seg></tuv>
<tuv xml:lang="sw"><seg>Meza vidonge viwili kila siku.</seg></tuv></tu>
<tu tuid="b"><tuv xml:lang="en"><seg>Wash your hands.</seg></tuv>
<tuv xml:lang="xx-YY"><seg>Unknown language.</seg></tuv>
<tuv xml:lang="de-DE"><seg>Waschen Sie Ihre Hände.</seg></tuv></tu>
"""


def test_tmx_units_become_rows_per_language_sharing_a_group(tmp_path):
    (tmp_path / "tm.tmx").write_text(TMX + "</body></tmx>\n", encoding="utf-8")
    _, records, rejects = run_collect(tmp_path, [source("tm", "tm.tmx", "tmx", source_type="book")])
    by_lang_text = {(r["language"], r["text"]) for r in records}
    assert ("en", "Take two tablets daily.") in by_lang_text
    assert ("fr", "Prenez deux comprimés par jour.") in by_lang_text
    assert ("de", "Waschen Sie Ihre Hände.") in by_lang_text
    groups = {}
    for r in records:
        groups.setdefault(r["group_id"], []).append(r)
    assert sorted(len(g) for g in groups.values()) == [2, 3]
    unit = next(g for g in groups.values() if len(g) == 3)
    english = next(r for r in unit if r["language"] == "en")
    assert english["origin"] == "original" and english["parent_id"] is None
    for r in unit:
        if r is not english:
            assert r["origin"] == "translation_memory" and r["parent_id"] == english["id"]
    assert [(r["reason"], r["line"]) for r in rejects] == [("unknown_language", 8)]


def test_every_record_traces_back_to_its_file_and_position(tmp_path):
    """Provenance columns: the source's own id, the file relative to the source root, and the line
    (JSON Lines, CSV), item (JSON array), row (Parquet) or translation unit (TMX)."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.jsonl").write_bytes(
        jsonl_bytes([{"text": EN, "lang": "en", "id": "x7"}, {"text": FR, "lang": "fr"}])
    )
    (tmp_path / "arr.json").write_text(
        json.dumps([{"text": EN, "lang": "en"}, {"text": FR, "lang": "fr"}], indent=2)
    )
    (tmp_path / "g.csv").write_text(f'lang,text\nen,"{EN}\nsecond line"\nfr,{FR}\n', encoding="utf-8")
    pq.write_table(pa.table({"text": [EN, FR], "lang": ["en", "fr"]}), tmp_path / "p.parquet")
    (tmp_path / "tm.tmx").write_text(TMX + "</body></tmx>\n", encoding="utf-8")
    _, records, _ = run_collect(
        tmp_path,
        [
            source("jl", "data", id_field="id"),
            source("arr", "arr.json"),
            source("csv", "g.csv", "csv"),
            source("pq", "p.parquet", "parquet"),
            source("tm", "tm.tmx", "tmx", source_type="book"),
        ],
    )
    found = {
        (r["source"], r["language"]): (r["source_id"], r["source_file"], r["source_position"])
        for r in records
    }
    assert found[("jl", "en")] == ("x7", "a.jsonl", 1) and found[("jl", "fr")] == (None, "a.jsonl", 2)
    assert found[("arr", "fr")] == (None, "arr.json", 2)  # the second item of the array
    assert found[("csv", "en")] == (None, "g.csv", 2) and found[("csv", "fr")] == (None, "g.csv", 4)
    assert found[("pq", "fr")] == (None, "p.parquet", 2)
    assert found[("tm", "fr")] == ("a", "tm.tmx", 1) and found[("tm", "de")] == ("b", "tm.tmx", 2)


def test_tmx_with_a_broken_tail_keeps_the_units_before_the_break(tmp_path):
    (tmp_path / "tm.tmx").write_text(TMX + "<tu><tuv xml:lang='en'><seg>cut", encoding="utf-8")
    _, records, rejects = run_collect(tmp_path, [source("tm", "tm.tmx", "tmx", source_type="book")])
    assert len(records) == 5
    assert [r["reason"] for r in rejects] == ["unknown_language", "malformed_xml"]
    assert "the rest is lost" in rejects[-1]["detail"]


@pytest.mark.slow
def test_real_tico19_translation_memory(tmp_path, shared_data):
    with zipfile.ZipFile(shared_data / "tico19_all.en-fr.tmx.zip") as archive:
        archive.extractall(tmp_path / "tm")
    _, records, rejects = run_collect(tmp_path, [source("tico", "tm", "tmx", source_type="dialogue")])
    assert rejects == []
    assert len(records) == 2 * 3071 and {r["language"] for r in records} == {"en", "fr"}
    assert len({r["group_id"] for r in records}) == 3071
    assert any(r["text"] == "about how long have these symptoms been going on?" for r in records)


def test_apollo_release_format(tmp_path):
    items = [
        {
            "conversations": ["Swali: homa ni nini?", "Homa ni joto la mwili lililopanda."],
            "source": "medicalExam_sw",
            "class": "minor",
            "language": "sw",
        },
        {
            "conversations": ["Chapter 1. The heart pumps blood."],
            "source": "medicalBook_en",
            "class": "major",
        },
        {
            "conversations": [{"from": "human", "value": "Hallo"}, {"from": "gpt", "value": "Guten Tag"}],
            "source": "general_de",
        },
        {"conversations": ["x"], "source": "medicalRecipes_en"},
        {"conversations": ["x"], "source": "medicalPaper_xx"},
    ]
    (tmp_path / "apollo.json").write_text(json.dumps(items, ensure_ascii=False, indent=1), encoding="utf-8")
    _, records, rejects = run_collect(tmp_path, [source("apollo", "apollo.json", "apollo", source_type=None)])
    by_lang = {r["language"]: r for r in records}
    assert set(by_lang) == {"sw", "en", "de"}
    assert by_lang["sw"]["source_type"] == "exam"
    assert by_lang["sw"]["messages"] == [
        {"role": "user", "content": "Swali: homa ni nini?"},
        {"role": "assistant", "content": "Homa ni joto la mwili lililopanda."},
    ]
    assert (
        by_lang["sw"]["text"] == "User: Swali: homa ni nini?\nAssistant: Homa ni joto la mwili lililopanda."
    )
    assert by_lang["en"]["source_type"] == "book" and by_lang["en"]["messages"] is None
    assert by_lang["en"]["text"] == "Chapter 1. The heart pumps blood."
    assert by_lang["de"]["source_type"] == "general" and by_lang["de"]["messages"][1]["role"] == "assistant"
    assert [r["reason"] for r in rejects] == ["bad_field", "unknown_language"]


def test_exam_fills_the_exam_struct_messages_and_text(tmp_path):
    rows = [
        {
            "q": "Which drug is a vitamin K antagonist?",
            "opts": "(A) Aspirin\n(B) Heparin\n(C) Warfarin",
            "ans": "(C)",
            "lang": "en",
        },
        {"q": "¿Qué órgano produce insulina?", "opts": ["Hígado", "Páncreas"], "ans": 1, "lang": "es"},
        {"q": "Broken", "opts": ["only one"], "ans": "A", "lang": "en"},
        {"q": "Broken too", "opts": ["a", "b"], "ans": "(E)", "lang": "en"},
    ]
    (tmp_path / "exam.jsonl").write_bytes(jsonl_bytes(rows))
    exam_fields = {
        "question_field": "q",
        "options_field": "opts",
        "answer_field": "ans",
        "source_type": "exam",
    }
    _, records, rejects = run_collect(tmp_path, [source("exam", "exam.jsonl", **exam_fields)])
    en = next(r for r in records if r["language"] == "en")
    assert en["exam"] == {
        "question": "Which drug is a vitamin K antagonist?",
        "options": ["Aspirin", "Heparin", "Warfarin"],
        "answer": "C",
    }
    assert en["messages"] == [
        {
            "role": "user",
            "content": "Which drug is a vitamin K antagonist?\n(A) Aspirin\n(B) Heparin\n(C) Warfarin",
        },
        {"role": "assistant", "content": "(C) Warfarin"},
    ]
    assert en["text"] == render_messages(en["messages"])
    es = next(r for r in records if r["language"] == "es")
    assert es["exam"]["answer"] == "B" and es["messages"][1]["content"] == "(B) Páncreas"
    assert [(r["reason"], r["line"]) for r in rejects] == [("bad_field", 3), ("bad_field", 4)]


def test_dialogue_messages_with_role_aliases(tmp_path):
    rows = [
        {
            "turns": [
                {"role": "patient", "content": "I have had a cough for two weeks."},
                {"role": "doctor", "content": "Do you also have a fever?"},
            ],
            "lang": "en",
        },
        {"turns": [{"role": "nurse", "content": "?"}], "lang": "en"},
    ]
    (tmp_path / "d.jsonl").write_bytes(jsonl_bytes(rows))
    _, records, rejects = run_collect(
        tmp_path, [source("dlg", "d.jsonl", messages_field="turns", source_type="dialogue")]
    )
    assert [m["role"] for m in records[0]["messages"]] == ["user", "assistant"]
    assert (
        records[0]["text"] == "User: I have had a cough for two weeks.\nAssistant: Do you also have a fever?"
    )
    assert rejects[0]["reason"] == "bad_field" and "unknown role 'nurse'" in rejects[0]["detail"]


@pytest.mark.slow
def test_hugging_face_datasets_from_disk_and_local_files(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"text": [f"{EN} {i}" for i in range(7)], "lang": ["en"] * 7}).save_to_disk(
        str(tmp_path / "saved")
    )
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "train.jsonl").write_bytes(jsonl_bytes([{"body": FR, "lang": "fr"}]))
    _, records, rejects = run_collect(
        tmp_path,
        [source("saved", "saved", "hf"), source("raw", "raw", "hf", text_field="body")],
        tasks=2,
    )
    assert rejects == []
    assert sorted(r["text"] for r in records if r["source"] == "saved") == sorted(
        f"{EN} {i}" for i in range(7)
    )
    assert [r["text"] for r in records if r["source"] == "raw"] == [FR]
    assert len({r["id"] for r in records}) == 8


# ---- bad input ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_each_kind_of_bad_input_is_rejected_with_its_reason_and_the_stage_finishes(tmp_path):
    good = {"text": EN, "lang": "en"}
    lines = [
        json.dumps(good).encode(),
        b'{"text": "unterminated',  # 2 malformed_json
        b'{"text": "caf\xe9", "lang": "fr"}',  # 3 invalid_utf8 (latin-1 byte)
        json.dumps({"body": EN, "lang": "en"}).encode(),  # 4 missing_field
        json.dumps({"text": "  \n ", "lang": "en"}).encode(),  # 5 empty_text
        json.dumps({"text": EN, "lang": "klingon"}).encode(),  # 6 unknown_language
        json.dumps({"text": "x" * 5000, "lang": "en"}).encode(),  # 7 too_long
        json.dumps({"text": 42, "lang": "en"}).encode(),  # 8 bad_field
        json.dumps({"text": "ok", "lang": "en"}).encode(),  # 9 too_short
    ]
    (tmp_path / "bad.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    many = jsonl_bytes([{"text": f"{EN} Number {i}.", "lang": "en"} for i in range(3000)])
    (tmp_path / "cut.jsonl.gz").write_bytes(gzip.compress(many)[:6000])
    (tmp_path / "cut.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(many)[:3000])
    (tmp_path / "ragged.csv").write_text(f"lang,text\nen,{EN}\nen,too,many,fields\nfr,{FR}\n")
    summary, records, rejects = run_collect(
        tmp_path,
        [
            source("bad", "bad.jsonl"),
            source("cut_gz", "cut.jsonl.gz"),
            source("cut_zst", "cut.jsonl.zst"),
            source("ragged", "ragged.csv", "csv"),
        ],
        max_doc_chars=4000,
        min_doc_chars=5,
    )
    found = {(r["source"], r["reason"], r["line"]) for r in rejects}
    expected_bad = {
        ("bad", "malformed_json", 2),
        ("bad", "invalid_utf8", 3),
        ("bad", "missing_field", 4),
        ("bad", "empty_text", 5),
        ("bad", "unknown_language", 6),
        ("bad", "too_long", 7),
        ("bad", "bad_field", 8),
        ("bad", "too_short", 9),
        ("ragged", "ragged_row", 3),
    }
    assert expected_bad <= found
    assert {r["reason"] for r in rejects} <= set(REJECT_REASONS)
    for name in ("cut_gz", "cut_zst"):
        kept = [r for r in records if r["source"] == name]
        cut = [r for r in rejects if r["source"] == name]
        assert 0 < len(kept) < 3000, name
        assert [r["reason"] for r in cut] == ["truncated_file"]
        assert cut[0]["line"] == len(kept) + 1 and str(tmp_path) in cut[0]["file"]
    assert {r["text"] for r in records if r["source"] in ("bad", "ragged")} == {EN, FR}
    bad_file = next(r for r in rejects if r["reason"] == "malformed_json")
    assert bad_file["file"].endswith("bad.jsonl") and bad_file["raw"] == '{"text": "unterminated'
    assert summary["quarantined_by_reason"]["truncated_file"] == 2
    assert summary["quarantined"] == len(rejects) == 11
    assert summary["rejected_by_source"]["bad"]["too_long"] == 1
    assert next(r for r in rejects if r["reason"] == "too_long")["raw"].startswith('{"text": "xxx')


def test_invalid_utf8_in_csv_and_corrupt_parquet(tmp_path):
    (tmp_path / "x.csv").write_bytes(f"lang,text\nen,{EN}\nfr,caf\xe9 cr\xe8me\n".encode("latin-1"))
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    _, records, rejects = run_collect(
        tmp_path, [source("csv", "x.csv", "csv"), source("pq", "broken.parquet", "parquet")]
    )
    assert [r["text"] for r in records] == [EN]
    assert [(r["reason"], r["line"]) for r in rejects] == [("unreadable_file", None), ("invalid_utf8", 3)]


# ---- configuration errors stop before any work ----------------------------------------------------------------
def test_missing_source_stops_before_any_work_with_a_clear_message(tmp_path):
    (tmp_path / "ok.jsonl").write_bytes(jsonl_bytes([{"text": EN, "lang": "en"}]))
    cfg = load_config(_config(tmp_path, [source("ok", "ok.jsonl"), source("gone", "missing/*.jsonl")]))
    with pytest.raises(ConfigError, match=r"source 'gone': path 'missing/\*\.jsonl' matches no file"):
        run_stage("collect", cfg, tmp_path / "out")
    assert not (tmp_path / "out" / "collect" / "output").exists()
    assert not (tmp_path / "out" / "collect" / ".done").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"language": "klingon", "language_field": None},
            "source 'a': language: unknown language code 'klingon'",
        ),
        ({"format": "hf", "path": "empty"}, "source 'a': cannot load Hugging Face dataset 'empty'"),
    ],
)
def test_invalid_source_settings_stop_before_work(tmp_path, overrides, message):
    (tmp_path / "a.jsonl").write_bytes(jsonl_bytes([{"text": EN, "lang": "en"}]))
    (tmp_path / "empty").mkdir()
    spec = {k: v for k, v in {**source("a", "a.jsonl"), **overrides}.items() if v is not None}
    cfg = load_config(_config(tmp_path, [spec]))
    with pytest.raises(ConfigError, match=message):
        run_stage("collect", cfg, tmp_path / "out")
    assert not (tmp_path / "out" / "collect" / "output").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"question_field": "q"}, "need all of 'question_field', 'options_field' and 'answer_field'"),
        ({"csv_delimiter": ";"}, "'csv_delimiter' applies to csv and tsv sources only"),
    ],
)
def test_inconsistent_source_fields_fail_at_load(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_config(tmp_path, [source("a", "a.jsonl", **overrides)]))


@pytest.mark.slow
def test_cli_reports_config_errors_with_exit_code_2(tmp_path):
    path = _config(tmp_path, [])
    result = run_stage_cli("collect", path, tmp_path / "o")
    assert result.returncode == 2
    assert "no sources configured" in result.stderr and "Traceback" not in result.stderr


# ---- determinism --------------------------------------------------------------------------------------
def test_rerun_gives_byte_identical_output(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        rows = [{"text": f"{EN} File {i} row {j}.", "lang": "en"} for j in range(50)] + [
            {"text": "", "lang": "en"}
        ]
        (data / f"part{i}.jsonl").write_bytes(jsonl_bytes(rows))
    sources = [source("s", "data")]
    run_collect(tmp_path, sources, out="one", tasks=2)
    run_collect(tmp_path, sources, out="two", tasks=2)
    for sub in ("output", "rejected"):
        first = {p.name: p.read_bytes() for p in list_parquet(tmp_path / "one" / "collect" / sub)}
        second = {p.name: p.read_bytes() for p in list_parquet(tmp_path / "two" / "collect" / sub)}
        assert first and first == second, sub
    table = pq.read_table(list_parquet(tmp_path / "one" / "collect" / "output")[0])
    assert table.schema.equals(RECORD_SCHEMA, check_metadata=False)


# ---- the embedded sample through the demo config ------------------------------------------------------------
SAMPLE = ROOT / "data" / "sample"
MAJOR = ("en", "zh", "fr", "es", "ar", "hi", "de", "pt", "ru", "ja", "ko", "it")


@pytest.mark.slow
def test_committed_sample_is_what_build_sample_produces(tmp_path):
    subprocess.run(
        [sys.executable, str(SAMPLE / "build_sample.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    built = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()}
    assert len(built) == 13
    for rel in built:
        assert (SAMPLE / rel).read_bytes() == (tmp_path / rel).read_bytes(), (
            f"{rel} differs: rerun build_sample.py"
        )
    assert sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file()) < 3_000_000


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`python -m pipeline run collect` over configs/demo.yaml: (records, rejects, summary)."""
    out = tmp_path_factory.mktemp("demo")
    result = run_stage_cli("collect", "configs/demo.yaml", out)
    assert result.returncode == 0, result.stderr
    records = [r for p in list_parquet(out / "collect" / "output") for r in pq.read_table(p).to_pylist()]
    rejects = [r for p in list_parquet(out / "collect" / "rejected") for r in pq.read_table(p).to_pylist()]
    return records, rejects, json.loads((out / "collect" / "summary.json").read_text())


@pytest.mark.slow
def test_demo_collects_every_format_and_language_of_the_sample(demo):
    records, _, summary = demo
    by_language = {}
    for r in records:
        by_language.setdefault(r["language"], []).append(r)
    for code in MAJOR:
        assert len(by_language[code]) >= 15, code
        assert {"book", "paper", "guideline", "encyclopedia", "exam", "dialogue", "general"} <= {
            r["source_type"] for r in by_language[code]
        }, code
    assert {"sw", "vi", "cs", "uk", "da", "th", "he", "ha", "rw"} <= set(by_language)
    assert {name for name, s in summary["sources"].items() if s["records"] > 0} == {
        "medical_books", "medical_papers", "guidelines", "encyclopedia", "exams", "dialogues",
        "general", "web_pages", "translation_memory", "apollo", "forum_posts",
        "clinic_pages", "crawl", "sepsis_guide", "pmc_articles", "pubmed", "medwiki", "leaflets",
    }  # fmt: skip
    assert len({r["id"] for r in records}) == len(records)
    exams = [r for r in records if r["source"] == "exams"]
    assert all(r["exam"]["answer"] in "ABCDE" and 4 <= len(r["exam"]["options"]) <= 5 for r in exams)
    tm_groups = {}
    for r in records:
        if r["source"] == "translation_memory":
            tm_groups.setdefault(r["group_id"], set()).add(r["language"])
    assert len(tm_groups) == 18 and all(g == {"en", "sw", "vi", "cs"} for g in tm_groups.values())
    apollo = {(r["language"], r["source_type"]) for r in records if r["source"] == "apollo"}
    assert {("sw", "exam"), ("ha", "dialogue"), ("rw", "general"), ("th", "paper")} <= apollo


@pytest.mark.slow
def test_demo_finds_every_planted_item_and_rejects_exactly_the_broken_lines(demo):
    records, rejects, summary = demo
    by_id = {r["id"]: r for r in records}
    planted = json.loads((SAMPLE / "planted.json").read_text())
    for item in planted:
        if item["kind"] == "reject":
            continue
        record = by_id[item["record_id"]]
        assert record["language"] == item["language"] and record["source"] == item["source"], item
        if item["kind"] == "exact_duplicate":
            assert record["text"] == by_id[item["of_record_id"]]["text"]
        if item["kind"] == "pii":
            assert all(value in record["text"] for value in item["values"])
    expected = sorted((p["file"], p["line"], p["reason"]) for p in planted if p["kind"] == "reject")
    found = sorted((str(Path(r["file"]).relative_to(SAMPLE)), r["line"], r["reason"]) for r in rejects)
    assert found == expected
    assert summary["quarantined_by_reason"] == {reason: 1 for _, _, reason in expected}
    forum = [r for r in records if r["source"] == "forum_posts"]
    assert sorted(r["language"] for r in forum) == ["en", "es"]  # `EN-us` mapped to en


def test_demo_planted_junk_and_wrong_language_are_caught_and_little_else(demo):
    """Language ID and quality as the stages run them (demo config) on the collected sample: every
    planted junk page and mislabelled record is removed, and under 1% of the other records."""
    from datatrove.data import Document

    from pipeline.registry import load_registry
    from pipeline.text.normalize import content_text
    from stages.langid import make_verifier
    from stages.quality import QualityFilter

    records, _, _ = demo
    cfg, registry = load_config(ROOT / "configs" / "demo.yaml"), load_registry()
    verdicts = make_verifier(cfg.langid, registry).verify_batch(
        [content_text(r["text"], r["messages"], r["exam"]) for r in records], [r["language"] for r in records]
    )
    q = cfg.quality
    quality = QualityFilter.from_section(q, registry, "unused")
    docs = [
        Document(
            r["text"],
            r["id"],
            metadata={"language": r["language"], "source": r["source"], "source_type": r["source_type"]},
        )
        for r in records
    ]
    removed = {
        r["id"]
        for r, v, rejection in zip(records, verdicts, quality.check_batch(docs), strict=True)
        if not v.keep or rejection is not None
    }
    planted = {
        p["record_id"]
        for p in json.loads((SAMPLE / "planted.json").read_text())
        if p["kind"] in ("junk", "wrong_language")
    }
    assert len(planted) == 12 and planted <= removed
    assert len(removed - planted) < 0.01 * len(records), removed - planted


def test_example_config_documents_every_source_and_collect_option():
    text = (ROOT / "configs" / "example_full.yaml").read_text()
    cfg = load_config(ROOT / "configs" / "example_full.yaml")
    assert {s.format for s in cfg.sources} >= {"jsonl", "csv", "parquet", "tmx", "apollo", "hf"}
    for name in [*SourceSection.model_fields, *CollectSection.model_fields]:
        assert re.search(rf"^\s*(- )?{name}:", text, re.M), f"configs/example_full.yaml lacks '{name}'"


@pytest.mark.slow
def test_demo_reads_each_raw_document_format(demo):
    """data/sample/raw/ (build_raw.py): one small file per document format, with the chrome real
    files have; collect keeps the text and drops the chrome."""
    records, _, summary = demo
    by_source: dict[str, list[dict]] = {}
    for r in records:
        by_source.setdefault(r["source"], []).append(r)
    counts = {name: len(rows) for name, rows in by_source.items()}
    assert {k: counts[k] for k in ("clinic_pages", "crawl", "sepsis_guide", "pmc_articles")} == {
        "clinic_pages": 1, "crawl": 2, "sepsis_guide": 1, "pmc_articles": 1,
    }  # fmt: skip
    assert {k: counts[k] for k in ("pubmed", "medwiki", "leaflets")} == {
        "pubmed": 2,
        "medwiki": 2,
        "leaflets": 1,
    }
    (page,) = by_source["clinic_pages"]
    assert page["url"] == "https://clinic.example.org/topics/hand-washing"
    assert "for at least twenty seconds" in page["text"] and "Cookie settings" not in page["text"]
    crawl = {r["url"]: r for r in by_source["crawl"]}
    assert crawl["https://sante.example.fr/grippe"]["language"] == "fr"
    assert (
        crawl["https://sante.example.fr/grippe"]["source_id"]
        == "<urn:uuid:00000000-0000-4000-8000-000000000001>"
    )
    (guide,) = by_source["sepsis_guide"]
    assert "Sepsis: a guide for families" not in guide["text"]  # the running header
    assert "if someone with an infection has slurred speech or confusion, extreme shivering" in guide["text"]
    (article,) = by_source["pmc_articles"]
    assert article["license"] == "CC-BY-4.0" and article["source_id"] == "PMC9900101"
    assert "Fictional Journal" not in article["text"] and "Correct preparation" not in article["text"]
    assert {r["source_id"] for r in by_source["pubmed"]} == {"99000201", "99000202"}
    wiki = {r["source_id"]: r for r in by_source["medwiki"]}
    assert set(wiki) == {"1001", "1002"}  # the redirect, the talk page and the railway page are not read
    assert "Infobox" not in wiki["1001"]["text"] and "Region A" not in wiki["1001"]["text"]
    assert "Take every dose at the times" in by_source["leaflets"][0]["text"]
    assert summary["sources"]["crawl"]["format"] == "warc"


@pytest.mark.slow
def test_translation_memory_covers_the_english_passages_it_is_for(demo):
    """Every English record of medical_books and guidelines is its title plus sentences that are all
    translation units with sw, vi and cs (so the demo translates them with no endpoint)."""
    import xml.etree.ElementTree as ET

    units: dict[str, dict[str, dict[str, str]]] = {}
    for tu in ET.parse(SAMPLE / "medical_tm.tmx").getroot().iter("tu"):
        passage, part = tu.get("tuid").split(":")
        segs = {tuv.get("{http://www.w3.org/XML/1998/namespace}lang")[:2]: tuv.findtext("seg") for tuv in tu}
        assert set(segs) == {"en", "sw", "vi", "cs"}
        units.setdefault(passage, {})[part] = segs
    records, _, _ = demo
    english = [r for r in records if r["language"] == "en" and r["source"] in ("medical_books", "guidelines")]
    assert len(english) == len(units) == 3
    for passage in units.values():
        sentences = [passage[str(i)]["en"] for i in range(1, len(passage))]
        expected = passage["title"]["en"] + "\n\n" + " ".join(sentences)
        assert any(r["text"] == expected for r in english)


def test_truncated_compressed_tmx_and_byte_order_marks(tmp_path):
    units = "".join(
        f'<tu><tuv xml:lang="en"><seg>Sentence {i}.</seg></tuv><tuv xml:lang="fr"><seg>Phrase {i}.</seg></tuv></tu>\n'
        for i in range(2000)
    )
    tmx = f'<?xml version="1.0"?>\n<tmx version="1.4"><header srclang="en"/><body>\n{units}</body></tmx>\n'
    (tmp_path / "tm.tmx.gz").write_bytes(gzip.compress(tmx.encode())[:5000])
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + jsonl_bytes([{"text": EN, "lang": "en"}]))
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + f"lang,text\nfr,{FR}\n".encode())
    _, records, rejects = run_collect(
        tmp_path,
        [
            source("tm", "tm.tmx.gz", "tmx", source_type="book"),
            source("bom", "bom.jsonl"),
            source("bomcsv", "bom.csv", "csv"),
        ],
    )
    kept = [r for r in records if r["source"] == "tm"]
    assert 0 < len(kept) < 4000 and len(kept) % 2 == 0  # whole units only
    assert [(r["source"], r["reason"]) for r in rejects] == [("tm", "truncated_file")]
    assert {r["text"] for r in records if r["source"] != "tm"} == {EN, FR}
