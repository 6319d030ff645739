"""The numbers of a text, and which of a source's numbers a translation is missing.

A human translator keeps every quantity but not always its digits: 1,279 becomes 1 279 or ١٢٧٩,
"4 days" becomes "چوار ڕۆژ" (Sorani words), "244 thousand" becomes "2 लाख 44 हज़ार" (Indian grouping),
"US$4.9 million" becomes "490 万美元", "0800 UTC" becomes "08:00", 2020 becomes พ.ศ. 2563. What a
translator rightly leaves out is not a quantity: the number in a name or code (COVID-19), a citation
marker ([12]), a web address, the idiom "24/7". `missing_numbers` compares quantities, not strings,
with each language's words for numbers (CLDR's spell-out rules through `unicode-rbnf`, plus short
hand-checked lists for languages CLDR lacks) and scale words.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from functools import cache

import regex
from unicode_rbnf import FormatPurpose, RbnfEngine

# A number: digit runs joined by one grouping/decimal separator (a space only before 3 digits). A
# number glued to a word (COVID-19, H1N1) takes no space-separated groups, so "COVID-19 122 653"
# reads 19 and 122653.
_SEPARATOR = r"[.,'\u00a0\u202f\u066b\u066c]"
_NUMBER = regex.compile(
    rf"(?<=[\p{{L}}--[\p{{Han}}\p{{Hiragana}}\p{{Katakana}}\p{{Hangul}}]]-?)\d+(?:{_SEPARATOR}\d+)*"
    rf"|\d+(?:(?:{_SEPARATOR}|\s(?=\d{{3}}(?!\d)))\d+)*",
    regex.V1,
)
# Numbers a human translator rightly changes or leaves out: those inside a name or code (COVID-19,
# SARS-CoV-2, H1N1: translated as "کۆڕۆنا 2019" or the local name), citation markers ([12], [3, 4]),
# web addresses (their digits are not quantities), and the idiom 24/7 ("round the clock").
_IDENTIFIER_NUMBER = regex.compile(r"\p{L}[\p{L}\d]*-?\d+[\p{L}\d]*|\d+[\p{L}][\p{L}\d]*")
_CITATION = regex.compile(r"\[\d+(?:\s*[,–-]\s*\d+)*\]")
_URL = regex.compile(r"(?:https?://|www\.)\S+", regex.I)
_ROUND_THE_CLOCK = regex.compile(r"(?<!\d)24\s?[/x×]\s?7(?!\d)")
# A clock time: 10 p.m. may be written 22:00, and 0800 UTC as 08:00.
_PM = regex.compile(r"\b(1[01]|[1-9])\s?p\.?m\b", regex.I)
_MILITARY_TIME = regex.compile(
    r"(?<![\d:.,])([01]\d|2[0-3])([0-5]\d)\s?(?=(?:UTC|GMT|hrs?|hours)\b)", regex.I
)
# Years in the calendars a translator may use: the Thai Buddhist era (+543), Japanese eras.
_JAPANESE_ERAS = {"令和": 2018, "平成": 1988, "昭和": 1925}
_JAPANESE_ERA_YEAR = regex.compile(r"(令和|平成|昭和)\s?(\d{1,2}|元)\s?年")

# Scale words: "52 thousand", "2 लाख 44 हज़ार", "490 万", "elfu 52". Each language's words (regex),
# their value, and whether the word comes after the number (most languages) or before it (Swahili).
_SCALES: dict[str, dict[str, float]] = {
    "en": {r"thousand": 1e3, r"million": 1e6, r"billion": 1e9},
    "fr": {r"mille": 1e3, r"millions?": 1e6, r"milliards?": 1e9},
    "es": {r"mil millones": 1e9, r"mil": 1e3, r"mill[oó]n(?:es)?": 1e6},
    "pt": {r"mil milh[õo]es": 1e9, r"mil": 1e3, r"milh[ãaõo](?:o|es)": 1e6, r"bilh[ãaõo](?:o|es)": 1e9},
    "it": {r"mila": 1e3, r"milion[ei]": 1e6, r"miliard[oi]": 1e9},
    "de": {r"tausend": 1e3, r"mio\.?|millionen|million": 1e6, r"mrd\.?|milliarden?": 1e9},
    "ru": {r"тыс\.?|тысяч[аиу]?": 1e3, r"млн\.?|миллион(?:а|ов)?": 1e6, r"млрд\.?|миллиард(?:а|ов)?": 1e9},
    "uk": {r"тис\.?|тисяч[аі]?": 1e3, r"млн\.?|мільйон(?:а|ів)?": 1e6, r"млрд\.?|мільярд(?:а|ів)?": 1e9},
    "ar": {r"[أا]لف|آلاف": 1e3, r"مليون|ملايين": 1e6, r"مليار|مليارات": 1e9},
    "hi": {r"हज़ार|हजार": 1e3, r"लाख": 1e5, r"करोड़|करोड": 1e7, r"अरब": 1e9},
    "ne": {r"हज़ार|हजार": 1e3, r"लाख": 1e5, r"करोड़|करोड": 1e7, r"अर्ब|अरब": 1e9},
    "zh": {r"千": 1e3, r"万|萬": 1e4, r"亿|億": 1e8},
    "ja": {r"千": 1e3, r"万|萬": 1e4, r"億": 1e8},
    "ko": {r"천": 1e3, r"만": 1e4, r"억": 1e8},
    "sw": {r"elfu": 1e3, r"milioni": 1e6, r"bilioni": 1e9},
}
for _code in ("mai", "doi", "sa"):
    _SCALES[_code] = _SCALES["hi"]
_SCALE_BEFORE_NUMBER = {"sw"}  # "elfu 52", "milioni 4.9"
_UNSPACED = {"zh", "ja", "th", "lo"}
_ATTACHED_SCALES = _UNSPACED | {"ko"}  # Korean writes "5만명": the scale word runs into the counter

# Words for numbers in languages CLDR's spell-out rules lack, checked by hand: units and tens, joined
# into 21-99 by the language's "and" (Sorani "بیست و چوار" = 24, Hausa "ashirin da huɗu").
_EXTRA_NUMBER_WORDS: dict[str, dict[int, tuple[str, ...]]] = {
    "ckb": {
        1: ("یەک",),
        2: ("دوو",),
        3: ("سێ",),
        4: ("چوار",),
        5: ("پێنج",),
        6: ("شەش",),
        7: ("حەوت",),
        8: ("هەشت",),
        9: ("نۆ",),
        10: ("دە",),
        20: ("بیست",),
        30: ("سی",),
        40: ("چل",),
        50: ("پەنجا",),
        60: ("شەست",),
        70: ("حەفتا",),
        80: ("هەشتا",),
        90: ("نەوەد",),
        100: ("سەد",),
    },
    "ha": {
        1: ("ɗaya", "daya"),
        2: ("biyu",),
        3: ("uku",),
        4: ("huɗu", "hudu"),
        5: ("biyar",),
        6: ("shida",),
        7: ("bakwai",),
        8: ("takwas",),
        9: ("tara",),
        10: ("goma",),
        20: ("ashirin",),
        30: ("talatin",),
        40: ("arba'in", "arbaʼin", "arba’in"),
        50: ("hamsin",),
        60: ("sittin",),
        70: ("saba'in", "sabaʼin", "saba’in"),
        80: ("tamanin",),
        90: ("casa'in", "casaʼin", "casa’in"),
        100: ("ɗari", "dari"),
    },
}
# Arabic says "two days" with the dual of the noun (يومين), not with a number word.
_NUMBER_WORD_JOIN = {"ckb": "و", "ha": "da"}
_ARABIC_DUAL = regex.compile(
    r"(?<!\w)(?:ال)?(?:متر|كيلومتر|سنتيمتر|مليمتر|لتر|يوم|اسبوع|شهر|عام|سنت|ساعت|دقيقت|مرت|جرعت|حالت"
    r"|شخص|طفل|قرص)(?:ين|ان)(?!\w)"
)
_WORD_NUMBER_MAX = 100


def _ascii_digits(run: str) -> str:
    return "".join(str(unicodedata.digit(ch, 0)) for ch in run)


def numbers(text: str) -> Counter:
    """The numbers of `text` as ASCII digit strings (any script's digits), as a multiset.

    Grouping and decimal separators and leading zeros are dropped, so 1,279 / 1279 / 1 279, 2.5 / 2,5
    and 4 / 04 compare equal whatever the locale (Indian 10,51,635 included).
    """
    return Counter(_ascii_digits(regex.sub(r"\D", "", m)).lstrip("0") or "0" for m in _NUMBER.findall(text))


def required_numbers(text: str) -> Counter:
    """The numbers a translation must keep: those of `text` outside names and codes (COVID-19),
    citation markers ([12]), web addresses and "24/7"."""
    for pattern in (_URL, _ROUND_THE_CLOCK, _CITATION, _IDENTIFIER_NUMBER):
        text = pattern.sub(" ", text)
    return numbers(text)


def _value(written: str) -> float | None:
    """A written number's value: 1,051,635 / 1 051 635 / 10,51,635 are integers, 4.9 / 4,9 decimals."""
    parts = [_ascii_digits(part) for part in regex.split(rf"{_SEPARATOR}|\s+", written.strip())]
    if len(parts) == 1:
        return float(parts[0])
    grouped = all(len(p) == 3 for p in parts[1:])
    indian = len(parts[-1]) == 3 and all(len(p) == 2 for p in parts[1:-1])
    if grouped or indian:
        return float("".join(parts))
    if len(parts) == 2:
        return float(f"{parts[0]}.{parts[1]}")
    return None


@cache
def _scale_pattern(language: str) -> regex.Pattern | None:
    scales = _SCALES.get(language)
    if not scales:
        return None
    words = "|".join(f"(?:{word})" for word in scales)
    number = _NUMBER.pattern
    if language in _SCALE_BEFORE_NUMBER:
        body = rf"(?P<scale>{words})\s+(?P<number>{number})"
    else:
        body = rf"(?P<number>{number})\s*(?P<scale>{words})"
    edge = "" if language in _ATTACHED_SCALES else r"(?!\p{L})"
    return regex.compile(body + edge, regex.I | regex.V1)


def _scale_of(language: str, word: str) -> float:
    for pattern, scale in _SCALES[language].items():
        if regex.fullmatch(pattern, word, regex.I):
            return scale
    return 1.0


def _scaled(text: str, language: str) -> list[tuple[str, str, tuple[int, int]]]:
    """Each number written with a scale word: (its digits, its whole value), "4.9 million" -> ("49",
    "4900000")."""
    pattern = _scale_pattern(language)
    out = []
    for match in pattern.finditer(text) if pattern is not None else ():
        value = _value(match.group("number"))
        if value is not None:
            quantity = round(value * _scale_of(language, match.group("scale")))
            out.append((next(iter(numbers(match.group("number")))), str(quantity), match.span()))
    return out


def scaled_quantities(text: str, language: str) -> Counter:
    """The quantities written with scale words, as integer strings: "52 thousand" -> 52000, "490 万"
    -> 4900000, and a run of them summed: "2 लाख 44 हज़ार" -> 244000 (each part counts too)."""
    out: Counter = Counter()
    total, last_value, last_end = 0, None, None
    for _digits, quantity, (start, end) in _scaled(text, language):
        value = int(quantity)
        out[quantity] += 1
        joined = last_end is not None and not text[last_end:start].strip()
        if joined and last_value is not None and value < last_value:
            total += value
            out[str(total)] += 1
        else:
            total = value
        last_value, last_end = value, end
    return out


def _fold(text: str) -> str:
    """Case, Arabic-script letter variants (أ/إ/آ -> ا, ى -> ي, ة -> ه) and hyphens folded away."""
    text = text.casefold().replace("\u0640", "")
    text = regex.sub(r"[أإآ]", "ا", text).replace("ى", "ي").replace("ة", "ه")
    return regex.sub(r"[-‐‑]", " ", text)


@cache
def _number_words(language: str) -> tuple[regex.Pattern | None, dict[str, int]]:
    """The words for 1-100 in `language` (every grammatical form CLDR lists), longest first."""
    words: dict[str, int] = {}
    if language in RbnfEngine.get_supported_languages():
        engine = RbnfEngine.for_language(language)
        for n in range(1, _WORD_NUMBER_MAX + 1):
            for ruleset, text in engine.format_number(n, FormatPurpose.CARDINAL).text_by_ruleset.items():
                if "days" not in ruleset and "year" not in ruleset:
                    words.setdefault(_fold(text), n)
        if language == "sr":  # Serbian is written in both scripts
            latin = RbnfEngine.for_language("sr_Latn")
            for n in range(1, _WORD_NUMBER_MAX + 1):
                for text in latin.format_number(n, FormatPurpose.CARDINAL).text_by_ruleset.values():
                    words.setdefault(_fold(text), n)
    extra = _EXTRA_NUMBER_WORDS.get(language, {})
    for n, forms in extra.items():
        for form in forms:
            words.setdefault(_fold(form), n)
    if language in _NUMBER_WORD_JOIN:
        for tens in range(20, 100, 10):
            for unit in range(1, 10):
                for ten_form in extra[tens]:
                    for unit_form in extra[unit]:
                        words.setdefault(
                            _fold(f"{ten_form} {_NUMBER_WORD_JOIN[language]} {unit_form}"), tens + unit
                        )
    if not words:
        return None, words
    alternatives = "|".join(regex.escape(w) for w in sorted(words, key=len, reverse=True))
    if language in _UNSPACED:
        return regex.compile(f"(?:{alternatives})"), words
    return regex.compile(rf"(?<!\w)(?:{alternatives})(?!\w)"), words


def worded_numbers(text: str, language: str) -> Counter:
    """The numbers 1-100 written as words in `language`: "sete dias" -> 7, "چوار ڕۆژ" -> 4, "مترين" -> 2."""
    pattern, words = _number_words(language)
    folded = _fold(text)
    out: Counter = Counter()
    if pattern is not None:
        out.update(str(words[m]) for m in pattern.findall(folded))
    if language == "ar":
        out["2"] += len(_ARABIC_DUAL.findall(folded))
    return out


def _calendar_years(text: str, language: str) -> Counter:
    """Years of other calendars as Gregorian years: Thai พ.ศ. 2563 -> 2020, Japanese 令和2年 -> 2020."""
    out: Counter = Counter()
    if language == "th":
        for number in numbers(text).elements():
            if 2300 <= int(number) <= 2700:
                out[str(int(number) - 543)] += 1
    if language == "ja":
        for era, year in _JAPANESE_ERA_YEAR.findall(text):
            out[str(_JAPANESE_ERAS[era] + (1 if year == "元" else int(_ascii_digits(year))))] += 1
    return out


def missing_numbers(source: str, output: str, source_language: str, target: str) -> Counter:
    """The source's quantities the output lacks, however the output writes them (digits of any
    script, number words, scale words, clock times, other calendars)."""
    kept = numbers(output)
    kept |= scaled_quantities(output, target)
    missing = required_numbers(source) - kept
    for hour in _PM.finditer(source):  # 10 p.m. -> 22:00
        if missing[hour.group(1)] and kept[str(int(hour.group(1)) + 12)]:
            missing[hour.group(1)] -= 1
    for clock in _MILITARY_TIME.finditer(source):  # 0800 UTC -> 08:00
        hours, minutes = str(int(clock.group(1))), str(int(clock.group(2)))
        whole = str(int(clock.group(1) + clock.group(2)))
        if missing[whole] and kept[hours] and kept[minutes]:
            missing[whole] -= 1
    missing = +missing
    # "52 thousand" may become 52 000, "4.9 million" 490 万: the whole quantity stands for its digits;
    # but the same digits with another scale ("4.9 million" as "49 हज़ार") are a changed quantity.
    written_scaled = _scaled(output, target)
    for digits, whole, _ in _scaled(source, source_language):
        if kept[whole]:
            kept[whole] -= 1
            if missing[digits]:
                missing[digits] -= 1
        elif any(d == digits for d, _, _ in written_scaled):
            missing[digits] += 1
    missing = +missing
    # Number words of the output stand for the source's digits, except those that translate the
    # source's own number words ("four-pack" -> "quatre paquets" says nothing about "March 4").
    words = worded_numbers(output, target) - worded_numbers(source, source_language)
    for alternative in (words, _calendar_years(output, target)):
        if missing:
            missing -= alternative
    return +missing
