"""Multiple-choice medical QA in the XMedBench / ApolloMoE format: loading, prompts, answer extraction
and the paper's aggregates.

Pure Python (no torch), so the protocol can be unit-tested and reused by other evaluators.

Benchmark rows are JSON lines with `question`, `options` ("(A) ...\\n(B) ..."), `answer` ("(C)"),
`language` (or `lang`) and `source`. Prompts follow the paper: a per-language instruction for the
12 major languages, the English one for every other language, up to `shots` solved examples drawn
with a fixed seed from the same source, in the training chat format (`User:{q}\\nAssistant:{a}`).
"""

from __future__ import annotations

import gzip
import json
import random
import re
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline.registry import Registry, UnknownLanguageError

# Arabic option letters as Arabic-language exams write them, mapped to the Latin letters the
# benchmark answers use (alif with hamza, ba, jim, dal, ha).
ARABIC_LETTERS = {"أ": "A", "ب": "B", "ج": "C", "د": "D", "ه": "E"}
_TATWEEL = "\u0640"
_LETTER_CLASS = "A-Za-z" + "".join(ARABIC_LETTERS)
_OPTION_LINE = re.compile(rf"^\s*[(（]\s*([{_LETTER_CLASS}])\s*[)）]\s*(.*)$")
_ANSWER = re.compile(rf"^\s*[(（]?\s*([{_LETTER_CLASS}])\s*[)）]?\s*\.?\s*$")

# The extraction rule's letters (the paper's A-F).
_PAREN_LATIN = re.compile(r"\(([A-Fa-f])\)")
_ARABIC_ONE = "(?<![\u0600-\u06ff])([" + "".join(ARABIC_LETTERS) + "])(?![\u0600-\u06ff])"
# An Arabic letter standing alone with a parenthesis on at least one side ("(ب" of "(بسبب" is a word).
_PAREN_ARABIC = re.compile(rf"\({_ARABIC_ONE}\)?|{_ARABIC_ONE}\)")
_BARE_LATIN = re.compile(r"(?<![A-Za-z])([A-F])(?![A-Za-z])")
_YES_NO = re.compile(r"^(yes|no)\.?$", re.IGNORECASE)


class BenchmarkError(ValueError):
    """A benchmark file cannot be read at all (missing, not JSON lines)."""


@dataclass(frozen=True)
class MCQItem:
    """One multiple-choice question; `answer` and option letters are canonical Latin capitals."""

    id: str
    benchmark: str
    source: str
    language: str
    question: str
    options: tuple[tuple[str, str], ...]  # (letter as written in the file, option text)
    answer: str

    @property
    def letters(self) -> list[str]:
        return [canonical_letter(label) for label, _ in self.options]

    @property
    def answer_label(self) -> str:
        """The answer as written among the options (an Arabic letter where the options use them)."""
        return next(label for label, _ in self.options if canonical_letter(label) == self.answer)

    def options_text(self) -> str:
        return "\n".join(f"({label}) {text}" for label, text in self.options)


@dataclass(frozen=True)
class RejectedQuestion:
    file: str
    line: int
    reason: str
    detail: str


def canonical_letter(label: str) -> str:
    """`c`, `Ｃ` and `ج` all mean option C."""
    label = unicodedata.normalize("NFKC", label).replace(_TATWEEL, "").strip()
    return ARABIC_LETTERS.get(label, label.upper())


def parse_options(text: str) -> tuple[tuple[str, str], ...]:
    """Split "(A) ...\\n(B) ..." into (label, text) pairs; a line without a label continues the previous option."""
    options: list[list[str]] = []
    for line in str(text).splitlines():
        match = _OPTION_LINE.match(line)
        if match:
            options.append([match.group(1), match.group(2).strip()])
        elif options and line.strip():
            options[-1][1] = f"{options[-1][1]} {line.strip()}".strip()
        elif line.strip():
            raise ValueError(f"option text before the first '(A)' label: {line.strip()[:60]!r}")
    return tuple((label, body) for label, body in options)


def _parse_item(
    raw: dict,
    benchmark: str,
    default_language: str | None,
    default_source: str | None,
    registry: Registry,
    fallback_id: str,
) -> MCQItem:
    for key in ("question", "options", "answer"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise ValueError(f"missing_{key}|field '{key}' is missing or empty")
    language_raw = raw.get("language") or raw.get("lang") or default_language
    if not language_raw:
        raise ValueError("missing_language|no 'language'/'lang' field and no language in the config")
    try:
        language = registry.normalize_code(str(language_raw))
    except UnknownLanguageError as exc:
        raise ValueError(f"unknown_language|{exc}") from None
    try:
        options = parse_options(raw["options"])
    except ValueError as exc:
        raise ValueError(f"bad_options|{exc}") from None
    if len(options) < 2:
        raise ValueError(f"bad_options|{len(options)} option(s) parsed; need at least 2")
    letters = [canonical_letter(label) for label, _ in options]
    if len(set(letters)) != len(letters):
        raise ValueError(f"bad_options|repeated option letters {letters}")
    answer_match = _ANSWER.match(raw["answer"])
    answer = canonical_letter(answer_match.group(1)) if answer_match else None
    if answer not in letters:
        raise ValueError(f"bad_answer|answer {raw['answer']!r} is not one of the options {letters}")
    return MCQItem(
        id=str(raw.get("id") or fallback_id),
        benchmark=benchmark,
        source=str(default_source or raw.get("source") or benchmark),
        language=language,
        question=raw["question"].strip(),
        options=options,
        answer=answer,
    )


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def load_benchmark(
    path: Path,
    name: str,
    registry: Registry,
    language: str | None = None,
    source: str | None = None,
) -> tuple[list[MCQItem], list[RejectedQuestion]]:
    """Read one benchmark file (.jsonl or .jsonl.gz). Bad rows are returned as rejects with file,
    line and reason; a missing or unreadable file raises BenchmarkError."""
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"benchmark '{name}': file not found: {path}")
    items: list[MCQItem] = []
    rejects: list[RejectedQuestion] = []
    seen: set[str] = set()
    try:
        with _open_text(path) as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    raw = json.loads(line)
                    if not isinstance(raw, dict):
                        raise ValueError("not_an_object|the line is JSON but not an object")
                    item = _parse_item(raw, name, language, source, registry, f"{name}:{lineno}")
                    if item.id in seen:
                        raise ValueError(f"duplicate_id|id {item.id!r} appeared earlier in the file")
                except json.JSONDecodeError as exc:
                    rejects.append(RejectedQuestion(str(path), lineno, "malformed_json", str(exc)))
                    continue
                except ValueError as exc:
                    reason, _, detail = str(exc).partition("|")
                    rejects.append(RejectedQuestion(str(path), lineno, reason, detail))
                    continue
                seen.add(item.id)
                items.append(item)
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise BenchmarkError(f"benchmark '{name}': cannot read {path}: {exc}") from None
    return items, rejects


# ---- prompts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptTemplate:
    """One language's wording: `instruction` may use {first} and {last} (the option letters)."""

    instruction: str
    question_label: str
    options_label: str
    answer_lead: str


PROMPT_TEMPLATES: dict[str, PromptTemplate] = {
    "en": PromptTemplate(
        "You are a medical doctor answering real-world medical exam questions. "
        "Select one correct answer from {first} to {last}.",
        "Question",
        "Options",
        "The correct answer is",
    ),
    "zh": PromptTemplate(
        "你是一名医生，正在回答真实的医学考试题目。请从{first}到{last}中选出一个正确答案。",
        "问题",
        "选项",
        "正确答案是",
    ),
    "fr": PromptTemplate(
        "Vous êtes médecin et répondez à de vraies questions d'examen de médecine. "
        "Choisissez une seule bonne réponse, de {first} à {last}.",
        "Question",
        "Options",
        "La bonne réponse est",
    ),
    "es": PromptTemplate(
        "Usted es un médico que responde preguntas reales de exámenes de medicina. "
        "Elija una respuesta correcta, de la {first} a la {last}.",
        "Pregunta",
        "Opciones",
        "La respuesta correcta es",
    ),
    "ar": PromptTemplate(
        "أنت طبيب تجيب عن أسئلة حقيقية من امتحانات الطب. اختر إجابة صحيحة واحدة من {first} إلى {last}.",
        "السؤال",
        "الخيارات",
        "الإجابة الصحيحة هي",
    ),
    "hi": PromptTemplate(
        "आप एक चिकित्सक हैं जो वास्तविक चिकित्सा परीक्षा के प्रश्नों के उत्तर दे रहे हैं। "
        "{first} से {last} तक में से एक सही उत्तर चुनें।",
        "प्रश्न",
        "विकल्प",
        "सही उत्तर है",
    ),
    "de": PromptTemplate(
        "Sie sind Arzt und beantworten echte medizinische Prüfungsfragen. "
        "Wählen Sie eine richtige Antwort von {first} bis {last}.",
        "Frage",
        "Optionen",
        "Die richtige Antwort ist",
    ),
    "pt": PromptTemplate(
        "Você é um médico que responde a questões reais de exames de medicina. "
        "Escolha uma resposta correta, de {first} a {last}.",
        "Pergunta",
        "Opções",
        "A resposta correta é",
    ),
    "ru": PromptTemplate(
        "Вы врач и отвечаете на настоящие вопросы медицинского экзамена. "
        "Выберите один правильный ответ от {first} до {last}.",
        "Вопрос",
        "Варианты",
        "Правильный ответ:",
    ),
    "ja": PromptTemplate(
        "あなたは実際の医学試験の問題に答える医師です。{first}から{last}の中から正しい答えを一つ選んでください。",
        "質問",
        "選択肢",
        "正しい答えは",
    ),
    "ko": PromptTemplate(
        "당신은 실제 의학 시험 문제에 답하는 의사입니다. {first}부터 {last} 중에서 정답을 하나 고르세요.",
        "질문",
        "선택지",
        "정답은",
    ),
    "it": PromptTemplate(
        "Sei un medico che risponde a domande reali di esami di medicina. "
        "Scegli una risposta corretta, dalla {first} alla {last}.",
        "Domanda",
        "Opzioni",
        "La risposta corretta è",
    ),
}


def template_for(language: str) -> PromptTemplate:
    """The language's own template for the 12 major languages; English for every other one."""
    return PROMPT_TEMPLATES.get(language, PROMPT_TEMPLATES["en"])


class ChatFormat:
    """The training chat template (`User:{q}\\nAssistant:{a}<|endoftext|>`), split at the answer."""

    def __init__(self, template: str):
        if (
            template.count("{q}") != 1
            or template.count("{a}") != 1
            or template.index("{q}") > template.index("{a}")
        ):
            raise ValueError(f"chat template must contain {{q}} then {{a}} exactly once: {template!r}")
        self.template = template
        before_answer, self.after_answer = template.split("{a}")
        self.before_question, self.between = before_answer.split("{q}")

    def prompt(self, question: str) -> str:
        """Everything up to where the model starts answering."""
        return f"{self.before_question}{question}{self.between}"

    def turn(self, question: str, answer: str) -> str:
        return f"{self.prompt(question)}{answer}{self.after_answer}"


def user_message(item: MCQItem) -> str:
    template = template_for(item.language)
    letters = [label for label, _ in item.options]
    instruction = template.instruction.format(first=letters[0], last=letters[-1])
    return (
        f"{instruction}\n{template.question_label}: {item.question}\n"
        f"{template.options_label}:\n{item.options_text()}"
    )


def answer_text(item: MCQItem, label: str | None = None) -> str:
    """How a solved example answers: "The correct answer is (C)." in the item's language."""
    return f"{template_for(item.language).answer_lead} ({label or item.answer_label})."


def scoring_prefix(item: MCQItem) -> str:
    """The answer up to the option letter: the log-likelihood mode scores the next token."""
    return f"{template_for(item.language).answer_lead} ("


def select_shots(item: MCQItem, pool: list[MCQItem], k: int, seed: int) -> list[MCQItem]:
    """`k` solved examples from the same source and language (never the item itself; benchmark
    sources are single-language in XMedBench, a mixed one must not hand a Chinese question English
    examples), fixed by the seed and the item's id, so a question's prompt does not depend on which
    other questions are evaluated."""
    candidates = [
        other
        for other in pool
        if other.source == item.source and other.language == item.language and other.id != item.id
    ]
    rng = random.Random(f"{seed}|{item.source}|{item.id}")
    return rng.sample(candidates, min(k, len(candidates)))


@dataclass(frozen=True)
class Prompt:
    item: MCQItem
    text: str  # ends where the model starts its answer
    shots: int


def build_prompt(
    item: MCQItem,
    shots: list[MCQItem],
    chat: ChatFormat,
    count_tokens: Callable[[str], int] | None = None,
    max_tokens: int | None = None,
) -> Prompt:
    """Few-shot prompt; the last examples are dropped while the prompt is longer than `max_tokens`."""
    target = chat.prompt(user_message(item))
    rendered = [chat.turn(user_message(shot), answer_text(shot)) + "\n" for shot in shots]
    while True:
        text = "".join(rendered) + target
        if not rendered or count_tokens is None or max_tokens is None or count_tokens(text) <= max_tokens:
            return Prompt(item, text, len(rendered))
        rendered.pop()


# ---- answer extraction ---------------------------------------------------------------------------


def first_nonempty_line(text: str) -> str:
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()
    return ""


def extract_answer(text: str) -> str | None:
    """The paper's rule on the first non-empty line of a generated answer.

    1. Letters A-F in half- or full-width parentheses, and Arabic option letters (أ ب ج د ه, with at
       least one parenthesis) mapped to A-E; the most frequent wins, ties go to the earliest.
    2. Otherwise a bare capital A-F standing alone (not inside a word), the same way.
    3. Otherwise a line that is just "Yes"/"No" means A/B (yes/no/maybe questions list yes first).
    """
    line = unicodedata.normalize("NFKC", first_nonempty_line(text)).replace(_TATWEEL, "")
    found = [(m.start(), m.group(1).upper()) for m in _PAREN_LATIN.finditer(line)]
    found += [(m.start(), ARABIC_LETTERS[m.group(1) or m.group(2)]) for m in _PAREN_ARABIC.finditer(line)]
    if not found:
        found = [(m.start(), m.group(1)) for m in _BARE_LATIN.finditer(line)]
    if not found:
        yes_no = _YES_NO.match(line)
        return None if yes_no is None else ("A" if yes_no.group(1).lower() == "yes" else "B")
    return _most_frequent_earliest(found)


def _most_frequent_earliest(found: list[tuple[int, str]]) -> str:
    counts: dict[str, int] = defaultdict(int)
    first_at: dict[str, int] = {}
    for position, letter in found:
        counts[letter] += 1
        first_at[letter] = min(position, first_at.get(letter, position))
    return min(counts, key=lambda letter: (-counts[letter], first_at[letter]))


# ---- aggregation ---------------------------------------------------------------------------------


@dataclass
class Prediction:
    """One scored question in one mode."""

    id: str
    benchmark: str
    source: str
    language: str
    mode: str
    answer: str
    predicted: str | None
    shots: int
    output: str = ""  # generated text (generate mode) or per-letter log-likelihoods (loglik mode)
    extra: dict = field(default_factory=dict)

    @property
    def correct(self) -> bool:
        return self.predicted == self.answer

    def to_json(self) -> dict:
        return {**asdict(self), "correct": self.correct}


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def aggregate(predictions: list[Prediction], registry: Registry) -> dict:
    """Accuracy per source, per language and the paper's Major/Minor means, for one mode.

    A language's accuracy is the unweighted mean over its sources (the paper averages English's and
    Chinese's benchmarks this way); `accuracy_micro` weights every question equally. Major is the
    unweighted mean over the major languages present, Minor over the minor ones present.
    """
    per_source: dict[str, dict] = {}
    by_source: dict[str, list[Prediction]] = defaultdict(list)
    for prediction in predictions:
        by_source[prediction.source].append(prediction)
    for source, group in sorted(by_source.items()):
        languages = sorted({p.language for p in group})
        per_source[source] = {
            "languages": languages,
            "n": len(group),
            "correct": sum(p.correct for p in group),
            "unanswered": sum(p.predicted is None for p in group),
            "accuracy": sum(p.correct for p in group) / len(group),
        }
    per_language: dict[str, dict] = {}
    by_language: dict[str, list[Prediction]] = defaultdict(list)
    for prediction in predictions:
        by_language[prediction.language].append(prediction)
    for language, group in sorted(by_language.items()):
        sources = sorted({p.source for p in group})
        source_accuracy = {
            s: sum(p.correct for p in group if p.source == s) / sum(p.source == s for p in group)
            for s in sources
        }
        per_language[language] = {
            "tier": registry.get(language).tier,
            "family": registry.get(language).family,
            "n": len(group),
            "correct": sum(p.correct for p in group),
            "unanswered": sum(p.predicted is None for p in group),
            "sources": sources,
            "accuracy": _mean(source_accuracy.values()),
            "accuracy_micro": sum(p.correct for p in group) / len(group),
        }
    major = [lang for lang in per_language if per_language[lang]["tier"] == "major"]
    minor = [lang for lang in per_language if per_language[lang]["tier"] == "minor"]
    return {
        "n": len(predictions),
        "accuracy_micro": _mean(p.correct for p in predictions),
        "major": _mean(per_language[lang]["accuracy"] for lang in major),
        "minor": _mean(per_language[lang]["accuracy"] for lang in minor),
        "major_languages": major,
        "minor_languages": minor,
        "per_language": per_language,
        "per_source": per_source,
    }


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def markdown_tables(results: dict[str, dict]) -> str:
    """Markdown for the accuracy of every mode side by side: aggregates, per language, per source.

    `results` maps mode name -> the `aggregate` output of that mode.
    """
    modes = list(results)
    head = "| " + " | ".join(modes) + " |"
    rule = "|" + "---:|" * len(modes)
    lines = ["## Aggregates (accuracy, %)", "", "| | " + head[2:], "|---" + rule]
    for key, label in (
        ("major", "Major (mean of major languages)"),
        ("minor", "Minor (mean of minor languages)"),
        ("accuracy_micro", "All questions"),
    ):
        lines.append(f"| {label} | " + " | ".join(_pct(results[m][key]) for m in modes) + " |")
    languages = sorted(
        {lang for r in results.values() for lang in r["per_language"]},
        key=lambda lang: (
            next(r["per_language"][lang]["tier"] for r in results.values() if lang in r["per_language"])
            != "major",
            lang,
        ),
    )
    lines += [
        "",
        "## Per language (accuracy, %; mean over the language's sources)",
        "",
        "| language | tier | questions | " + head[2:],
        "|---|---|---:" + rule,
    ]
    for lang in languages:
        first = next(r["per_language"][lang] for r in results.values() if lang in r["per_language"])
        cells = [_pct(results[m]["per_language"].get(lang, {}).get("accuracy")) for m in modes]
        lines.append(f"| {lang} | {first['tier']} | {first['n']} | " + " | ".join(cells) + " |")
    sources = sorted({s for r in results.values() for s in r["per_source"]})
    lines += [
        "",
        "## Per source (accuracy, %)",
        "",
        "| source | languages | questions | " + head[2:],
        "|---|---|---:" + rule,
    ]
    for source in sources:
        first = next(r["per_source"][source] for r in results.values() if source in r["per_source"])
        cells = [_pct(results[m]["per_source"].get(source, {}).get("accuracy")) for m in modes]
        lines.append(
            f"| {source} | {', '.join(first['languages'])} | {first['n']} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"
