"""The translate checks' numbers rule: a translation keeps the source's quantities however its language
writes them (number words, scale words, other calendars, clock times), may drop numbers that are no
quantities (names, citations, web addresses, 24/7), and is still rejected when a quantity changes."""

from __future__ import annotations

import gzip
import json
from collections import Counter

import pytest

from pipeline.llm.checks import OutputChecker
from pipeline.llm.quantities import (
    missing_numbers,
    numbers,
    required_numbers,
    scaled_quantities,
    worded_numbers,
)
from pipeline.text.fasttext_lid import LanguageIdentifier


@pytest.fixture(scope="module")
def checker(registry):
    return OutputChecker(registry, LanguageIdentifier(registry))


def test_a_number_glued_to_a_name_takes_no_space_groups():
    assert numbers("COVID-19 122 653 (5,8%)") == Counter({"19": 1, "122653": 1, "58": 1})
    assert numbers("كوفيد-19 122 653") == Counter({"19": 1, "122653": 1})
    assert numbers("1 051 635 cases") == Counter({"1051635": 1})  # a plain grouped number still reads whole
    assert numbers("约500 000人") == Counter({"500000": 1})  # a Han character is no name


def test_numbers_that_are_no_quantities_are_not_required():
    source = "Stay home 24/7 (https://www.cdc.gov/coronavirus/2019-ncov/a1.pdf) [3, 4] for 14 days."
    assert required_numbers(source) == Counter({"14": 1})


def test_scale_words_in_the_target_language():
    assert scaled_quantities("2 लाख 44 हज़ार से भी अधिक मामले", "hi")["244000"] == 1
    assert scaled_quantities("投资 490 万美元，约500亿美元", "zh") == Counter(
        {"4900000": 1, "50000000000": 1}
    )
    assert scaled_quantities("vifo elfu 52", "sw") == Counter({"52000": 1})
    assert scaled_quantities("4,9 millions de dollars, 52 mille morts", "fr") == Counter(
        {"4900000": 1, "52000": 1}
    )
    assert scaled_quantities("5만명", "ko") == Counter({"50000": 1})
    assert scaled_quantities("52 thousandths", "en") == Counter()  # a word that merely starts like one


def test_number_words_every_form_and_whole_words_only():
    assert worded_numbers("adiadas por sete dias", "pt") == Counter({"7": 1})
    assert worded_numbers("بۆ چوار ڕۆژ", "ckb") == Counter({"4": 1})
    assert worded_numbers("على بُعد مترين من الأم", "ar") == Counter({"2": 1})  # the dual of "metre"
    assert worded_numbers("у двух пациентов из семи", "ru") == Counter({"2": 1, "7": 1})  # case forms
    assert worded_numbers("vingt-quatre heures", "fr") == Counter({"24": 1})  # not also 4
    assert worded_numbers("两天", "zh") == Counter({"2": 1})
    assert worded_numbers("wagonjwa walisita", "sw") == Counter()  # "sita" (6) inside a word
    assert worded_numbers("kwanza", "rw") == Counter()  # no list for the language: nothing guessed
    assert worded_numbers("بیست و چوار کاتژمێر", "ckb") == Counter({"24": 1})  # tens "and" units
    assert worded_numbers("awanni ashirin da huɗu", "ha") == Counter({"24": 1})


def test_number_words_that_translate_the_source_s_words_stand_for_no_digits():
    source = "The four-pack limit started on March 4."
    assert missing_numbers(source, "La limite de quatre paquets date du 4 mars.", "en", "fr") == Counter()
    assert missing_numbers(source, "La limite de quatre paquets date du 5 mars.", "en", "fr") == Counter(
        {"4": 1}
    )


@pytest.mark.parametrize(
    "source, output, target",
    [
        ("In 2020 and 2021.", "ในปี พ.ศ. 2563 และ 2564", "th"),  # Buddhist era
        ("In 2020.", "令和2年に。", "ja"),  # Japanese era
        (
            "Before 10 a.m. (0800 UTC) on April 4.",
            "Mbere ya saa 10 (08:00 GMT) ku ya 4 Mata.",
            "sw",
        ),
    ],
)
def test_other_calendars_and_clocks(source, output, target):
    assert missing_numbers(source, output, "en", target) == Counter()


def test_short_texts_keep_their_quantities(checker):
    assert checker.check_translation("Wait 7 days.", "Aguarde sete dias.", "en", "pt") is None
    wrong = checker.check_translation("Wait 7 days.", "Aguarde oito dias.", "en", "pt")
    assert wrong.reason == "numbers_changed" and "7" in wrong.detail
    assert checker.check_translation("Stay 2 metres away.", "ابقَ على بُعد مترين.", "en", "ar") is None
    assert checker.check_translation("Stay 3 metres away.", "ابقَ على بُعد مترين.", "en", "ar") is not None


def test_long_texts_keep_their_quantities(checker):
    source = (
        "In the United States, over 244 thousand coronavirus cases were recorded, linking to at least "
        "5,900 deaths, and CEPI announced a US$4.9 million investment, bringing its total to US$29 million."
    )
    hindi = (
        "अमेरिका में कोरोना वायरस के 2 लाख 44 हज़ार से भी अधिक मामले रिकॉर्ड हुए हैं, और इससे कम-से-कम "
        "5,900 मौतें हुई हैं, और CEPI ने 49 लाख डॉलर के निवेश की घोषणा की, जिससे उसका कुल निवेश 2 करोड़ 90 लाख डॉलर हो गया।"
    )
    assert checker.check_translation(source, hindi, "en", "hi") is None
    # a changed quantity is still caught, whether in digits or in scale words
    assert checker.check_translation(source, hindi.replace("2 लाख 44", "3 लाख 44"), "en", "hi").reason == (
        "numbers_changed"
    )
    assert checker.check_translation(source, hindi.replace("49 लाख", "49 हज़ार"), "en", "hi").reason == (
        "numbers_changed"
    )
    chinese = "在美国，已记录超过 24.4 万例冠状病毒病例，至少 5900 人死亡；CEPI 宣布投资 490 万美元，使其总投资达到 2900 万美元。"
    assert checker.check_translation(source, chinese, "en", "zh") is None
    assert checker.check_translation(source, chinese.replace("490 万", "49 万"), "en", "zh") is not None


def _tico(shared_data) -> dict[tuple[str, str], str]:
    rows = {}
    with gzip.open(shared_data / "tico19_health_sentences.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            rows[(row["id"].rsplit(":", 1)[0], row["lang"])] = row["text"]
    return rows


# Human translations of TICO-19 the numbers rule used to reject, each for a way of writing a number.
WRITTEN_OTHERWISE = [
    ("tico19:PubMed_9:796", "rw"),  # "COVID-19 122 653": the name's 19 glued to the count
    ("tico19:PubMed_9:803", "ckb"),  # "چوار ڕۆژ" for "4 days"
    ("tico19:PubMed_9:848", "ckb"),  # the web address left out
    ("tico19:Wikinews_3:1112", "ne"),  # "08:00 UTC" for "0800 UTC"
    ("tico19:Wikinews_3:1112", "rw"),
    ("tico19:Wikinews_3:1113", "hi"),  # "2 लाख 44 हज़ार" for "244 thousand"
    ("tico19:Wikinews_4:1140", "ru"),  # "круглосуточно" for "24/7"
    ("tico19:Wikinews_4:1140", "zh"),
    ("tico19:Wikinews_5:1149", "zh"),  # "500亿美元" for "US$50 billion"
    ("tico19:wiki_29:2624", "pt"),  # "sete dias" for "7 days"
    ("tico19:wiki_29:2631", "ar"),  # "مترين" (dual) for "2 metres"
    ("tico19:wiki_4:2693", "zh"),  # "490 万美元" for "US$4.9 million"
]
# Faulty references the rule rightly rejects (bench_precision.FAULTY_REFERENCES has them all).
FAULTY = [
    ("tico19:Wikinews_1:1095", "rw"),  # "9 Werurwe" for March 19
    ("tico19:Wikinews_5:1149", "es"),  # "50 000 USD" for US$50 billion
    ("tico19:wiki_4:2659", "ckb"),  # "12 2020" for December 2019
    ("tico19:Wikinews_3:1113", "fr"),  # misaligned: another sentence's translation
]


def test_real_translations_written_otherwise_pass_and_faulty_ones_fail(checker, shared_data):
    tico = _tico(shared_data)
    for tico_id, target in WRITTEN_OTHERWISE:
        source, output = tico[(tico_id, "en")], tico[(tico_id, target)]
        assert checker.check_translation(source, output, "en", target) is None, (tico_id, target)
    for tico_id, target in FAULTY:
        source, output = tico[(tico_id, "en")], tico[(tico_id, target)]
        assert checker.numbers_problem(source, output, target).reason == "numbers_changed", (tico_id, target)


def test_real_translations_with_numbers_keep_them(checker, shared_data):
    """Every TICO-19 translation into ar, ckb, hi, ne, pt, ru and zh of a sentence with numbers passes
    the numbers rule (but the faulty ckb ones), and a number changed by one in it is caught (but where
    the change hits a name, COVID-19 -> COVID-20, or another of its numbers is written as a word)."""
    tico = _tico(shared_data)
    faulty = {"tico19:PubMed_9:832", "tico19:wiki_4:2659", "tico19:wiki_4:2677", "tico19:wiki_4:2686"}
    checked = changed = caught = 0
    for (tico_id, lang), output in tico.items():
        source = tico.get((tico_id, "en"))
        if lang not in ("ar", "ckb", "hi", "ne", "pt", "ru", "zh") or not source or tico_id in faulty:
            continue
        if not required_numbers(source):
            continue
        checked += 1
        assert checker.numbers_problem(source, output, lang) is None, (tico_id, lang)
        for number in required_numbers(source):
            if number in output:
                changed += 1
                wrong = output.replace(number, str(int(number) + 1), 1)
                caught += checker.numbers_problem(source, wrong, lang) is not None
    assert checked > 500 and changed > 0.8 * checked
    assert caught >= 0.95 * changed, (caught, changed)
