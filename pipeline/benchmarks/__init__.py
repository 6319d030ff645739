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
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.benchmarks.formats import (
    FORMATS,
    YES_NO_WORDS,
    BenchmarkError,
    Row,
    RowRejected,
    first_field,
    format_rows,
    open_text,
)
from pipeline.benchmarks.options import (
    OptionError,
    canonical_letter,
    parse_answer,
    parse_options,
)


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


def _item(row: Row, name: str, registry, language: str | None, source: str | None) -> BenchmarkItem:
    for value in (row.question, row.options, row.answer):
        if isinstance(value, RowRejected):
            raise value
    if not isinstance(row.question, str) or not row.question.strip():
        raise RowRejected("missing_question", "the question is missing or empty")
    if row.options in (None, "", [], {}):
        raise RowRejected("missing_options", "the options are missing or empty")
    if row.answer in (None, "", []):
        raise RowRejected("missing_answer", "the answer is missing or empty")
    try:
        options = row.options if isinstance(row.options, tuple) else parse_options(row.options)
        letters = [canonical_letter(label) for label, _ in options]
        if len(set(letters)) != len(letters):
            raise OptionError(f"repeated option letters {letters}")
    except OptionError as exc:
        raise RowRejected("bad_options", str(exc)) from None
    try:
        answers = parse_answer(row.answer, options)
    except OptionError as exc:
        raise RowRejected("bad_answer", str(exc)) from None
    raw_language = language or row.language
    if not raw_language:
        raise RowRejected(
            "missing_language", "no 'language'/'lang' field and no language for the benchmark in the config"
        )
    try:
        code = registry.normalize_code(str(raw_language))
    except ValueError as exc:
        raise RowRejected("unknown_language", str(exc)) from None
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
        for row in format_rows(path, fmt, language):
            if source is not None and row.source not in (None, source):
                continue  # a file of several sources (XMedBench): this benchmark is one of them
            try:
                item = _item(row, name, registry, language, source)
                if item.id in seen:
                    raise RowRejected("duplicate_id", f"id {item.id!r} appeared earlier in the file")
            except RowRejected as reject:
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
        with open_text(path) as fh:
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
    options = first_field(sample, "options", "answers", "choices")
    if isinstance(options, str):
        return "xmedbench"
    if isinstance(options, dict):
        return "mcq_dict"
    if isinstance(options, list):
        return "mcq_list"
    return None


def _tail(path: Path) -> str:
    try:
        with open_text(path) as fh:
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
