"""Personal-data scrubbing: e-mail addresses, phone numbers, IP addresses, personal URLs and record
numbers become typed placeholders (<EMAIL>, <PHONE>, <IP>, <URL>, <ID>).

Digits are matched in any script (Arabic-Indic, Devanagari, full-width...). Phone numbers are the
hard part: a run of digits is only a phone number when it is written internationally (`+`/`00`),
sits next to a phone word in one of the corpus languages, or has a national phone shape (trunk
`0` prefix, North-American grouping, Chinese mobile); dates, year ranges, grouped thousands,
doses and ICD codes are left alone. Record numbers are replaced after a record-number keyword
(`MRN:`, `N° de dossier`, `病历号` ...) or in two unambiguous formats (US SSN, Chinese resident ID).
"""

from __future__ import annotations

import unicodedata
from collections import Counter

import regex

from pipeline.text.normalize import SubstringSet

PLACEHOLDERS = ("EMAIL", "URL", "IP", "ID", "PHONE")

_EMAIL = regex.compile(
    r"(?<![\w.+\-])[\w.+\-]+(?:@|\s?[\[(]at[\])]\s?)(?:[\w\-]+(?:\.|\s?[\[(]dot[\])]\s?))+[^\W\d_]{2,}(?![\w\-])",
    regex.IGNORECASE,
)

_URL = regex.compile(r"\b(?:https?://|www\.)[^\s<>\"'`]+", regex.IGNORECASE)
_URL_TRAILING = ".,;:!?)]}'\"»”’。，；："
_PERSONAL_URL = regex.compile(
    r"""
    /~[\w.\-]+                                                        # ~user home pages
  | /(?:users?|u|profiles?|people|persons?|members?|authors?|patients?|accounts?|in|pub)/[^/\s?#]+
  | [?&](?:user(?:name|_?id)?|uid|e-?mail|mail|patient(?:_?id)?|pid|mrn|name|phone|tel|token|session|sid)=
  | (?:facebook|fb|instagram|twitter|x|tiktok|vk|weibo|threads)\.(?:com|me|cn)/(?!(?:help|policies|about|legal|privacy)\b)[\w.\-]+
  | (?:t\.me|wa\.me)/[\w.\-+]+
  | drive\.google\.com/|docs\.google\.com/|dropbox\.com/s/|onedrive\.live\.com/
    """,
    regex.IGNORECASE | regex.VERBOSE,
)

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = regex.compile(rf"(?<![\w.])(?:{_OCTET}\.){{3}}{_OCTET}(?![\w]|\.[0-9])")
_H = r"[0-9a-f]{1,4}"
_IPV6 = regex.compile(
    rf"(?<![\w:])(?=[0-9a-f:]*[0-9a-f])(?:(?:{_H}:){{7}}{_H}|(?:{_H}(?::{_H}){{0,6}})?::(?:{_H}(?::{_H}){{0,6}})?)(?![\w:])",
    regex.IGNORECASE,
)

_ID_KEYWORDS = (
    # en
    r"mrn|uhid|medical record (?:number|no\.?|#)|record (?:number|no\.?)|patient (?:id|number|no\.?)|"
    r"hospital (?:number|no\.?)|case (?:number|no\.?)|chart (?:number|no\.?)|nhs (?:number|no\.?)|"
    r"ssn|social security (?:number|no\.?)|insurance (?:number|no\.?|id)|policy (?:number|no\.?)|"
    r"member id|passport (?:number|no\.?)|national id(?: number)?|id (?:number|no\.?)|"
    # fr, es, pt, it, de
    r"n[°º] ?de dossier|numéro de dossier|dossier n[°º]|numéro (?:de )?patient|numéro de sécurité sociale|"
    r"nir|número de historia(?: clínica)?|historia clínica|n[°º] de historia|nhc|dni|"
    r"número de (?:paciente|afiliación|seguridad social|utente)|n\.?º de utente|número do prontuário|"
    r"prontuário|cpf|cartão sus|codice fiscale|numero di cartella|cartella clinica n\.?|tessera sanitaria|"
    r"patientennummer|patienten-id|fallnummer|versichertennummer|krankenversichertennummer|aktenzeichen|"
    # ru, ar, hi
    r"номер полиса(?: омс)?|полиса? омс|снилс|номер истории болезни|история болезни|медицинск\w* карт\w*|"
    r"[وبل]?رقم (?:ال)?ملف|[وبل]?رقم المريض|[وبل]?رقم الهوية|الرقم الوطني|"
    r"मरीज़? आईडी|रोगी संख्या|आधार (?:संख्या|नंबर)|पंजीकरण संख्या|अस्पताल का नंबर|"
    # zh, ja, ko
    r"病历号|病案号|住院号|门诊号|身份证号码?|患者编号|医保卡号|病歷號|"
    r"カルテ番号|患者番号|診察券番号|マイナンバー|保険証番号|"
    r"환자\s?번호|주민등록번호|등록번호|차트\s?번호"
)
# one token of a pattern: an escape, a class, a group (nested once), or one character
_PATTERN_TOKEN = regex.compile(
    r"\\[pPN]\{[^}]*\}|\\.|\[(?:\\.|[^\]])*\]|\((?:\\.|[^()\\]|\((?:\\.|[^()\\])*\))*\)|."
)


def _required_literals(alternatives: str) -> list[str]:
    """Per top-level alternative of a pattern, its longest run of plain characters, which every match
    holds: a text holding none of them (compared `_fold`ed) cannot match, and substring scans say so
    much faster than the pattern. Quantified tokens, classes, groups and escapes like \\w end a run."""
    runs: list[list[str]] = [[""]]
    tokens = _PATTERN_TOKEN.findall(alternatives)
    for i, token in enumerate(tokens):
        if token == "|":
            runs.append([""])
            continue
        quantified = i + 1 < len(tokens) and tokens[i + 1] in ("?", "*", "+", "{")
        plain = len(token) == 1 and token not in ".^$?*+{}" or token[0] == "\\" and not token[1].isalnum()
        if plain and not quantified:
            runs[-1][-1] += token[-1]
        else:
            runs[-1].append("")
    return [max(alternative, key=len) for alternative in runs]


def _fold(text: str) -> str:
    """Casefolded, without U+0307: the regex module's IGNORECASE matches İ with i, which casefolds to
    i + U+0307."""
    return text.casefold().replace("\u0307", "")


_ID_KEYWORD_LITERALS = SubstringSet(map(_fold, _required_literals(_ID_KEYWORDS)))
_ID_GROUP = r"[A-Za-z\p{Nd}]*\p{Nd}[A-Za-z\p{Nd}]*"
_ID_VALUE = regex.compile(
    rf"(?<![A-Za-z0-9\p{{Nd}}\-])(?:[A-Za-z]{{1,4}}[\-/])?{_ID_GROUP}(?:[\s\-/.]{_ID_GROUP}){{0,7}}"
)
# the keyword, then a few non-digit characters ("is", "es", "ist", "：", "は", "는"...) before the value
_ID_KEY_BEFORE = regex.compile(
    rf"(?<![\p{{L}}])(?:{_ID_KEYWORDS})(?![A-Za-zÀ-ÿ])[^\p{{Nd}}\n]{{0,12}}$",
    regex.IGNORECASE,
)
_SSN = regex.compile(r"(?<![\w\-])[0-9]{3}-[0-9]{2}-[0-9]{4}(?![\w\-])")
_KR_RESIDENT_ID = regex.compile(
    r"(?<![0-9\-])[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])-[1-8][0-9]{6}(?![0-9])"
)
_IT_FISCAL_CODE = regex.compile(
    r"(?<![A-Za-z0-9])[A-Z]{6}[0-9]{2}[A-EHLMPRST][0-9]{2}[A-Z][0-9]{3}[A-Z](?![A-Za-z0-9])"
)
_CN_RESIDENT_ID = regex.compile(
    r"(?<![0-9])[1-9][0-9]{5}(?:19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])[0-9]{3}[0-9Xx](?![0-9A-Za-z])"
)

_SEP = r"[ \u00a0\u3000.\-‐‑–—－/．]"
_GROUP = r"(?:\(\p{Nd}{1,5}\)|（\p{Nd}{1,5}）|\p{Nd}{1,6})"
_PHONE_CANDIDATE = regex.compile(
    rf"(?<![A-Za-z0-9\p{{Nd}}+＋@/\-_]|\p{{Nd}}[.,])(?:[+＋]|00)?\s?{_GROUP}(?:{_SEP}?\s?{_GROUP}){{0,6}}"
    rf"(?![A-Za-z0-9\p{{Nd}}@_])(?![.,]\p{{Nd}})"
)
_PHONE_WORDS = regex.compile(
    r"\b(?:tel|tél|phone|telephone|téléphone|teléfono|telefono|telefone|telefon|telemóvel|telemovel|"
    r"mobile?|móvil|celular|"
    r"cell(?:ular)? ?(?:phone|no)|handy|call|fax|whatsapp|contact ?:|appel(?:ez|er)|llam[ae]|llamar|ligue|"
    r"chiama(?:re)?|anrufen|тел|телефон|звоните|моб)\b|"
    r"هاتف|جوال|اتصل|موبايل|"
    r"फ़ोन|फोन|मोबाइल|कॉल|"
    r"电话|電話|手机|手機|联系|聯繫|携帯|連絡|전화|휴대폰|연락처|โทร|טלפון",
    regex.IGNORECASE,
)
_DATE = regex.compile(
    r"(?<!\d)\d{1,2}[./\-]\d{1,2}[./\-](?:19|20)?\d\d(?!\d)|(?<!\d)(?:19|20)\d\d[./\-–]\d{1,2}[./\-–]\d{1,2}(?!\d)"
    r"|^\d{1,2}[./\-]\d{4}$"
)
_YEAR_RANGE = regex.compile(r"^(?:1[89]|20)\d\d\s?[\-–/]\s?(?:1[89]|20)?\d\d$")
_THOUSANDS = regex.compile(r"^[1-9]\d{0,2}(?:([ \u00a0,.])\d{3})(?:\1\d{3})*$")
_NANP = regex.compile(r"^(?:1[\s.\-])?(?:\(\d{3}\)\s?|\d{3}[\s.\-])\d{3}[\s.\-]\d{4}$")
_CN_MOBILE = regex.compile(r"^1[3-9]\d{9}$")
_DIGIT_CLUSTER = regex.compile(r"\p{Nd}(?:[^\p{Nd}\n]{0,2}\p{Nd}){4}")
# a phone candidate holds 7+ digits, at most 4 characters apart ("1)- (2")
_PHONE_DIGITS = regex.compile(r"\p{Nd}(?:[^\p{Nd}]{0,4}\p{Nd}){6}")


def _ascii_digits(text: str) -> str:
    """Digits of any script as ASCII; other characters unchanged."""
    return "".join(str(unicodedata.digit(ch)) if ch.isdigit() and not ch.isascii() else ch for ch in text)


def _is_phone(candidate: str, before: str, after: str) -> bool:
    plain = _ascii_digits(candidate.replace("＋", "+").replace("（", "(").replace("）", ")")).strip()
    digits = sum(ch.isdigit() for ch in plain)
    if digits < 7 or digits > 15 or _YEAR_RANGE.match(plain):
        return False
    international = plain.startswith("+") or (plain.startswith("00") and digits >= 10)
    if international and digits >= 8:
        return True
    if _DATE.search(plain):
        return False
    if _PHONE_WORDS.search(before[-30:]) or _PHONE_WORDS.search(after[:25]):
        return True
    if _THOUSANDS.match(plain):
        return False
    compact = "".join(ch for ch in plain if ch.isdigit())
    trunk = compact.startswith("0") and not compact.startswith("00") and 9 <= digits <= 12
    return trunk or bool(_NANP.match(plain)) or bool(_CN_MOBILE.match(plain))


def _replace_urls(text: str, counts: Counter) -> str:
    def sub(match: regex.Match) -> str:
        url = match.group(0)
        stripped = url.rstrip(_URL_TRAILING)
        if not _PERSONAL_URL.search(stripped):
            return url
        counts["URL"] += 1
        return "<URL>" + url[len(stripped) :]

    return _URL.sub(sub, text)


def _replace_phones(text: str, counts: Counter) -> str:
    lowered = text.lower()

    def sub(match: regex.Match) -> str:
        start, end = match.span()
        if not _is_phone(match.group(0), lowered[max(0, start - 40) : start], lowered[end : end + 30]):
            return match.group(0)
        counts["PHONE"] += 1
        leading = match.group(0)[: len(match.group(0)) - len(match.group(0).lstrip())]
        return leading + "<PHONE>"

    return _PHONE_CANDIDATE.sub(sub, text)


def _replace_keyword_ids(text: str, counts: Counter) -> str:
    """Digit-bearing values (5+ digits) right after a record-number keyword."""

    def sub(match: regex.Match) -> str:
        value = match.group(0)
        if sum(ch.isdigit() for ch in value) < 5:
            return value
        if not _ID_KEY_BEFORE.search(text, max(0, match.start() - 60), match.start()):
            return value
        counts["ID"] += 1
        return "<ID>"

    return _ID_VALUE.sub(sub, text)


def _replace(pattern: regex.Pattern, kind: str, text: str, counts: Counter) -> str:
    new, n = pattern.subn(f"<{kind}>", text)
    counts[kind] += n
    return new


def scrub(text: str) -> tuple[str, Counter]:
    """Replace personal data in `text` with typed placeholders; returns the text and counts per type."""
    counts: Counter = Counter()
    lowered = text.lower()
    if "@" in text or "[at]" in lowered or "(at)" in lowered:
        text = _replace(_EMAIL, "EMAIL", text, counts)
    if "http" in lowered or "www." in lowered:
        text = _replace_urls(text, counts)
    if "::" in text or text.count(":") >= 7:
        text = _replace(_IPV6, "IP", text, counts)
    if "." in text:
        text = _replace(_IPV4, "IP", text, counts)
    if _DIGIT_CLUSTER.search(text):  # every ID and phone pattern needs 5 digits close together
        if _ID_KEYWORD_LITERALS.found(_fold(text)):
            text = _replace_keyword_ids(text, counts)
        text = _replace(_SSN, "ID", text, counts)
        text = _replace(_CN_RESIDENT_ID, "ID", text, counts)
        text = _replace(_KR_RESIDENT_ID, "ID", text, counts)
        text = _replace(_IT_FISCAL_CODE, "ID", text, counts)
        if _PHONE_DIGITS.search(text):
            text = _replace_phones(text, counts)
    return text, +counts
