"""Multiple-choice medical QA: the parts every protocol shares (shots, prompts as training tokenises
them, predictions, tables) and medbabel's own protocol. The paper's protocol is `apollomoe.py`.

Pure Python (no torch), so a protocol can be unit-tested and reused by other evaluators. Items come
from `pipeline.benchmarks`, the reader decontamination uses too.

A protocol decides the words of a prompt (the user turn and a solved example's answer), how an
answer is read back from generated text, whether a question counts as correct, and how accuracies
add up to a language's and to the Major/Minor means. A prompt is up to `shots` solved examples of
the same source (drawn with a fixed seed), each a chat turn tokenised exactly as training tokenises
one (`moe_train.data.DocumentTokenizer.chat_ids`), then the question's own turn up to the answer.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

from pipeline.benchmarks import BenchmarkItem
from pipeline.benchmarks.options import ARABIC_LABELS, canonical_letter
from pipeline.registry import Registry

_TATWEEL = "\u0640"
# The extraction rule's letters (the paper's A-F).
_PAREN_LATIN = re.compile(r"[(（]([A-Fa-f])[)）]")
_ARABIC_ONE = "(?<![\u0600-\u06ff])([" + "".join(ARABIC_LABELS) + "])(?![\u0600-\u06ff])"
# An Arabic letter standing alone with a parenthesis on at least one side ("(ب" of "(بسبب" is a word).
_PAREN_ARABIC = re.compile(rf"\({_ARABIC_ONE}\)?|{_ARABIC_ONE}\)")
_BARE_LATIN = re.compile(r"(?<![A-Za-z])([A-F])(?![A-Za-z])")
_YES_NO = re.compile(r"^(yes|no)\.?$", re.IGNORECASE)


class Protocol:
    """How questions are asked, answers read and accuracies added up. Subclasses fill the hooks."""

    name = ""
    max_new_tokens = 32
    shot_separator = ""  # text between one solved example's end of turn and the next turn
    single_letter_answers = False  # True: a multi-answer question is scored on one letter (apollomoe)

    def user_message(self, item: BenchmarkItem, as_shot: bool = False) -> str:
        raise NotImplementedError

    def answer_text(self, item: BenchmarkItem, label: str | None = None) -> str:
        """A solved example's answer (the assistant turn); with `label`, the answer naming that option
        (the log-likelihood mode compares these)."""
        raise NotImplementedError

    def extract(self, text: str, item: BenchmarkItem) -> str | None:
        """The answer read from generated text: a letter, or letters joined by commas (multi-answer)."""
        raise NotImplementedError

    def is_correct(self, item: BenchmarkItem, predicted: str | None) -> bool:
        """Exact match: one letter, or the exact set of letters of a multi-answer question."""
        return predicted is not None and set(predicted.split(",")) == set(item.answers)

    def fits(self, shots_text_length: int, question_text_length: int) -> bool:
        """Whether one more solved example may be added (apollomoe counts characters; medbabel tokens)."""
        return True

    def aggregate(self, predictions: list[Prediction], registry: Registry) -> dict:
        raise NotImplementedError


class ChatTokens:
    """Prompts as token ids, each solved example tokenised exactly as training tokenises a chat turn
    (the template's literal pieces, the question and the answer encoded apart, as
    `moe_train.data.DocumentTokenizer` does), so `Assistant:` is never merged with the answer's
    first word the way tokenising the whole prompt as one string would."""

    def __init__(self, tokenizer, chat_template: str):
        from moe_train.data import DocumentTokenizer

        self.tokenizer = tokenizer
        self.template = chat_template
        self.encoder = DocumentTokenizer(tokenizer, chat_template)

    def turn(self, question: str, answer: str | None = None) -> list[int]:
        return self.encoder.chat_ids(question, answer)

    def characters(self, question: str, answer: str | None = None) -> int:
        """The turn's length as text (the original budgets prompts in characters)."""
        text = self.template.replace("{q}", question)
        return len(text.replace("{a}", answer) if answer is not None else text.split("{a}")[0])

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def select_shots(item: BenchmarkItem, pool: list[BenchmarkItem], k: int, seed: int) -> list[BenchmarkItem]:
    """`k` solved examples from the same source and language (never the item itself; a mixed source
    must not hand a Chinese question English examples), fixed by the seed and the item's id, so a
    question's prompt does not depend on which other questions are evaluated."""
    candidates = [
        other
        for other in pool
        if other.source == item.source and other.language == item.language and other.id != item.id
    ]
    rng = random.Random(f"{seed}|{item.source}|{item.id}")
    return rng.sample(candidates, min(k, len(candidates)))


@dataclass(frozen=True)
class Prompt:
    item: BenchmarkItem
    ids: tuple[int, ...]  # ends where the model starts its answer
    text: str  # the same, decoded, for the predictions file
    shots: int


def build_prompt(
    item: BenchmarkItem,
    shots: list[BenchmarkItem],
    protocol: Protocol,
    chat: ChatTokens,
    max_tokens: int | None = None,
) -> Prompt:
    """Few-shot prompt; the last examples are dropped while the prompt is longer than `max_tokens`
    tokens (and, for apollomoe, while it is longer than the original's character budget)."""
    target_text = protocol.user_message(item)
    target = chat.turn(target_text)
    separator = chat.encode(protocol.shot_separator)
    rendered: list[list[int]] = []
    used_chars = 0
    for shot in shots:
        shot_text = protocol.user_message(shot, as_shot=True)
        answer = protocol.answer_text(shot)
        shot_chars = chat.characters(shot_text, answer) + len(protocol.shot_separator)
        if not protocol.fits(used_chars + shot_chars, chat.characters(target_text)):
            continue
        used_chars += shot_chars
        rendered.append(chat.turn(shot_text, answer) + separator)
    while True:
        ids = [token for shot in rendered for token in shot] + target
        if not rendered or max_tokens is None or len(ids) <= max_tokens:
            return Prompt(item, tuple(ids), chat.tokenizer.decode(ids), len(rendered))
        rendered.pop()


# ---- answer extraction (medbabel) ----------------------------------------------------------------


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
    found += [(m.start(), ARABIC_LABELS[m.group(1) or m.group(2)]) for m in _PAREN_ARABIC.finditer(line)]
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


def extract_letters(text: str) -> str | None:
    """Every option letter in parentheses on the first non-empty line (else every bare capital),
    sorted and comma-joined: a multi-answer question's predicted set."""
    line = unicodedata.normalize("NFKC", first_nonempty_line(text)).replace(_TATWEEL, "")
    found = {m.group(1).upper() for m in _PAREN_LATIN.finditer(line)}
    found |= {ARABIC_LABELS[m.group(1) or m.group(2)] for m in _PAREN_ARABIC.finditer(line)}
    if not found:
        found = {m.group(1) for m in _BARE_LATIN.finditer(line)}
    return ",".join(sorted(found)) or None


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


class MedbabelProtocol(Protocol):
    """medbabel's variant: its own wording per language (the instruction names the real first and last
    letters), a context passage shown as such, solved examples packed back to back as in training,
    the answer read from the first non-empty line with full-width, Arabic and yes/no forms handled,
    multi-answer questions scored by exact set match and reported apart, every language the
    unweighted mean of its sources. docs/eval_report.md lists the differences to `apollomoe`."""

    name = "medbabel"
    max_new_tokens = 32

    def user_message(self, item: BenchmarkItem, as_shot: bool = False) -> str:
        template = template_for(item.language)
        letters = [label for label, _ in item.options]
        instruction = template.instruction.format(first=letters[0], last=letters[-1])
        context = f"{item.context}\n" if item.context else ""
        return (
            f"{instruction}\n{context}{template.question_label}: {item.question}\n"
            f"{template.options_label}:\n{item.options_text()}"
        )

    def answer_text(self, item: BenchmarkItem, label: str | None = None) -> str:
        labels = [label] if label else [o for o, _ in item.options if canonical_letter(o) in item.answers]
        return f"{template_for(item.language).answer_lead} " + " ".join(f"({o})" for o in labels) + "."

    def extract(self, text: str, item: BenchmarkItem) -> str | None:
        if item.multi:
            return extract_letters(text)
        return extract_answer(text)

    def aggregate(self, predictions: list[Prediction], registry: Registry) -> dict:
        return aggregate(predictions, registry)


# ---- predictions and aggregation -----------------------------------------------------------------


@dataclass
class Prediction:
    """One scored question in one mode."""

    id: str
    benchmark: str
    source: str
    language: str
    mode: str
    answer: str  # the answer letter, or letters joined by commas
    predicted: str | None
    shots: int
    correct: bool
    multi: bool = False
    output: str = ""  # generated text (generate mode) or per-letter log-likelihoods (loglik mode)
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def mean_of(values: Iterable[float]) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def accuracy_counts(group: list[Prediction]) -> dict:
    return {
        "n": len(group),
        "correct": sum(p.correct for p in group),
        "unanswered": sum(p.predicted is None for p in group),
        "accuracy": sum(p.correct for p in group) / len(group) if group else None,
    }


def multi_answer_block(group: list[Prediction]) -> dict | None:
    """Multi-answer questions apart: how many, and how many were answered with the exact set."""
    multi = [p for p in group if p.multi]
    if not multi:
        return None
    return {"n": len(multi), "exact_match": sum(p.correct for p in multi) / len(multi)}


def per_source(predictions: list[Prediction], scored: Callable[[Prediction], bool]) -> dict[str, dict]:
    by_source: dict[str, list[Prediction]] = defaultdict(list)
    for prediction in predictions:
        by_source[prediction.source].append(prediction)
    result = {}
    for source, group in sorted(by_source.items()):
        entry = {
            "languages": sorted({p.language for p in group}),
            **accuracy_counts([p for p in group if scored(p)]),
        }
        if (multi := multi_answer_block(group)) is not None:
            entry["multi_answer"] = multi
        result[source] = entry
    return result


def aggregate(predictions: list[Prediction], registry: Registry) -> dict:
    """medbabel's aggregation, for one mode: accuracy per source and per language over single-answer
    questions (multi-answer ones are reported apart, by exact set match), a language being the
    unweighted mean of its sources, Major/Minor the unweighted means of the languages present."""
    single = [p for p in predictions if not p.multi]
    sources = per_source(predictions, lambda p: not p.multi)
    per_language: dict[str, dict] = {}
    by_language: dict[str, list[Prediction]] = defaultdict(list)
    for prediction in single:
        by_language[prediction.language].append(prediction)
    for language, group in sorted(by_language.items()):
        names = sorted({p.source for p in group})
        per_language[language] = {
            "tier": registry.get(language).tier,
            "family": registry.get(language).family,
            **accuracy_counts(group),
            "sources": names,
            "accuracy": mean_of(
                accuracy_counts([p for p in group if p.source == s])["accuracy"] for s in names
            ),
            "accuracy_micro": accuracy_counts(group)["accuracy"],
        }
    return with_major_minor(predictions, single, per_language, sources)


def with_major_minor(predictions, single, per_language: dict, sources: dict) -> dict:
    major = [lang for lang in per_language if per_language[lang]["tier"] == "major"]
    minor = [lang for lang in per_language if per_language[lang]["tier"] == "minor"]
    result = {
        "n": len(predictions),
        "accuracy_micro": mean_of(p.correct for p in single),
        "major": mean_of(per_language[lang]["accuracy"] for lang in major),
        "minor": mean_of(per_language[lang]["accuracy"] for lang in minor),
        "major_languages": major,
        "minor_languages": minor,
        "per_language": per_language,
        "per_source": sources,
    }
    if (multi := multi_answer_block(predictions)) is not None:
        result["multi_answer"] = multi
    return result


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


def benchmarks_table(benchmarks: dict[str, dict]) -> str:
    """Markdown: every configured benchmark with its questions read, scored and rejected by reason."""
    lines = [
        "## Benchmarks (questions)",
        "",
        "| benchmark | format | read | usable | scored | multi-answer | rejected |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for name, b in benchmarks.items():
        lines.append(
            f"| {name} | {b['format']} | {b['read']} | {b['usable']} | {b['scored']} | {b['multi_answer']} | "
            f"{rejected_text(b['rejected'])} |"
        )
    return "\n".join(lines) + "\n"


def rejected_text(rejected: dict[str, int]) -> str:
    """`0`, or `3 (bad_answer 2, malformed_json 1)`."""
    total = sum(rejected.values())
    detail = ", ".join(
        f"{reason} {count}" for reason, count in sorted(rejected.items(), key=lambda kv: -kv[1])
    )
    return f"{total} ({detail})" if total else "0"
