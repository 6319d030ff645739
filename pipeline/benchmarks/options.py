"""The one option parser and answer parser of multiple-choice benchmarks: option lists written as
"(A) ...\n(B) ...", lists, or mappings; answers as letters (Latin or Arabic), indices, letter lists or
option text. Decontamination, evaluation and collect's exam reader all read options through here."""

from __future__ import annotations

import re
import unicodedata

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Arabic option labels as Arabic-language exams write them (alif with hamza, ba, jim, dal, ha).
ARABIC_LABELS = {"أ": "A", "ب": "B", "ج": "C", "د": "D", "ه": "E"}
_TATWEEL = "\u0640"
_LABEL = "A-Za-z" + "".join(ARABIC_LABELS)
# An option marker "(A)" / "（A）" at the start of a line or after whitespace.
_PAREN_MARKER = re.compile(rf"(?:^|(?<=\s))[(（]\s*([{_LABEL}])\s*[)）]\s*")
# A marker at the start of one option: "(A) ", "A. ", "A) ", "A: ".
_OWN_MARKER = re.compile(rf"^\s*[(（]?\s*([{_LABEL}])\s*[)）.:：]\s*")
# A letter and a space before each option of a list ("a 肝臓"): stripped only when every option has
# one, in order, so an option that starts with a word like "A" keeps it.
_BARE_MARKER = re.compile(r"^\s*([A-Za-z])[ \u3000]+(?=\S)")
_ANSWER = re.compile(rf"^\s*[(（]?\s*([{_LABEL}])\s*[)）.:：]?\s*$")
_ANSWER_PREFIX = re.compile(rf"^\s*[(（]\s*([{_LABEL}])\s*[)）]")
# Several letters: "(ACE)" (XMedBench's multi-answer questions), "A,C,E", "A C E".
_ANSWER_LETTERS = re.compile(r"^\s*[(（]?\s*([A-Z](?:[\s,;/]*[A-Z])+)\s*[)）]?\s*$")


class OptionError(ValueError):
    """Options or an answer that cannot be read as a multiple-choice item."""


# ---- options and answers -------------------------------------------------------------------------


def canonical_letter(label: str) -> str:
    """`c`, `Ｃ` and `ج` all mean option C."""
    label = unicodedata.normalize("NFKC", str(label)).replace(_TATWEEL, "").strip().strip("()（）.")
    return ARABIC_LABELS.get(label, label.upper())


def _labels_in_order(labels: list[str]) -> bool:
    letters = [canonical_letter(label) for label in labels]
    return letters == list(LETTERS[: len(letters)])


def parse_options(value: object) -> tuple[tuple[str, str], ...]:
    """(label, text) pairs from an "(A) ...\\n(B) ..." string, a list or an {"A": ...} mapping.

    A string is split at "(A)", "(B)", ... markers (half- or full-width, Latin or Arabic letters, in
    order, each at a line start or after a space; a line without a marker continues the option before
    it), else one option per line with an own "A." / "A)" marker stripped. A list item's own marker is
    stripped when it is the item's letter. Mapping keys may be "A", "a" or "(A)".
    """
    if isinstance(value, dict):
        keys = [str(k) for k in value]
        if not _labels_in_order(sorted(keys, key=canonical_letter)):
            raise OptionError(f"option keys {keys} are not A, B, C...")
        pairs = sorted(((canonical_letter(k), str(v).strip()) for k, v in value.items()), key=lambda p: p[0])
        options = tuple(pairs)
    elif isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            raise OptionError("the options list holds non-strings")
        if len(value) > len(LETTERS):
            raise OptionError(f"{len(value)} options; at most {len(LETTERS)} are supported")
        bare = [_BARE_MARKER.match(v) for v in value]
        if all(bare) and [canonical_letter(m.group(1)) for m in bare] == list(LETTERS[: len(value)]):
            value = [v[m.end() :] for v, m in zip(value, bare, strict=True)]  # "a 肝臓", "b 腎臓", ...
        options = tuple((LETTERS[i], _strip_own_marker(LETTERS[i], v)) for i, v in enumerate(value))
    elif isinstance(value, str):
        options = _split_option_string(value)
    else:
        raise OptionError(f"options are {type(value).__name__}, expected a string, a list or a mapping")
    if len(options) < 2:
        raise OptionError(f"{len(options)} option(s) parsed; a multiple-choice item needs at least 2")
    if any(not text for _, text in options):
        raise OptionError("an option is empty")
    return options


def _strip_own_marker(letter: str, option: str) -> str:
    """'B. Aspirin' at position B -> 'Aspirin'; a marker with another letter is kept as text."""
    match = _OWN_MARKER.match(option)
    if match and canonical_letter(match.group(1)) == letter and match.end() < len(option.rstrip()):
        return option[match.end() :].strip()
    return option.strip()


def _split_option_string(text: str) -> tuple[tuple[str, str], ...]:
    markers: list[re.Match] = []
    for match in _PAREN_MARKER.finditer(text):
        label = match.group(1)
        same_case = not markers or label.isupper() == markers[0].group(1).isupper()
        if len(markers) < len(LETTERS) and same_case and canonical_letter(label) == LETTERS[len(markers)]:
            markers.append(match)
    if markers:
        before = text[: markers[0].start()].strip()
        if before:
            raise OptionError(f"option text before the first '(A)' label: {before[:60]!r}")
        ends = [m.start() for m in markers[1:]] + [len(text)]
        return tuple(
            (m.group(1), " ".join(text[m.end() : end].split())) for m, end in zip(markers, ends, strict=True)
        )
    lines = [line for line in text.splitlines() if line.strip()][: len(LETTERS)]
    return tuple((LETTERS[i], _strip_own_marker(LETTERS[i], line)) for i, line in enumerate(lines))


def parse_answer(value: object, options: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    """The answer as canonical letters, from "(C)", "C", "c.", "(C) text", a 0-based index, a list of
    letters or indices, or the text of an option."""
    letters = [canonical_letter(label) for label, _ in options]
    if isinstance(value, list):
        if not value:
            raise OptionError("the answer list is empty")
        found = sorted({one for item in value for one in parse_answer(item, options)}, key=letters.index)
        return tuple(found)
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < len(options):
            return (letters[value],)
        raise OptionError(f"answer index {value} is outside the {len(options)} options")
    if not isinstance(value, str) or not value.strip():
        raise OptionError(f"answer is {value!r}, expected a letter, an index, letters or the option text")
    stripped = " ".join(value.split())
    texts = [" ".join(text.split()) for _, text in options]
    several = _ANSWER_LETTERS.match(value)
    if (
        several
        and stripped not in texts
        and all(letter in letters for letter in re.findall("[A-Z]", several.group(1)))
    ):
        return tuple(sorted(set(re.findall("[A-Z]", several.group(1))), key=letters.index))
    match = _ANSWER.match(value) or _ANSWER_PREFIX.match(value)
    if match:
        letter = canonical_letter(match.group(1))
        if letter in letters:
            return (letter,)
        raise OptionError(f"answer {value!r} names no option (the options are {', '.join(letters)})")
    if stripped in texts:
        return (letters[texts.index(stripped)],)
    raise OptionError(f"answer {value[:80]!r} is neither a letter nor the text of an option")
