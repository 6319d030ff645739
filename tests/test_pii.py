"""Personal-data scrubbing on realistic text in several languages and scripts, and the things that
look like personal data but are not (doses, dates, years, ICD codes, statistics)."""

from collections import Counter

import pytest
import regex

from pipeline.text import pii
from pipeline.text.pii import scrub

REPLACED = [
    (
        "Contact Dr. Martin at jean.martin@chu-lyon.fr or call +33 4 72 11 22 33.",
        "Contact Dr. Martin at <EMAIL> or call <PHONE>.",
    ),
    ("Téléphone : 01 23 45 67 89, du lundi au vendredi.", "Téléphone : <PHONE>, du lundi au vendredi."),
    ("Llame al 912 345 678 para pedir cita.", "Llame al <PHONE> para pedir cita."),
    ("Phone (555) 123-4567 or 1-800-555-0199; fax 020 7946 0958", "Phone <PHONE> or <PHONE>; fax <PHONE>"),
    # Arabic with Arabic-Indic digits, and a record number after its keyword
    ("اتصل على ٠١٢٣٤٥٦٧٨٩ للحجز. رقم الملف: ٤٥٦٧٨٩١٢", "اتصل على <PHONE> للحجز. رقم الملف: <ID>"),
    # Persian (extended Arabic-Indic) digits in an international number
    ("شماره تماس: +۹۸ ۲۱ ۸۸۷۷ ۶۶۵۵", "شماره تماس: <PHONE>"),
    # Japanese with full-width digits and dashes
    ("電話：０３－１２３４－５６７８（受付時間 9:00〜17:00）", "電話：<PHONE>（受付時間 9:00〜17:00）"),
    # Devanagari text around a phone number (the phone word comes after it)
    ("कृपया 98765 43210 पर कॉल करें। खुराक 250 मिलीग्राम।", "कृपया <PHONE> पर कॉल करें। खुराक 250 मिलीग्राम।"),
    ("मरीज़ का मोबाइल +91 98765 43210 है।", "मरीज़ का मोबाइल <PHONE> है।"),
    # Chinese without spaces: mobile number, record number, resident ID
    (
        "患者电话13812345678，病历号：A2023001234，身份证号11010519491231002X。",
        "患者电话<PHONE>，病历号：<ID>，身份证号<ID>。",
    ),
    ("MRN: 12345678, SSN 123-45-6789, NHS number 943 476 5919.", "MRN: <ID>, SSN <ID>, NHS number <ID>."),
    ("N° de dossier : 2023-004512.", "N° de dossier : <ID>."),
    ("Номер полиса ОМС: 7712 3456 7890 1234, тел. 8 (495) 123-45-67", "Номер полиса ОМС: <ID>, тел. <PHONE>"),
    ("Server 192.168.1.23 logged from 2001:db8::8a2e:370:7334", "Server <IP> logged from <IP>"),
    (
        "See https://www.facebook.com/jane.doe.77 and https://uni.example.edu/~jsmith/cv.html.",
        "See <URL> and <URL>.",
    ),
    ("Résultats : https://portal.example.org/results?patient_id=8841&view=full", "Résultats : <URL>"),
    ("write to john [at] example [dot] com", "write to <EMAIL>"),
]

UNCHANGED = [
    "Take 500 mg twice daily; maximum 4000 mg in 24 h. Children: 10–15 mg/kg every 6 hours.",
    "ICD-10 codes J45.909, E11.65 and I10 were recorded.",
    "The study ran from 2019-2021 (12 345 678 participants) and was published in 2022.",
    "Visit on 15/01/2024, follow-up on 2024-03-15 and 05.03.2024 14:30.",
    "Blood pressure 120/80 mmHg, HbA1c 7.2%, WBC 11.5 x 10^9/L, SpO2 94%.",
    "ISBN 978-0-12-345678-9, PMID 12345678, doi 10.1016/j.jaci.2020.04.006",
    "Guidelines: https://www.who.int/news-room/fact-sheets/detail/diabetes",
    "Er war nie 2019 in Berlin; ratio 3:1; std::vector; version 1.2.3",
    "在2020年3月12日，共有11种分离株正在研究中，剂量为每日0.5毫克。",
    "يجب تناول ٥٠٠ ملغ مرتين يوميًا لمدة ٧ أيام.",
    "1 000 000 doses were delivered between 1990 and 2020 in 195 countries.",
]


@pytest.mark.parametrize(("text", "expected"), REPLACED)
def test_personal_data_replaced(text, expected):
    assert scrub(text)[0] == expected


@pytest.mark.parametrize("text", UNCHANGED)
def test_no_false_positives(text):
    scrubbed, counts = scrub(text)
    assert scrubbed == text and not counts


def test_counts_per_type():
    _, counts = scrub(
        "Mail a@b.org or c.d@e.co.uk, call +44 20 7946 0958, host 10.0.0.1, MRN 99887766, https://x.com/johndoe"
    )
    assert counts == {"EMAIL": 2, "PHONE": 1, "IP": 1, "ID": 1, "URL": 1}


def test_sample_personal_data_all_replaced_and_nothing_else_touched():
    from helpers.sample_texts import planted, sample_texts

    plants = {p["sample_id"]: p["values"] for p in planted("pii")}
    assert len(plants) == 12
    seen = set()
    for sample_id, _, text in sample_texts():
        scrubbed, counts = scrub(text)
        if sample_id in plants:
            seen.add(sample_id)
            assert not [v for v in plants[sample_id] if v in scrubbed], (sample_id, scrubbed)
            assert sum(counts.values()) == len(plants[sample_id]), (sample_id, counts)
        else:
            assert not counts, (sample_id, counts, scrubbed)
    assert seen == set(plants)


# ---- the cheap tests that let scrub skip a pattern: they may only skip what would change nothing ------

KEYWORDS = [
    "MRN", "mrn", "N° de dossier", "Nº DE DOSSIER", "PATİENT ID", "Patient No.", "ſſn", "SSN",
    "Номер полиса ОМС", "ПОЛИС ОМС", "медицинской карте", "رقم الملف", "ورقم المريض", "病历号", "病歷號",
    "환자 번호", "환자번호", "차트번호", "मरीज़ आईडी", "मरीज आईडी", "आधार नंबर", "Patienten-ID",
    "numéro de sécurité sociale", "Historia Clínica", "N.º de utente", "nº de utente", "ID NUMBER",
    "cartella clinica n.", "カルテ番号", "patient",
]  # fmt: skip
VALUES = ["12345678", "A-1234567", "12 34 56 78 90", "٤٥٦٧٨٩١٢", "１２３４５６７８", "AB/2023/00451", "X1Y2Z3W4V5"]  # fmt: skip
PHONES = [
    "(0) 12 - (34) 56 78", "0 1 2 3 4 5 6", "(0)- (1)- (2)- (3)- (4)- (5)- (6)", "+1 (555) 123-4567", "0012 3 4 5 6 7 8",
    "١٢٣ ٤٥٦ ٧٨٩٠", "1\n2\n3\n4\n5\n6\n7", "０３－１２３４－５６７８", "98765 43210", "123 4567",
]  # fmt: skip


def _gate_cases() -> list[str]:
    """Keywords next to values in several scripts, case and spacing, phone-like digit runs, and all the
    texts above and in the sample."""
    from helpers.sample_texts import sample_texts

    cases = [text for text, _ in REPLACED] + UNCHANGED + [text for _, _, text in sample_texts()]
    for keyword in KEYWORDS:
        for value in VALUES:
            for sep in (": ", " ", "", " is ", "：", "\n", " - ", "#"):
                cases += [f"{keyword}{sep}{value}", f"Le {keyword}{sep}{value}, tél. +33 1 23 45 67 89."]
    for phone in PHONES:
        cases += [phone, f"call {phone}", f"tel. {phone} now", f"{phone[:-1]} mg"]
    return cases


def test_keyword_gate_skips_only_texts_without_keyword_ids():
    replaced = 0
    for text in _gate_cases():
        ids = pii._replace_keyword_ids(text, Counter())
        replaced += ids != text
        if not pii._ID_KEYWORD_LITERALS.found(pii._fold(text)):
            assert ids == text, text
    assert replaced > 400  # the cases do exercise the keyword path


def test_phone_gate_skips_only_texts_without_phones():
    replaced = 0
    for text in _gate_cases():
        phones = pii._replace_phones(text, Counter())
        replaced += phones != text
        if not pii._PHONE_DIGITS.search(text):
            assert phones == text, text
    assert replaced > 50


def test_every_id_keyword_has_a_required_literal():
    alternatives = pii._required_literals(pii._ID_KEYWORDS)
    top_level = regex.sub(r"\((?:[^()]|\([^()]*\))*\)", "", pii._ID_KEYWORDS)  # groups hold bars too
    assert len(alternatives) == top_level.count("|") + 1
    assert all(alternatives)
    assert pii._required_literals(r"ab?c|x[yz]w+|(?:foo)?bar|\w*baz|n\.?º de|\p{L}q") == [
        "a", "x", "bar", "baz", "º de", "q",
    ]  # fmt: skip


def test_folding_agrees_with_the_regex_case_insensitive_match():
    """A character the keyword pattern matches case-insensitively folds like the keyword's own, so a
    keyword in any case holds its folded literal."""
    chars = sorted(set("".join(pii._required_literals(pii._ID_KEYWORDS))))
    everything = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)
    matching = set(regex.findall("[" + "".join(map(regex.escape, chars)) + "]", everything, regex.IGNORECASE))
    for x in matching:
        for c in chars:
            if regex.fullmatch(regex.escape(c), x, regex.IGNORECASE):
                assert pii._fold(x) == pii._fold(c), (c, x)
