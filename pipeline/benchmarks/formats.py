"""Reading each published benchmark format into rows (question, options, answer, context), with the
line of each row; `pipeline.benchmarks` turns rows into checked items."""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.benchmarks.options import LETTERS
from pipeline.config import ConfigError

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


# ---- reading files -------------------------------------------------------------------------------


@dataclass
class Row:
    """A row as a format reader found it, before the shared checks."""

    line: int
    question: object = None
    options: object = None
    answer: object = None
    context: str = ""
    id: str | None = None
    language: str | None = None
    source: str | None = None


class RowRejected(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _json_records(path: Path) -> Iterator[tuple[int, object]]:
    """(line or item number, parsed value) of a JSONL file or of a JSON array's items; a line that is
    not JSON comes back as a RowRejected."""
    with open_text(path) as fh:
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
                yield lineno, RowRejected("malformed_json", f"not valid JSON ({exc.msg})")


def first_field(raw: dict, *keys: str):
    for key in keys:
        if raw.get(key) not in (None, "", [], {}):
            return raw[key]
    return None


def _mcq_rows(path: Path, options_keys: tuple[str, ...], answer_keys: tuple[str, ...]) -> Iterator[Row]:
    for line, raw in _json_records(path):
        if isinstance(raw, RowRejected):
            yield Row(line, question=raw)
            continue
        if not isinstance(raw, dict):
            yield Row(line, question=RowRejected("not_an_object", "the row is JSON but not an object"))
            continue
        yield Row(
            line,
            question=first_field(raw, "question", "problem_text", "qtext"),
            options=first_field(raw, *options_keys),
            answer=first_field(raw, *answer_keys),
            context=_context(first_field(raw, "context", "contexts")),
            id=first_field(raw, "id", "problem_id", "qid", "pairID"),
            language=first_field(raw, "language", "lang"),
            source=raw.get("source"),
        )


def _context(value) -> str:
    if isinstance(value, list):
        return " ".join(str(v).strip() for v in value)
    return str(value).strip() if value else ""


def _medmcqa_rows(path: Path, base: int) -> Iterator[Row]:
    for line, raw in _json_records(path):
        if not isinstance(raw, dict):
            yield Row(
                line,
                question=raw
                if isinstance(raw, RowRejected)
                else RowRejected("not_an_object", "not an object"),
            )
            continue
        options = [raw.get(key) for key in ("opa", "opb", "opc", "opd")]
        cop = raw.get("cop")
        answer: object = cop
        if isinstance(cop, str) and cop.strip().lstrip("-").isdigit():
            cop = int(cop)
        if isinstance(cop, int) and not isinstance(cop, bool):
            if cop < 0:
                answer = RowRejected("no_answer", f"cop {cop}: the answer is not public (test split)")
            elif base == 1 and cop == 0:
                answer = RowRejected(
                    "bad_answer", "cop 0 in a 1-based file (format medmcqa_hf reads cop 0-3)"
                )
            else:
                answer = cop - base
        yield Row(
            line,
            question=raw.get("question"),
            options=[str(o) if o is not None else "" for o in options],
            answer=answer,
            id=raw.get("id"),
            language=first_field(raw, "language", "lang"),
        )


def _csv_rows(path: Path, header: bool) -> Iterator[Row]:
    with open_text(path) as fh:
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
                    yield Row(
                        line,
                        question=RowRejected(
                            "bad_row", f"{len(row)} columns; need question, 2+ options, answer"
                        ),
                    )
                    continue
                yield Row(line, question=row[0], options=row[1:-1], answer=row[-1])
                continue
            question_col, option_cols, answer_col, id_col = columns
            if len(row) <= max(question_col, answer_col, *option_cols):
                yield Row(line, question=RowRejected("bad_row", f"{len(row)} columns, the header names more"))
                continue
            yield Row(
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


def _pubmedqa_rows(path: Path) -> Iterator[Row]:
    try:
        with open_text(path) as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise BenchmarkError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise BenchmarkError(f"{path}: expected a JSON object keyed by PMID (format pubmedqa)")
    for number, (pmid, raw) in enumerate(data.items(), start=1):
        if not isinstance(raw, dict):
            yield Row(number, question=RowRejected("not_an_object", f"PMID {pmid}: not an object"))
            continue
        yield Row(
            number,
            question=raw.get("QUESTION"),
            options=(("A", "Yes."), ("B", "No."), ("C", "Maybe.")),
            answer=_yes_no_letter(raw.get("final_decision"), "en", allow_maybe=True),
            context=_context(raw.get("CONTEXTS")),
            id=str(pmid),
        )


def _yes_no_rows(path: Path, language: str | None) -> Iterator[Row]:
    for row in _mcq_rows(path, ("options",), ("answer", "label")):
        if isinstance(row.question, RowRejected):
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
    return RowRejected("bad_answer", f"answer {value!r} is not {expected}")


def _headqa_rows(path: Path) -> Iterator[Row]:
    try:
        with open_text(path) as fh:
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
                yield Row(
                    number, question=RowRejected("bad_options", "'answers' is not a list of {aid, atext}")
                )
                continue
            ordered = sorted(answers, key=lambda a: int(a.get("aid", 0)))
            aids = [str(a.get("aid")) for a in ordered]
            right = str(raw.get("ra", ""))
            yield Row(
                number,
                question=raw.get("qtext"),
                options=[str(a.get("atext") or "") for a in ordered],
                answer=aids.index(right)
                if right in aids
                else RowRejected("bad_answer", f"ra {right!r} is no aid {aids}"),
                id=f"{exam_id}:{raw.get('qid')}",
                language=data.get("language"),
            )


def format_rows(path: Path, fmt: str, language: str | None) -> Iterator[Row]:
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
