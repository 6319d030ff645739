"""Language ID stage and verification: wrong-language documents caught with the right detail,
true-language documents kept, including languages lid.176 lacks and confusable groups."""

from __future__ import annotations

import gzip
import json
import random
import shutil
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import fake_upstream, record

from pipeline.dag import run_stage
from pipeline.record_io import list_parquet, read_records
from pipeline.text.common_words import CommonWords, common_word_shares
from pipeline.text.lid_verify import LanguageVerifier, LidThresholds, verify

HELDOUT = Path(__file__).resolve().parent.parent / "bench" / "heldout_paragraphs.jsonl"

EN = (
    "Wash your hands with soap and clean water before eating and after using the toilet. "
    "If a child has a high fever for more than two days, take them to a health centre."
)
RU = "Мойте руки с мылом и чистой водой перед едой и после посещения туалета. Если у ребёнка высокая температура больше двух дней, обратитесь к врачу."


def heldout(lang: str) -> list[str]:
    return [
        json.loads(line)["text"]
        for line in HELDOUT.open(encoding="utf-8")
        if json.loads(line)["lang"] == lang
    ]


def tico_paragraphs(
    shared_data: Path, registry, per_language: int = 8, languages: set[str] | None = None
) -> dict[str, list[str]]:
    """Consecutive sentences of one TICO-19 document joined into paragraphs, for registry languages
    (or for the TICO-19 codes in `languages`)."""
    wanted = languages if languages is not None else registry.languages
    docs: dict[tuple[str, str], list[str]] = defaultdict(list)
    with gzip.open(shared_data / "tico19_health_sentences.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if row["text"] != "{NS}" and row["lang"] in wanted:
                docs[(row["lang"], row["doc"])].append(row["text"])
    out: dict[str, list[str]] = defaultdict(list)
    for (lang, _), sentences in sorted(docs.items()):
        out[lang] += [" ".join(sentences[i : i + 4]) for i in range(0, len(sentences), 4)]
    rng = random.Random(0)
    return {lang: rng.sample(paras, per_language) for lang, paras in out.items()}


def load(directory) -> list[dict]:
    return [row for path in list_parquet(directory) for row in read_records(path)]


def run_langid(tmp_path, write_config, rows, **langid):
    fake_upstream(tmp_path, "dedup", rows)
    cfg = write_config({"executor": {"tasks": 1, "workers": 1}, "langid": langid})[1]
    summary = run_stage("langid", cfg, tmp_path)
    kept = {r["id"]: r for r in load(tmp_path / "langid" / "output")}
    removed = {r["id"]: r for r in load(tmp_path / "langid" / "quarantine")}
    return summary, kept, removed


def test_wrong_language_and_wrong_script_caught_with_detail(tmp_path, write_config):
    rows = [
        record("en-as-sw", EN, "sw"),
        record("en-as-ha", EN, "ha"),  # Hausa is unknown to lid.176, but English is detected confidently
        record("ru-as-fr", RU, "fr"),
        record("ru-as-ha", RU, "ha"),
        record("en-ok", EN, "en"),
    ]
    summary, kept, removed = run_langid(tmp_path, write_config, rows)
    assert set(kept) == {"en-ok"}
    assert removed["en-as-sw"]["quarantine_reason"] == "wrong_language"
    assert removed["en-as-sw"]["quarantine_detail"].startswith("declared sw, detected en (0.9")
    assert removed["en-as-ha"]["quarantine_detail"].startswith("declared ha, detected en (0.9")
    for rid in ("ru-as-fr", "ru-as-ha"):
        assert removed[rid]["quarantine_reason"] == "wrong_script"
        assert "text is mostly Cyrillic (Cyrl)" in removed[rid]["quarantine_detail"]
    assert removed["en-as-sw"]["lid_language"] == "en" and removed["en-as-sw"]["lid_score"] > 0.9
    assert kept["en-ok"]["lid_language"] == "en" and kept["en-ok"]["lid_score"] > 0.9
    assert summary["quarantined_by_reason"] == {"wrong_language": 2, "wrong_script": 2}
    assert summary["per_language"]["sw"]["quarantined"] == {"wrong_language": 1}


def test_true_languages_kept_including_unknown_to_model_and_confusable(tmp_path, write_config, registry):
    missing = registry.languages_without_lid("lid176")
    assert set(missing) == {"ln", "bm", "nso", "ig", "rw", "ha", "doi"}
    rows = []
    for lang in ("ig", "bm", "nso", "doi", "co", "mai", "bs", "gl", "de", "ja", "th", "he"):
        rows += [record(f"{lang}-{i}", text, lang) for i, text in enumerate(heldout(lang))]
    summary, kept, removed = run_langid(tmp_path, write_config, rows)
    assert removed == {}
    assert kept["co-0"]["lid_language"] == "it"  # a confusable partner counts as agreement
    assert kept["doi-0"]["lid_language"] == "hi"
    assert kept["de-0"]["lid_language"] == "de"
    assert summary["docs_out"] == len(rows)


def test_per_language_threshold_from_config(tmp_path, write_config):
    rows = [
        record(
            "sw-1",
            "Homa ni dalili ya kawaida ya maambukizi. Mtoto akiwa na homa kali kwa zaidi ya siku mbili, mpeleke kwa daktari.",
            "sw",
        )
    ]
    # its Swahili common words and CLD2 would keep it whatever the score: switched off to test the
    # threshold; under its threshold a text is judged on contrary evidence, and `absent: 1` makes any
    # score one
    off = {"common_word_support": 1.0, "absent": 1.0, "second_opinion": "none"}
    _, kept, removed = run_langid(tmp_path, write_config, rows, thresholds={"sw": 0.999}, **off)
    assert not kept
    assert removed["sw-1"]["quarantine_detail"].endswith("below threshold 1.00")
    (tmp_path / "default").mkdir()
    _, kept, _ = run_langid(tmp_path / "default", write_config, rows, **off)
    assert set(kept) == {"sw-1"}


def test_short_texts_are_judged_by_their_script_only(tmp_path, write_config):
    rows = [
        record("short", "OK!", "ja"),
        record("mixed", "COVID-19 の流行", "ja"),
        record("latin", "OK, thanks!", "ja"),
        record("any", "Gracias, doctor.", "fr"),  # too short for the model: not judged by it
    ]
    _, kept, removed = run_langid(tmp_path, write_config, rows)
    assert set(kept) == {"short", "mixed", "any"}
    assert removed["latin"]["quarantine_reason"] == "wrong_script"


def test_model_path_option(tmp_path, write_config, registry):
    model = registry.lid_models["lid176"].resolve_default_file()
    copy = tmp_path / "models" / "my-lid.ftz"
    copy.parent.mkdir()
    shutil.copy(model, copy)
    _, kept, _ = run_langid(tmp_path, write_config, [record("en-1", EN, "en")], model_path=str(copy))
    assert kept["en-1"]["lid_language"] == "en"
    with pytest.raises(FileNotFoundError, match="language-ID model file not found"):
        LanguageVerifier(registry, model_path=str(tmp_path / "missing.ftz"))


def test_glotlid_labels_map_to_registry_languages(tmp_path, write_config, shared_data, registry):
    """A user who points `langid.model_path` at GlotLID (`langid.model: glotlid`) gets registry codes:
    a small fastText model trained here on GlotLID v3 labels (eng_Latn, swh_Latn, arb_Arab...) from
    TICO-19 sentences stands in for the real one."""
    import fasttext

    glotlid = {"en": "eng_Latn", "fr": "fra_Latn", "sw": "swh_Latn", "ar": "arb_Arab", "ru": "rus_Cyrl"}
    assert {code: registry.get(code).lid_labels_for("glotlid")[0] for code in glotlid} == glotlid
    assert not registry.languages_without_lid("glotlid")  # every registry language has a label
    by_language = tico_paragraphs(shared_data, registry, per_language=60, languages=set(glotlid))
    train = tmp_path / "train.txt"
    train.write_text(
        "".join(
            f"__label__{glotlid[code]} {text.replace(chr(10), ' ')}\n"
            for code, paragraphs in by_language.items()
            for text in paragraphs[:50]
        ),
        encoding="utf-8",
    )
    model = fasttext.train_supervised(
        str(train), lr=1.0, epoch=50, minn=2, maxn=4, dim=16, thread=1, seed=0, verbose=0
    )
    model.save_model(str(tmp_path / "glotlid-tiny.bin"))
    rows = [
        record(f"{code}-{i}", text, code)
        for code, paragraphs in by_language.items()
        for i, text in enumerate(paragraphs[50:])
    ]
    rows.append(record("fr-as-sw", by_language["fr"][55], "sw"))
    _, kept, removed = run_langid(
        tmp_path, write_config, rows, model="glotlid", model_path=str(tmp_path / "glotlid-tiny.bin")
    )
    assert set(removed) == {"fr-as-sw"}, {k: r["quarantine_detail"] for k, r in removed.items()}
    assert removed["fr-as-sw"]["quarantine_detail"].startswith("declared sw, detected fr")
    assert all(r["lid_language"] == r["language"] for r in kept.values())


def test_keep_and_catch_rates_small(shared_data, registry):
    """Small version of the benchmark: TICO-19 paragraphs + held-out paragraphs, all 50 languages."""
    paragraphs = tico_paragraphs(shared_data, registry)
    for lang in registry.codes:
        if lang not in paragraphs:
            paragraphs[lang] = heldout(lang)
    assert len(paragraphs) == 50
    verifier = LanguageVerifier(registry, thresholds=LidThresholds.for_model("lid176"))
    rng = random.Random(1)
    kept = total = caught = tried = 0
    for lang, texts in sorted(paragraphs.items()):
        verdicts = verifier.verify_batch(texts, [lang] * len(texts))
        kept += sum(v.keep for v in verdicts)
        total += len(texts)
        others = [c for c in registry.codes if c not in registry.confusable_with(lang)]
        declared = [rng.choice(others) for _ in texts]
        wrong = verifier.verify_batch(texts, declared)
        caught += sum(not v.keep for v in wrong)
        tried += len(texts)
    assert kept / total >= 0.98
    assert caught / tried >= 0.95


def test_languages_the_model_lacks_are_checked_by_their_common_words(shared_data, registry):
    """lid.176 has no Hausa, Kinyarwanda or Lingala, and cannot name Kanuri, Dinka, Zulu, Fulfulde, Oromo
    or Nuer with confidence either: such text declared as Hausa gives no confident contradiction. Their
    common words tell them apart (CLD2's second opinion, which knows Hausa, switched off to test them);
    Swahili, which lid.176 scores low, reads as Swahili. (Luganda, close to the Bantu lists and without
    a list of its own, mostly still passes as Hausa.)"""
    verifier = LanguageVerifier(registry, second_opinion=False)
    own = tico_paragraphs(shared_data, registry, 12, {"ha", "rw", "ln"})
    for lang, texts in own.items():
        assert all(v.keep for v in verifier.verify_batch(texts, [lang] * len(texts))), lang
    others = [
        t
        for texts in tico_paragraphs(
            shared_data, registry, 12, {"kr", "din", "zu", "fuv", "om", "nus"}
        ).values()
        for t in texts
    ]
    verdicts = verifier.verify_batch(others, ["ha"] * len(others))
    assert sum(not v.keep for v in verdicts) / len(others) >= 0.85
    assert any("common ha words" in v.detail for v in verdicts if not v.keep)
    predictions = verifier.identifier.predict(others, k=verifier.k)
    without = [
        verify(t, "ha", p, registry, verifier.thresholds) for t, p in zip(others, predictions, strict=True)
    ]
    assert sum(not v.keep for v in without) / len(others) <= 0.1  # script and detection alone miss them
    swahili = tico_paragraphs(shared_data, registry, 12, {"sw"})["sw"]
    caught = [v for v in verifier.verify_batch(swahili, ["ha"] * len(swahili)) if not v.keep]
    assert len(caught) >= 10 and any("reads more like sw" in v.detail for v in caught)
    with_cld2 = LanguageVerifier(registry).verify_batch(swahili, ["ha"] * len(swahili))
    assert all("CLD2 reads sw" in v.detail for v in with_cld2)
    short = " ".join(others[0].split()[:12])  # under min_words_for_common_words: not judged by words
    assert verifier.check(short, "ha").keep or "common" not in verifier.check(short, "ha").detail


def test_common_word_shares():
    """Shares of the text's words on each list; a word on two lists counts for both; too short: None."""
    lists = CommonWords({"sw": ["na", "ya", "kwa"], "ha": ["da", "na", "ya"]})
    text = "Homa ni dalili ya kawaida na kwa watoto " * 3  # 24 words: "ya", "na", "kwa" three times each
    shares = common_word_shares(text, lists, min_words=20)
    assert shares == {"sw": 9 / 24, "ha": 6 / 24}
    assert common_word_shares(text, lists, min_words=25) is None
    assert common_word_shares("Hello world " * 12, lists, min_words=20) == {}


def test_common_word_check_settings_from_config(tmp_path, write_config, shared_data, registry):
    oromo = tico_paragraphs(shared_data, registry, 3, {"om"})["om"]
    rows = [record(f"om{i}", text, language="ha") for i, text in enumerate(oromo)]
    _, kept, removed = run_langid(tmp_path / "on", write_config, rows)
    assert not kept and {r["quarantine_reason"] for r in removed.values()} == {"wrong_language"}
    assert all("common" in r["quarantine_detail"] for r in removed.values())
    _, kept, removed = run_langid(
        tmp_path / "off", write_config, rows, min_common_word_share=0.0, common_word_margin=1.0
    )
    assert set(kept) == {r["id"] for r in rows} and not removed


def test_verify_rule_on_given_predictions(registry):
    """The pure rule, as the translation stage calls it with predictions it already has."""
    from pipeline.text.fasttext_lid import LidPrediction
    from pipeline.text.lid_verify import verify

    thresholds = LidThresholds.for_model("lid176")
    latin = "Afya ni muhimu sana kwa kila mtu katika jamii yetu."

    def p(code, score):
        return LidPrediction(code, code, score)

    # the declared language's confusable group shares the probability mass
    assert verify(latin, "gl", [p("es", 0.45), p("gl", 0.2)], registry, thresholds).keep
    verdict = verify(latin, "gl", [p("en", 0.9), p("gl", 0.05)], registry, thresholds)
    assert (verdict.keep, verdict.reason, verdict.detail) == (
        False,
        "wrong_language",
        "declared gl, detected en (0.90)",
    )
    # a language the model lacks: weak detections of others do not contradict it, a confident one does
    assert verify(latin, "ha", [p("fi", 0.4), p("en", 0.2)], registry, thresholds).keep
    assert not verify(latin, "ha", [p("sw", 0.85)], registry, thresholds).keep
    # a raw label outside the registry is reported as the model's label
    assert (
        verify(latin, "ha", [LidPrediction(None, "yo", 0.95)], registry, thresholds).detail
        == "declared ha, detected yo (0.95)"
    )
    # Devanagari text declared as a Latin-script language the model lacks
    assert (
        verify("यह एक परीक्षण वाक्य है जो हिंदी में लिखा है।", "ig", [p("hi", 0.99)], registry, thresholds).reason
        == "wrong_script"
    )


def test_short_text_is_removed_only_on_contrary_evidence(registry):
    """Real TICO-19 sentences lid.176 scores low (Swahili as Tagalog at 0.22): a short text is removed
    on a confident other language, its script or not one common word, never on a low score alone; a
    long text on a low score too."""
    from pipeline.text.fasttext_lid import LidPrediction

    thresholds = LidThresholds.for_model("lid176")
    common = CommonWords.shipped()

    def p(code, score):
        return LidPrediction(code, code, score)

    def keep(text, declared, predictions):
        return verify(text, declared, predictions, registry, thresholds, common_words=common).keep

    swahili = "Vikwazo za usafiri ziliwekwa nadni na nje ya Hubei."
    assert len(swahili) < thresholds.short_text_chars
    by_model_alone = LidThresholds.for_model("lid176", common_word_support=1.0)
    # low score, no confident rival: kept; a confident rival: removed
    assert verify(swahili, "sw", [p("tl", 0.22), p("sw", 0.05)], registry, by_model_alone).keep
    assert not verify(swahili, "sw", [p("tl", 0.7), p("sw", 0.05)], registry, by_model_alone).keep
    # ... unless its own common words show it is Swahili
    assert keep(swahili, "sw", [p("tl", 0.7), p("sw", 0.05)])
    # common words of the declared language keep a text whatever the score, at any length
    assert keep("na je, una joto jingi mwilini sasa?", "sw", [p("es", 0.9)])
    # a short English text declared as French: no French common word among its words
    assert not keep("and drink lots of fluids every day", "fr", [p("en", 0.25), p("fr", 0.05)])
    # a longer text under its threshold: an unsure, flat distribution is not enough; a rival clearly
    # above the declared language, or the declared language missing from the predictions, is
    long_text = " ".join([swahili.replace("na ", "")] * 3)
    assert len(long_text) >= thresholds.short_text_chars
    assert verify(long_text, "mt", [p("tl", 0.22), p("mt", 0.05)], registry, thresholds).keep
    assert not verify(long_text, "mt", [p("tl", 0.4), p("mt", 0.05)], registry, thresholds).keep
    assert not verify(long_text, "mt", [p("tl", 0.22), p("id", 0.1)], registry, thresholds).keep
    # kana-less Chinese text: a Japanese prediction is no evidence against Chinese
    chinese = "当左向右分流的先天性心脏病肺循环血流量增多，易出现反复呼吸道感染"
    assert keep(chinese, "zh", [p("ja", 0.55), p("zh", 0.36)])
    assert not keep(
        "がんの治療について医師と相談してください。化学療法や放射線療法があります。",
        "zh",
        [p("ja", 0.9), p("zh", 0.05)],
    )
    # shorter than min_chars: not judged by the model, but a text in another script is still caught
    assert keep("COVID-19 伝染病", "ja", [])
    assert verify("这些症状已持续多长时间？", "ckb", [], registry, thresholds).reason == "wrong_script"


def test_unknown_declared_language_is_quarantined_not_a_crash(tmp_path, write_config):
    summary, kept, removed = run_langid(
        tmp_path, write_config, [record("x", EN, "xx"), record("en-ok", EN, "en")]
    )
    assert set(kept) == {"en-ok"}
    assert removed["x"]["quarantine_reason"] == "unknown_language"
    assert summary["quarantined_by_reason"] == {"unknown_language": 1}


def test_exam_and_dialogue_rows_are_identified_on_their_own_words(tmp_path, write_config):
    exam = {
        "question": "Welches Organ produziert das Hormon Insulin?",
        "options": ["Leber", "Bauchspeicheldrüse", "Niere", "Milz"],
        "answer": "B",
    }
    messages = [
        {"role": "user", "content": "Mein Kind hat seit gestern Fieber und Durchfall. Was soll ich tun?"},
        {
            "role": "assistant",
            "content": "Geben Sie ihm viel zu trinken und gehen Sie zum Arzt, wenn es nicht trinken kann.",
        },
    ]
    rendered_exam = (
        "User: "
        + exam["question"]
        + "\n(A) Leber\n(B) Bauchspeicheldrüse\n(C) Niere\n(D) Milz\nAssistant: (B)"
    )
    rendered_chat = "\n".join(
        f"{'User' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in messages
    )
    rows = [
        record("exam", rendered_exam, "de", exam=exam, source_type="exam"),
        record("chat", rendered_chat, "de", messages=messages, source_type="dialogue"),
    ]
    _, kept, removed = run_langid(tmp_path, write_config, rows)
    assert removed == {}
    assert kept["exam"]["lid_language"] == "de" and kept["chat"]["lid_language"] == "de"


def test_fasttext_input_separators_cover_every_unicode_space():
    """fastText splits words on ASCII whitespace only; every other space must become one first."""
    import re
    import sys

    from pipeline.text.fasttext_lid import _SEPARATORS

    others = [c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace() and c not in " \t\v\f\r"]
    assert all(_SEPARATORS.fullmatch(c) for c in others)
    assert not _SEPARATORS.search("".join(c for c in map(chr, range(0x3100)) if not c.isspace()))
    assert (
        re.sub(r"\s+", " ", "a\u00a0b\u3000c\nd").split()
        == _SEPARATORS.sub(" ", "a\u00a0b\u3000c\nd").split()
    )


def test_two_pass_prediction_gives_the_verdicts_of_top_k_for_every_text(shared_data, registry):
    """`verify_batch` predicts the top-1 first and the top-k only where the top-1 does not settle the
    verdict; on all 50 languages, declared rightly, wrongly and within confusable groups, short texts
    included, its verdicts equal those computed from the top-k of every text."""
    paragraphs = tico_paragraphs(shared_data, registry, per_language=6)
    for lang in registry.codes:
        paragraphs.setdefault(lang, heldout(lang))
    rng = random.Random(2)
    texts, declared = [], []
    for lang, items in sorted(paragraphs.items()):
        group = sorted(registry.confusable_with(lang))
        for text in items:
            texts += [text, text, text, text[:25]]
            declared += [lang, rng.choice(registry.codes), rng.choice(group), lang]
    verifier = LanguageVerifier(registry, thresholds=LidThresholds.for_model("lid176"), k=5)
    reference = [
        verifier.verify(text, lang, preds)
        for text, lang, preds in zip(texts, declared, verifier.identifier.predict(texts, k=5), strict=True)
    ]
    assert verifier.verify_batch(texts, declared) == reference
    settled = sum(
        verifier._settled_by_top(t, lang, p)
        for t, lang, p in zip(texts, declared, verifier.identifier.predict(texts, k=1), strict=True)
    )
    assert 0.5 * len(texts) < settled < len(texts)  # both paths are exercised


def test_look_alikes_outside_the_registry_count_with_the_language(registry):
    """lid.176 reads short Cebuano as Tagalog and Serbian Cyrillic as Macedonian (`look_alikes` in the
    registry): such a detection is agreement, not evidence against the declared language."""
    from pipeline.text.fasttext_lid import LidPrediction

    thresholds = LidThresholds.for_model("lid176")
    cebuano = "Pila ka oras siya gapuyo sa kusina?"  # Tatoeba; lid.176: tl 0.94
    serbian = "Можеш ли да разликујеш сребро од калаја?"  # Tatoeba; lid.176: mk 0.90
    assert registry.lid_look_alikes("lid176", "ceb") == ("tl", "war")
    assert verify(cebuano, "ceb", [LidPrediction(None, "tl", 0.94)], registry, thresholds).keep
    assert verify(serbian, "sr", [LidPrediction(None, "mk", 0.9)], registry, thresholds).keep
    # the same detection still counts against a language it is not a relative of
    assert verify(serbian, "bg", [LidPrediction(None, "mk", 0.9)], registry, thresholds).keep  # bg: mk too
    assert not verify(cebuano, "ilo", [LidPrediction(None, "tl", 0.94)], registry, thresholds).keep


def test_a_look_alike_added_to_the_registry_is_a_language_of_its_own(tmp_path):
    import yaml

    from pipeline.registry import load_registry

    raw = yaml.safe_load((Path(__file__).resolve().parent.parent / "lang_families.yaml").read_text("utf-8"))
    raw["languages"]["tl"] = {
        "name": "Tagalog",
        "scripts": ["Latn"],
        "tier": "minor",
        "family": "austronesian",
        "lid_labels": {"lid176": ["tl"]},
    }
    (tmp_path / "families.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True), "utf-8")
    registry = load_registry(tmp_path / "families.yaml")
    assert registry.lid_look_alikes("lid176", "ceb") == ("war",)


def test_dense_scripts_count_three_letters_per_character(registry):
    """An eight-character Chinese sentence is a whole question: long enough for the script check; and
    a text written in Han without kana is Chinese whatever score lid.176 gives it."""
    from pipeline.text.fasttext_lid import LidPrediction
    from pipeline.text.lid_verify import effective_length

    thresholds = LidThresholds.for_model("lid176")
    question = "您现在有发热吗？"  # TICO-19
    assert effective_length(question) == 3 * 7 + 1  # seven Han characters and a full-width question mark
    wrong = verify(question, "hr", [LidPrediction(None, "lv", 0.93)], registry, thresholds)
    assert (wrong.keep, wrong.reason) == (False, "wrong_script")
    assert verify(question, "zh", [LidPrediction(None, "lv", 0.93)], registry, thresholds).keep
    exam = "舌根的淋巴管引流至\n下颌下淋巴结.\n颏下淋巴结.\n颈浅淋巴结.\n颈深上淋巴结."  # XMedBench, zh 0.46
    assert verify(exam, "zh", [LidPrediction("zh", "zh", 0.46)], registry, thresholds).keep
    # with kana it may be Japanese: the script alone does not decide
    assert not verify(
        "これは日本語の文章です。病院に行きます。",
        "zh",
        [LidPrediction("ja", "ja", 0.99)],
        registry,
        thresholds,
    ).keep


def test_very_short_text_is_removed_only_on_a_very_confident_registry_language(registry):
    """Under `min_chars` a text is removed when the top prediction is another registry language at
    `tiny_contradiction` or more; not on a label outside the registry (lid.176 gives Finnish to short
    Swahili and Kinyarwanda at 0.97 to 1.0), nor for a language the model lacks."""
    from pipeline.text.fasttext_lid import LidPrediction

    thresholds = LidThresholds.for_model("lid176")
    english = "and i have a cough too"  # TICO-19
    assert not verify(english, "sk", [LidPrediction("en", "en", 0.97)], registry, thresholds).keep
    assert verify(english, "sk", [LidPrediction("en", "en", 0.7)], registry, thresholds).keep
    assert verify(
        "Usivute sigara kitandani.", "sw", [LidPrediction(None, "fi", 0.97)], registry, thresholds
    ).keep
    assert verify("kuva uhinda umuriro", "rw", [LidPrediction("en", "en", 0.99)], registry, thresholds).keep
    assert verify("Ok, thanks", "sk", [LidPrediction("en", "en", 0.99)], registry, thresholds).keep  # < 12


def test_text_reading_as_another_listed_language_by_its_distinctive_words(registry):
    """Words only one group's lists hold (`kuma`, `cikin`, `akwai` are Hausa's alone; `na`, `da`, `ya`
    are on several lists) make a text read as that language when the declared one has none."""
    from pipeline.text.common_words import reads_as_other
    from pipeline.text.fasttext_lid import LidPrediction

    thresholds = LidThresholds.for_model("lid176")
    words = CommonWords.shipped()
    hausa = "kuma yaya ne zafin zazzabin yake? kuma ina da tari ma kuma akwai ciwo a cikin kirji"
    assert reads_as_other(hausa, registry.confusable_with("mt"), registry, words, thresholds) == "ha"
    assert reads_as_other(hausa, registry.confusable_with("ha"), registry, words, thresholds) is None
    verdict = verify(hausa, "mt", [LidPrediction(None, "it", 0.12)], registry, thresholds, common_words=words)
    assert not verdict.keep and "reads as ha" in verdict.detail


def test_short_everyday_sentences_kept(shared_data, registry):
    """Tatoeba's everyday sentences in the languages lid.176 reads as close relatives."""
    with gzip.open(shared_data / "tatoeba_sentences_dev.jsonl.gz", "rt", encoding="utf-8") as lines:
        rows = [json.loads(line) for line in lines]
    verifier = LanguageVerifier(registry, thresholds=LidThresholds.for_model("lid176"))
    for lang in ("ceb", "sr", "bg", "hr"):
        texts = [row["text"] for row in rows if row["lang"] == lang]
        kept = sum(v.keep for v in verifier.verify_batch(texts, [lang] * len(texts)))
        assert kept / len(texts) >= 0.98, lang


def test_a_short_text_rival_must_be_corroborated(registry):
    """Under `short_text_chars` a rival counts as contrary evidence only when the text has a common word
    of it (lid.176 reads short Scottish Gaelic as English at 0.4 to 0.6), and a label outside the
    registry only from `short_foreign_contradiction` (it gives short Swahili Basque at 0.32)."""
    from pipeline.text.fasttext_lid import LidPrediction

    thresholds = LidThresholds.for_model("lid176")
    words = CommonWords.shipped()

    def keep(text, declared, predictions):
        return verify(text, declared, predictions, registry, thresholds, common_words=words).keep

    gaelic = "Chan eil saoigh gun choimheas."  # Tatoeba; lid.176: en 0.34
    assert keep(gaelic, "gd", [LidPrediction("en", "en", 0.5), LidPrediction("gd", "gd", 0.05)])
    english = "and did the pain start two days ago or yesterday?"
    assert not keep(english, "gd", [LidPrediction("en", "en", 0.5), LidPrediction("gd", "gd", 0.05)])
    swahili = "lakini ninajua watu wengi kuhokoa kwangu"  # TICO-19
    by_model = LidThresholds.for_model("lid176", common_word_support=1.0)  # its word `lakini` aside
    eu = [LidPrediction(None, "eu", 0.32), LidPrediction("sw", "sw", 0.1)]
    assert verify(swahili, "sw", eu, registry, by_model, common_words=words).keep
    eu = [LidPrediction(None, "eu", 0.6), LidPrediction("sw", "sw", 0.1)]
    assert not verify(swahili, "sw", eu, registry, by_model, common_words=words).keep


def test_a_stand_in_label_for_a_language_the_model_lacks_is_not_contrary(registry):
    """lid.176 lacks Hausa and reads it as Finnish (10% of TICO-19's Hausa): `look_alikes` says so."""
    from pipeline.text.fasttext_lid import LidPrediction

    thresholds = LidThresholds.for_model("lid176")
    hausa = "shin kana jin kamar wani yana matse kirjin ka"  # TICO-19; lid.176: fi 0.95
    assert verify(hausa, "ha", [LidPrediction(None, "fi", 0.95)], registry, thresholds).keep
    assert not verify(hausa, "ha", [LidPrediction(None, "et", 0.95)], registry, thresholds).keep


def test_second_opinion_reads_registry_languages_lid176_lacks(registry):
    """CLD2 reads short Hausa, Kinyarwanda and Lingala TICO-19 sentences right, maps its own codes
    (`iw`, `zh-Hant`) onto the registry's, and has no opinion on other languages or broken text."""
    from pipeline.text.second_opinion import SecondOpinion

    second = SecondOpinion(registry)
    assert set(registry.codes) - second.languages == {"bm", "ckb", "doi", "ilo", "mai"}  # it knows 45 of 50
    assert second("kuma kuna da zazzabi yanzu") == "ha"
    assert second("mfite ububabare bwinshi hano mu gatuza") == "rw"
    assert second("basymptomi oyo ewumeli mikolo boni?") == "ln"
    assert second("שלום, אני רופא במחלקה הפנימית של בית החולים") == "he"
    assert second("醫生說他需要在醫院多休息幾天，然後再回家。") == "zh"
    assert (
        second("Magandang umaga po, kumusta na kayo ngayong araw?") is None
    )  # Tagalog: not a registry language
    assert second("broken \ud800 text") is None


def test_second_opinion_settles_what_lid176_leaves_undecided(registry):
    """Where lid.176 is unsure, CLD2 keeps text it reads as the declared language and removes text it
    reads as another (corroborated by that language's common words); under 30 characters only when
    lid.176 agrees with it or lacks its language."""
    from pipeline.text.fasttext_lid import LidPrediction
    from pipeline.text.second_opinion import SecondOpinion

    thresholds = LidThresholds.for_model("lid176")
    words, second = CommonWords.shipped(), SecondOpinion(registry)

    def verdict(text, declared, predictions, opinion=second):
        return verify(
            text, declared, predictions, registry, thresholds, common_words=words, second_opinion=opinion
        )

    hausa = "kuma alamomin cutar ku ba su barin ku cikin kwanaki biyar"  # TICO-19; lid.176: en 0.11
    unsure = [LidPrediction("en", "en", 0.11), LidPrediction("it", "it", 0.08)]
    assert verdict(hausa, "ceb", unsure, opinion=None).keep  # lid.176 alone cannot object
    removed = verdict(hausa, "ceb", unsure)
    assert (removed.keep, removed.detail) == (False, "declared ceb, CLD2 reads ha (lid.176: en 0.11)")
    assert not verdict(hausa, "ig", unsure).keep  # a language lid.176 lacks, declared wrongly
    assert verdict(hausa, "ha", [LidPrediction(None, "et", 0.95)]).keep  # ... and rightly
    gaelic = "Chan fheum thu a thighinn dhan oifis a dh'obair Disathairne."  # Tatoeba; lid.176: en 0.50
    assert verdict(gaelic, "gd", [LidPrediction("en", "en", 0.5), LidPrediction("gd", "gd", 0.05)]).keep
    short = "kuma kuna da zazzabi yanzu"  # TICO-19, 26 characters
    assert not verdict(short, "hr", [LidPrediction(None, "io", 0.29)]).keep
    assert verdict(short, "hr", [LidPrediction(None, "io", 0.29)], opinion=None).keep


def test_second_opinion_can_be_switched_off(tmp_path, write_config):
    rows = [record("ha-as-ig", "kuma alamomin cutar ku ba su barin ku cikin kwanaki biyar", "ig")]
    _, kept, removed = run_langid(tmp_path, write_config, rows)
    assert removed["ha-as-ig"]["quarantine_detail"].startswith("declared ig, CLD2 reads ha")
    (tmp_path / "none").mkdir()
    _, kept, _ = run_langid(tmp_path / "none", write_config, rows, second_opinion="none")
    assert set(kept) == {"ha-as-ig"}


def test_second_opinion_is_no_witness_for_japanese_without_kana(registry):
    """CLD2, like lid.176, reads some kana-less Chinese terms as Japanese (TICO-19's `化学消毒`:
    lid.176 ja 0.66, CLD2 ja): Japanese is never written without kana, so neither counts."""
    from pipeline.text.fasttext_lid import LidPrediction
    from pipeline.text.second_opinion import SecondOpinion

    second = SecondOpinion(registry)
    assert second("化学消毒") == "ja"
    thresholds = LidThresholds.for_model("lid176")
    predictions = [LidPrediction("ja", "ja", 0.66)]
    assert verify("化学消毒", "zh", predictions, registry, thresholds, second_opinion=second).keep


def test_common_words_join_the_maintained_lists_except_english():
    """Language ID's common words are the hand-written list joined with stopwords-iso's (Russian `нет`
    and `да` are only in the latter); English keeps its own, since stopwords-iso's English list holds
    other languages' function words (`na`, `sa`, `ni`)."""
    from pipeline.text.quality_signals import stopword_lists

    words = CommonWords.shipped()
    assert "нет" not in stopword_lists()["ru"] and "ru" in words.index["нет"]
    assert "en" not in words.index.get("na", ()) and "en" not in words.index.get("sa", ())


def test_a_russian_yes_no_question_declared_bulgarian_is_caught(registry):
    """RuMedDaNet (held out from the benchmark the rules were tuned on): its short yes/no questions
    share `да` with Bulgarian; lid.176 and CLD2 both read Russian."""
    verifier = LanguageVerifier(registry)
    question = "Синдром возникает из-за хронического гастрита?\nда\nнет"
    assert verifier.check(question, "ru").keep
    verdict = verifier.check(question, "bg")
    assert not verdict.keep and verdict.reason == "wrong_language"
