"""The benchmark reader: medical QA benchmarks in the formats their authors publish them in.

One reader, one option parser and one answer parser, used by decontamination (`stages/decontam.py`)
and evaluation (`moe_train/eval`) alike, so both see the same questions. Each configured benchmark
names its `format:`; a file that does not fit gets a message that names the file, the line and the
reason, and when `format:` is missing the error suggests the format the file looks like (it is never
guessed silently).

| format | what the file looks like | examples |
|---|---|---|
| `xmedbench` | JSONL (or a JSON array): `question`, `options` "(A) ...\\n(B) ...", `answer` "(C)" | XMedBench, ApolloMoEBench |
| `mcq_list` | JSON(L): `question`, `options` as a list, `answer` as a letter, a 0-based index, a list of letters or the option text | IgakuQA (`problem_text`, `choices`, `["e"]`) |
| `mcq_dict` | JSON(L): `question`, `options` as `{"A": ...}`, `answer_idx` or `answer` (letters or text) | MedQA-USMLE, FrenchMedMCQA (`answers`, `correct_answers`) |
| `medmcqa` | JSON(L): `question`, `opa`..`opd`, `cop` 1-4 (the authors' release) | MedMCQA |
| `medmcqa_hf` | the same with `cop` 0-3 (the Hugging Face `datasets` export) | MedMCQA on the Hub |
| `mmlu_csv` | CSV without header: question, options..., answer letter | MMLU (hendrycks/test) |
| `cmmlu_csv` | CSV with a header: a question column, option columns (`A`.. or `optionA`..), an answer column | CMMLU, JMMLU-Med |
| `pubmedqa` | a JSON object keyed by PMID: `QUESTION`, `CONTEXTS`, `final_decision` yes/no/maybe | PubMedQA |
| `yes_no` | JSON(L): `context`, `question`, `answer` yes/no in the benchmark's language | RuMedDaNet (да/нет) |
| `headqa` | the HEAD-QA release: `exams` -> `data` -> `qtext`, `answers` [{aid, atext}], `ra` | HEAD-QA |

Yes/no(/maybe) questions become options the way ApolloMoE's benchmark does: yes is (A), no is (B),
maybe is (C) (its extraction reads a bare "Yes." as A and "No." as B). An item may have several
correct letters (FrenchMedMCQA's `multiple` questions); evaluation scores those by exact set match.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import ConfigError

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

# Yes/no words per language -> the option they are; the first word of each list labels the option.
YES_NO_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "en": (("yes",), ("no",)),
    "ru": (("да",), ("нет",)),
    "fr": (("oui",), ("non",)),
    "es": (("sí", "si"), ("no",)),
    "pt": (("sim",), ("não", "nao")),
    "it": (("sì", "si"), ("no",)),
    "de": (("ja",), ("nein",)),
    "zh": (("是",), ("否",)),
    "ja": (("はい",), ("いいえ",)),
    "ko": (("예", "네"), ("아니오", "아니요")),
}
MAYBE_WORDS = ("maybe",)

FORMATS = {
    "xmedbench": "JSONL or JSON array: question, options '(A) ...\\n(B) ...', answer '(C)'",
    "mcq_list": "JSON(L): question, options as a list, answer as letter / index / letters / option text",
    "mcq_dict": "JSON(L): question, options as {'A': ...}, answer_idx or answer (MedQA, FrenchMedMCQA)",
    "medmcqa": "JSON(L): question, opa..opd, cop 1-4 (the MedMCQA authors' release)",
    "medmcqa_hf": "JSON(L): question, opa..opd, cop 0-3 (the Hugging Face datasets export)",
    "mmlu_csv": "CSV without header: question, options..., answer letter (MMLU)",
    "cmmlu_csv": "CSV with header: question, A.. or optionA.., answer (CMMLU, JMMLU)",
    "pubmedqa": "JSON object keyed by PMID: QUESTION, CONTEXTS, final_decision yes/no/maybe",
    "yes_no": "JSON(L): context, question, answer yes/no in the benchmark's language (RuMedDaNet)",
    "headqa": "HEAD-QA JSON: exams -> data -> qtext, answers [{aid, atext}], ra",
}


class BenchmarkError(ConfigError):
    """A configured benchmark that cannot be read at all; the message names the file and the reason."""


class OptionError(ValueError):
    """Options or an answer that cannot be read as a multiple-choice item."""


@dataclass(frozen=True)
class BenchmarkItem:
    """One question; option labels are kept as written, `answers` are canonical Latin capitals."""

    id: str
    benchmark: str
    source: str
    language: str
    question: str
    options: tuple[tuple[str, str], ...]  # (label as written in the file, option text)
    answers: tuple[str, ...]  # one letter, or several for a multi-answer question
    context: str = ""
    line: int = 0

    @property
    def letters(self) -> list[str]:
        return [canonical_letter(label) for label, _ in self.options]

    @property
    def multi(self) -> bool:
        return len(self.answers) > 1

    @property
    def answer(self) -> str:
        """The answer letter(s), comma-joined for a multi-answer question ("A,C")."""
        return ",".join(self.answers)

    @property
    def answer_label(self) -> str:
        """The (first) answer as written among the options (an Arabic letter where they use them)."""
        return next(label for label, _ in self.options if canonical_letter(label) == self.answers[0])

    def options_text(self) -> str:
        return "\n".join(f"({label}) {text}" for label, text in self.options)


@dataclass(frozen=True)
class RejectedQuestion:
    benchmark: str
    file: str
    line: int  # the line of a JSONL/CSV file, the item number (1-based) of a JSON array or object
    reason: str
    detail: str


@dataclass
class BenchmarkRead:
    """What one benchmark file yielded: the usable items and every rejected row with its reason."""

    name: str
    path: Path
    format: str
    items: list[BenchmarkItem] = field(default_factory=list)
    rejected: list[RejectedQuestion] = field(default_factory=list)

    @property
    def read(self) -> int:
        return len(self.items) + len(self.rejected)

    def rejected_by_reason(self) -> dict[str, int]:
        return dict(sorted(Counter(r.reason for r in self.rejected).items()))

    def summary(self) -> dict:
        return {
            "file": str(self.path),
            "format": self.format,
            "read": self.read,
            "usable": len(self.items),
            "multi_answer": sum(item.multi for item in self.items),
            "rejected": self.rejected_by_reason(),
        }

    def empty_reason(self) -> str:
        """Why nothing was usable, for the error message: the commonest rejection and an example."""
        if not self.rejected:
            return "the file holds no questions"
        reason, count = Counter(r.reason for r in self.rejected).most_common(1)[0]
        example = next(r for r in self.rejected if r.reason == reason)
        return (
            f"{count} of {self.read} rows rejected as '{reason}' (e.g. line {example.line}: {example.detail})"
        )


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


# ---- reading files -------------------------------------------------------------------------------


@dataclass
class _Row:
    """A row as a format reader found it, before the shared checks."""

    line: int
    question: object = None
    options: object = None
    answer: object = None
    context: str = ""
    id: str | None = None
    language: str | None = None
    source: str | None = None


class _Reject(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _json_records(path: Path) -> Iterator[tuple[int, object]]:
    """(line or item number, parsed value) of a JSONL file or of a JSON array's items; a line that is
    not JSON comes back as a _Reject."""
    with _open_text(path) as fh:
        head = fh.read(1)
        while head and head.isspace():
            head = fh.read(1)
        fh.seek(0)
        if head == "[":
            try:
                data = json.load(fh)
            except json.JSONDecodeError as exc:
                raise BenchmarkError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
            yield from enumerate(data, start=1)
            return
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                yield lineno, _Reject("malformed_json", f"not valid JSON ({exc.msg})")


def _first(raw: dict, *keys: str):
    for key in keys:
        if raw.get(key) not in (None, "", [], {}):
            return raw[key]
    return None


def _mcq_rows(path: Path, options_keys: tuple[str, ...], answer_keys: tuple[str, ...]) -> Iterator[_Row]:
    for line, raw in _json_records(path):
        if isinstance(raw, _Reject):
            yield _Row(line, question=raw)
            continue
        if not isinstance(raw, dict):
            yield _Row(line, question=_Reject("not_an_object", "the row is JSON but not an object"))
            continue
        yield _Row(
            line,
            question=_first(raw, "question", "problem_text", "qtext"),
            options=_first(raw, *options_keys),
            answer=_first(raw, *answer_keys),
            context=_context(_first(raw, "context", "contexts")),
            id=_first(raw, "id", "problem_id", "qid", "pairID"),
            language=_first(raw, "language", "lang"),
            source=raw.get("source"),
        )


def _context(value) -> str:
    if isinstance(value, list):
        return " ".join(str(v).strip() for v in value)
    return str(value).strip() if value else ""


def _medmcqa_rows(path: Path, base: int) -> Iterator[_Row]:
    for line, raw in _json_records(path):
        if not isinstance(raw, dict):
            yield _Row(
                line, question=raw if isinstance(raw, _Reject) else _Reject("not_an_object", "not an object")
            )
            continue
        options = [raw.get(key) for key in ("opa", "opb", "opc", "opd")]
        cop = raw.get("cop")
        answer: object = cop
        if isinstance(cop, str) and cop.strip().lstrip("-").isdigit():
            cop = int(cop)
        if isinstance(cop, int) and not isinstance(cop, bool):
            if cop < 0:
                answer = _Reject("no_answer", f"cop {cop}: the answer is not public (test split)")
            elif base == 1 and cop == 0:
                answer = _Reject("bad_answer", "cop 0 in a 1-based file (format medmcqa_hf reads cop 0-3)")
            else:
                answer = cop - base
        yield _Row(
            line,
            question=raw.get("question"),
            options=[str(o) if o is not None else "" for o in options],
            answer=answer,
            id=raw.get("id"),
            language=_first(raw, "language", "lang"),
        )


def _csv_rows(path: Path, header: bool) -> Iterator[_Row]:
    with _open_text(path) as fh:
        reader = csv.reader(fh)
        columns = None
        if header:
            names = next(reader, None)
            if names is None:
                return
            columns = _csv_columns(path, names)
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if columns is None:
                if len(row) < 4:
                    yield _Row(
                        line,
                        question=_Reject("bad_row", f"{len(row)} columns; need question, 2+ options, answer"),
                    )
                    continue
                yield _Row(line, question=row[0], options=row[1:-1], answer=row[-1])
                continue
            question_col, option_cols, answer_col, id_col = columns
            if len(row) <= max(question_col, answer_col, *option_cols):
                yield _Row(line, question=_Reject("bad_row", f"{len(row)} columns, the header names more"))
                continue
            yield _Row(
                line,
                question=row[question_col],
                options=[row[c] for c in option_cols],
                answer=row[answer_col],
                id=row[id_col] if id_col is not None and row[id_col].strip() else None,
            )


def _csv_columns(path: Path, names: list[str]) -> tuple[int, list[int], int, int | None]:
    lowered = [n.strip().lower() for n in names]

    def find(*candidates: str) -> int | None:
        return next((lowered.index(c) for c in candidates if c in lowered), None)

    question, answer = find("question", "questions"), find("answer", "answers")
    options = []
    for letter in LETTERS.lower():
        column = find(letter, f"option{letter}", f"option_{letter}", f"choice{letter}")
        if column is None:
            break
        options.append(column)
    if question is None or answer is None or len(options) < 2:
        raise BenchmarkError(
            f"{path}: line 1: the header {names} does not name a question column, option columns "
            f"(A, B, ... or optionA, optionB, ...) and an answer column"
        )
    return question, options, answer, find("id")


def _pubmedqa_rows(path: Path) -> Iterator[_Row]:
    try:
        with _open_text(path) as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise BenchmarkError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise BenchmarkError(f"{path}: expected a JSON object keyed by PMID (format pubmedqa)")
    for number, (pmid, raw) in enumerate(data.items(), start=1):
        if not isinstance(raw, dict):
            yield _Row(number, question=_Reject("not_an_object", f"PMID {pmid}: not an object"))
            continue
        yield _Row(
            number,
            question=raw.get("QUESTION"),
            options=(("A", "Yes."), ("B", "No."), ("C", "Maybe.")),
            answer=_yes_no_letter(raw.get("final_decision"), "en", allow_maybe=True),
            context=_context(raw.get("CONTEXTS")),
            id=str(pmid),
        )


def _yes_no_rows(path: Path, language: str | None) -> Iterator[_Row]:
    for row in _mcq_rows(path, ("options",), ("answer", "label")):
        if isinstance(row.question, _Reject):
            yield row
            continue
        words = YES_NO_WORDS.get(row.language or language or "en", YES_NO_WORDS["en"])
        row.options = (("A", words[0][0]), ("B", words[1][0]))
        row.answer = _yes_no_letter(row.answer, row.language or language or "en", allow_maybe=False)
        yield row


def _yes_no_letter(value, language: str, allow_maybe: bool):
    word = str(value or "").strip().strip(".").lower()
    yes, no = YES_NO_WORDS.get(language, YES_NO_WORDS["en"])
    if word in yes or word in YES_NO_WORDS["en"][0]:
        return "A"
    if word in no or word in YES_NO_WORDS["en"][1]:
        return "B"
    if allow_maybe and word in MAYBE_WORDS:
        return "C"
    expected = "/".join([yes[0], no[0], *(MAYBE_WORDS if allow_maybe else ())])
    return _Reject("bad_answer", f"answer {value!r} is not {expected}")


def _headqa_rows(path: Path) -> Iterator[_Row]:
    try:
        with _open_text(path) as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise BenchmarkError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("exams"), dict):
        raise BenchmarkError(f"{path}: expected the HEAD-QA layout {{'exams': {{EXAM: {{'data': [...]}}}}}}")
    number = 0
    for exam_id, exam in data["exams"].items():
        for raw in (exam or {}).get("data") or []:
            number += 1
            answers = raw.get("answers") if isinstance(raw, dict) else None
            if not isinstance(answers, list) or not all(isinstance(a, dict) for a in answers):
                yield _Row(number, question=_Reject("bad_options", "'answers' is not a list of {aid, atext}"))
                continue
            ordered = sorted(answers, key=lambda a: int(a.get("aid", 0)))
            aids = [str(a.get("aid")) for a in ordered]
            right = str(raw.get("ra", ""))
            yield _Row(
                number,
                question=raw.get("qtext"),
                options=[str(a.get("atext") or "") for a in ordered],
                answer=aids.index(right)
                if right in aids
                else _Reject("bad_answer", f"ra {right!r} is no aid {aids}"),
                id=f"{exam_id}:{raw.get('qid')}",
                language=data.get("language"),
            )


def _rows(path: Path, fmt: str, language: str | None) -> Iterator[_Row]:
    if fmt == "xmedbench":
        return _mcq_rows(path, ("options",), ("answer",))
    if fmt == "mcq_list":
        return _mcq_rows(path, ("options", "choices"), ("answer_idx", "answer", "answers", "label"))
    if fmt == "mcq_dict":
        return _mcq_rows(path, ("options", "answers", "choices"), ("answer_idx", "correct_answers", "answer"))
    if fmt in ("medmcqa", "medmcqa_hf"):
        return _medmcqa_rows(path, 1 if fmt == "medmcqa" else 0)
    if fmt in ("mmlu_csv", "cmmlu_csv"):
        return _csv_rows(path, header=fmt == "cmmlu_csv")
    if fmt == "pubmedqa":
        return _pubmedqa_rows(path)
    if fmt == "yes_no":
        return _yes_no_rows(path, language)
    if fmt == "headqa":
        return _headqa_rows(path)
    raise BenchmarkError(f"{path}: unknown benchmark format {fmt!r}; the formats are {', '.join(FORMATS)}")


def _item(row: _Row, name: str, registry, language: str | None, source: str | None) -> BenchmarkItem:
    for value in (row.question, row.options, row.answer):
        if isinstance(value, _Reject):
            raise value
    if not isinstance(row.question, str) or not row.question.strip():
        raise _Reject("missing_question", "the question is missing or empty")
    if row.options in (None, "", [], {}):
        raise _Reject("missing_options", "the options are missing or empty")
    if row.answer in (None, "", []):
        raise _Reject("missing_answer", "the answer is missing or empty")
    try:
        options = row.options if isinstance(row.options, tuple) else parse_options(row.options)
        letters = [canonical_letter(label) for label, _ in options]
        if len(set(letters)) != len(letters):
            raise OptionError(f"repeated option letters {letters}")
    except OptionError as exc:
        raise _Reject("bad_options", str(exc)) from None
    try:
        answers = parse_answer(row.answer, options)
    except OptionError as exc:
        raise _Reject("bad_answer", str(exc)) from None
    raw_language = language or row.language
    if not raw_language:
        raise _Reject(
            "missing_language", "no 'language'/'lang' field and no language for the benchmark in the config"
        )
    try:
        code = registry.normalize_code(str(raw_language))
    except ValueError as exc:
        raise _Reject("unknown_language", str(exc)) from None
    return BenchmarkItem(
        id=str(row.id) if row.id not in (None, "") else f"{name}:{row.line}",
        benchmark=name,
        source=str(source or row.source or name),
        language=code,
        question=row.question.strip(),
        options=options,
        answers=answers,
        context=row.context,
        line=row.line,
    )


def read_benchmark(
    name: str,
    path: str | Path,
    fmt: str | None,
    registry,
    language: str | None = None,
    source: str | None = None,
) -> BenchmarkRead:
    """Read one benchmark file. Rows that cannot be used are rejected with their line and reason; a
    missing file, a file of the wrong layout or a missing `format:` raises BenchmarkError."""
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"{path}: benchmark file '{name}' not found")
    if not fmt:
        raise BenchmarkError(f"{path}: benchmark '{name}' names no format:; {suggest_format(path)}")
    if fmt not in FORMATS:
        raise BenchmarkError(
            f"{path}: unknown format {fmt!r} for benchmark '{name}'; the formats are {', '.join(FORMATS)}"
        )
    read = BenchmarkRead(name, path, fmt)
    seen: set[str] = set()
    try:
        for row in _rows(path, fmt, language):
            if source is not None and row.source not in (None, source):
                continue  # a file of several sources (XMedBench): this benchmark is one of them
            try:
                item = _item(row, name, registry, language, source)
                if item.id in seen:
                    raise _Reject("duplicate_id", f"id {item.id!r} appeared earlier in the file")
            except _Reject as reject:
                read.rejected.append(
                    RejectedQuestion(name, str(path), row.line, reject.reason, reject.detail)
                )
                continue
            seen.add(item.id)
            read.items.append(item)
    except (UnicodeDecodeError, EOFError, gzip.BadGzipFile, csv.Error) as exc:
        raise BenchmarkError(f"{path}: cannot read benchmark '{name}' as {fmt}: {exc}") from None
    return read


def suggest_format(path: Path) -> str:
    """A sentence naming the format the file looks like (for error messages only)."""
    guess = _sniff(path)
    if guess is None:
        return f"set format: to one of {', '.join(FORMATS)}"
    return f"the file looks like format: {guess} ({FORMATS[guess]})"


def _sniff(path: Path) -> str | None:
    try:
        with _open_text(path) as fh:
            head = fh.read(20_000)
    except (OSError, UnicodeDecodeError, EOFError):
        return None
    stripped = head.lstrip()
    if path.name.lower().endswith(".csv") or path.name.lower().endswith(".csv.gz"):
        first = next(csv.reader([head.splitlines()[0]]), []) if head else []
        return "cmmlu_csv" if any(c.strip().lower() in ("question", "answer") for c in first) else "mmlu_csv"
    if stripped.startswith("{") and '"exams"' in head[:2000]:
        return "headqa"
    if re.match(r'\{\s*"\d+"\s*:', stripped) and "final_decision" in head + _tail(path):
        return "pubmedqa"
    sample = _first_json_object(stripped)
    if not isinstance(sample, dict):
        return None
    keys = set(sample)
    if {"opa", "opb", "cop"} <= keys:
        return "medmcqa"
    if "context" in keys and str(sample.get("answer", "")).strip().lower() in {
        w for pair in YES_NO_WORDS.values() for ws in pair for w in ws
    }:
        return "yes_no"
    options = _first(sample, "options", "answers", "choices")
    if isinstance(options, str):
        return "xmedbench"
    if isinstance(options, dict):
        return "mcq_dict"
    if isinstance(options, list):
        return "mcq_list"
    return None


def _tail(path: Path) -> str:
    try:
        with _open_text(path) as fh:
            return fh.read(200_000)
    except (OSError, UnicodeDecodeError, EOFError):
        return ""


def _first_json_object(text: str):
    if text.startswith("["):
        text = text[1:].lstrip()
    try:
        value, _ = json.JSONDecoder().raw_decode(text)
    except json.JSONDecodeError:
        return None
    return value


def read_configured(refs, cfg, registry, section: str) -> list[BenchmarkRead]:
    """Every benchmark of a config section (`decontam.benchmarks`, `eval.benchmarks`). A benchmark with
    no usable question stops the stage with its file and the reason, unless it is marked optional."""
    reads: list[BenchmarkRead] = []
    names: set[str] = set()
    for ref in refs:
        if ref.name in names:
            raise BenchmarkError(f"{section}: benchmark name '{ref.name}' is listed twice")
        names.add(ref.name)
        read = read_benchmark(ref.name, cfg.resolve(ref.path), ref.format, registry, ref.language, ref.source)
        if not read.items and not ref.optional:
            guess = _sniff(read.path)
            hint = f"; the file looks like format: {guess}" if guess and guess != ref.format else ""
            raise BenchmarkError(
                f"{read.path}: benchmark '{ref.name}' (format {ref.format}) has no usable question: "
                f"{read.empty_reason()}{hint} (mark it `optional: true` in {section} to go on without it)"
            )
        reads.append(read)
    return reads


def check_configured(refs, cfg, section: str) -> None:
    """A stage's `validate`: every benchmark names an existing file and a known format (a missing
    format is an error that suggests the one the file looks like)."""
    for ref in refs:
        path = cfg.resolve(ref.path)
        where = f"{section}: benchmark '{ref.name}'"
        if not path.is_file():
            raise BenchmarkError(f"{where}: file not found: {path}")
        if not ref.format:
            raise BenchmarkError(f"{where} ({path}) names no format:; {suggest_format(path)}")
        if ref.format not in FORMATS:
            raise BenchmarkError(
                f"{where}: unknown format {ref.format!r}; the formats are {', '.join(FORMATS)}"
            )


def console_line(read: BenchmarkRead, scored: int | None = None) -> str:
    """`  medqa (mcq_dict): read 300, scored 20, rejected 3 (bad_answer 3)` for a stage's console output."""
    parts = [f"read {read.read}"]
    parts.append(f"scored {scored}" if scored is not None else f"usable {len(read.items)}")
    rejected = read.rejected_by_reason()
    detail = ", ".join(f"{reason} {count}" for reason, count in rejected.items())
    parts.append(f"rejected {len(read.rejected)}" + (f" ({detail})" if detail else ""))
    return f"    {read.name} ({read.format}, {read.path.name}): " + ", ".join(parts)
