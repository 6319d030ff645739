"""The paper's evaluation protocol, as the original ApolloMoE code runs it (the default, `protocol:
apollomoe`).

Checked against github.com/FreedomIntelligence/ApolloMoE at commit 02e30420:
- prompts: `src/prepare/data_process_test_qwen2.py` (one instruction per major language, the
  PubMedQA template with a context, 3 solved examples from the same source; a solved example ends
  in `<|endoftext|>` and a newline; examples are added while the prompt stays under 4,096
  characters); minor languages use the English template (`data_process_test_qwen2_50languages.py`);
- generation: `src/eval/eval_qwen2.py`, greedy, `max_new_tokens=256`;
- extraction: the same file's `extract_and_choose_answer`, reproduced rule for rule below;
- aggregation: `utils/results_collection_major.py` and `utils/results_collection_minor.py`.

The instruction, label and answer strings below are those of the original prompts (protocol facts,
like the paper's numbers): their typos and odd spacing are what the published scores were measured
with. Only the shot sampling differs on purpose: the original draws with an unseeded `random`, this
one with the run's seed.
"""

from __future__ import annotations

import re
from collections import defaultdict

from moe_train.eval.mcq import Prediction, Protocol, accuracy_counts, mean_of, per_source, with_major_minor
from pipeline.benchmarks import BenchmarkItem
from pipeline.registry import Registry

# language -> (instruction, question label, options label, answer with "{answer}" = "(C)")
TEMPLATES: dict[str, tuple[str, str, str, str]] = {
    "en": (
        "You are a medical doctor answering real-world medical exam questions. Select one correct answer from A to D.",
        "Question",
        "Options",
        "The correct answer is {answer}.",
    ),
    "zh": (
        "您是一名医生，正在回答现实世界的医学考试问题。请从A到E中选择一个正确答案。",
        "问题",
        "选项",
        "正确答案是{answer}.",
    ),
    "es": (
        "Usted es un médico que responde preguntas de exámenes médicos del mundo real. "
        "Elija una respuesta correcta de la A a la D.",
        "pregunta",
        "Opciones",
        "La respuesta correcta es {answer}.",
    ),
    "fr": (
        "Vous êtes un médecin et répondez à des questions d'examen médical du monde réel. "
        "Veuillez choisir une bonne réponse de A à E.",
        "question",
        "Possibilités",
        "La bonne réponse est {answer}.",
    ),
    "hi": (
        "आप एक डॉक्टर हैं जो वास्तविक दुनिया की मेडिकल परीक्षा के सवालों का जवाब दे रहे हैं। कृपया A से D तक सही उत्तर चुनें।",
        "सवाल",
        "विकल्प",
        "सही उत्तर है{answer}.",
    ),
    "ar": (
        "أنت طبيب يجيب على أسئلة الفحص الطبي في العالم الحقيقي. الرجاء اختيار الإجابة الصحيحة من أ إلى د.",
        "سؤال",
        "خيارات",
        "{answer}الإجابة الصحيحة هي.",
    ),
    "ru": (
        "Вы врач, отвечающий на реальные вопросы медицинского осмотра. "
        "Пожалуйста, выберите правильный ответ от А и B.",
        "вопрос",
        "Параметры",
        "Правильный ответ{answer}.",
    ),
    "de": (
        "Sie sind ein Arzt, der Fragen zu medizinischen Untersuchungen aus der Praxis beantwortet. "
        "Bitte wählen Sie eine richtige Antwort von A bis D.",
        "Frage",
        "Optionen",
        "Die richtige Antwort ist{answer}.",
    ),
    "pt": (
        "Você é um médico que responde a perguntas de exames médicos do mundo real. "
        "Escolha uma resposta correta de A a D.",
        "pergunta",
        "Opções",
        "A resposta correta é{answer}.",
    ),
    "it": (
        "Sei un medico che risponde a domande sugli esami medici del mondo reale. "
        "Scegli una risposta corretta dalla A alla E.",
        "domanda",
        "Opzioni",
        "La risposta corretta è{answer}.",
    ),
    "ko": (
        "당신은 실제 건강 검진 문제에 답하는 의사입니다. A부터 E까지 정답을 선택해주세요.",
        "질문",
        "옵션",
        "정답은{answer}.",
    ),
    "ja": (
        "あなたは現実世界の健康診断の質問に答える医師です。 正しい答えを A ～ E から選択してください。",
        "質問",
        "オプション",
        "正しい答えは、{answer}.",
    ),
}
# The PubMedQA template (English with a context). The solved example's first line ends in a space,
# the question's own does not; both put a space after the context.
PUBMED_INSTRUCTION = "You are a medical doctor answering real-world medical exam questions."
PROMPT_CHARACTERS = 4096  # the original's prompt budget, in characters

# Aggregation (results_collection_major.py): English and Chinese are the plain mean of their
# sources; every other language pools its questions (German, Portuguese, French and Italian have
# several sources, the rest one).
SOURCE_MEAN_LANGUAGES = ("en", "zh")
# The original lists MMLU_medical_genetics_pt twice in Portuguese's pool and never
# MMLU_college_medicine_pt, so that source is scored but left out of Portuguese's accuracy.
LEFT_OUT_OF_LANGUAGE = ("MMLU_college_medicine_pt",)

# Extraction (extract_and_choose_answer).
_STRICT = re.compile(r"[（\(]([A-Fa-f])[）\)]")
_LOOSE = re.compile(r"[A-F]")
_ARABIC = (
    ("A", re.compile(r"[（\(]?(أ)[）\)]+|[（\(]+(أ)[）\)]?")),
    ("B", re.compile(r"[（\(]?(ب)[）\)]+|[（\(]+(ب)[）\)]?")),
    ("C", re.compile(r"[（\(]?(س|ك)[）\)]+|[（\(]+(س|ك)[）\)]?")),
    ("D", re.compile(r"[（\(]?(د)[）\)]+|[（\(]+(د)[）\)]?")),
)


def extract_answer(text: str) -> str | None:
    """The original's rule. The first line that is not the empty string (a line of spaces counts) is
    read; letters A-F in half- or full-width parentheses are counted, upper-cased; an Arabic letter
    with a parenthesis on one side adds one vote to its option (سـ or كـ for C, no E), however
    often it appears; the most voted letter wins, a tie going to the letter counted first (Latin
    letters in order of appearance, then Arabic A, B, C, D). With no vote, any capital A-F anywhere
    on the line counts (inside words too); with still none, the line "Yes." is A, "No." is B."""
    return _choose(_STRICT, text, loose=False)


def _choose(pattern: re.Pattern, text: str, loose: bool) -> str | None:
    if "\n" in text:
        text = next((line for line in text.split("\n") if len(line)), text)
    votes: dict[str, int] = {}
    for letter in pattern.findall(text):
        votes[letter.upper()] = votes.get(letter.upper(), 0) + 1
    for letter, arabic in _ARABIC:
        if arabic.search(text):
            votes[letter] = votes.get(letter, 0) + 1
    if not votes:
        if loose:
            return {"Yes.": "A", "No.": "B"}.get(text)
        return _choose(_LOOSE, text, loose=True)
    best = max(votes.values())
    return next(letter for letter, count in votes.items() if count == best)


class ApolloMoEProtocol(Protocol):
    """The original code's prompts, extraction, 256 new tokens and aggregation."""

    name = "apollomoe"
    max_new_tokens = 256
    shot_separator = "\n"
    single_letter_answers = True

    def user_message(self, item: BenchmarkItem, as_shot: bool = False) -> str:
        if item.context and item.language == "en":
            first = f"{PUBMED_INSTRUCTION} " if as_shot else PUBMED_INSTRUCTION
            return f"{first}\nContext: {item.context} \nQuestion: {item.question}\nOptions:\n{item.options_text()}"
        instruction, question_label, options_label, _ = TEMPLATES.get(item.language, TEMPLATES["en"])
        question = f"{item.context}\n{item.question}" if item.context else item.question
        return f"{instruction}\n{question_label}: {question}\n{options_label}:\n{item.options_text()}"

    def answer_text(self, item: BenchmarkItem, label: str | None = None) -> str:
        return TEMPLATES.get(item.language, TEMPLATES["en"])[3].format(
            answer=f"({label or item.answer_label})"
        )

    def extract(self, text: str, item: BenchmarkItem) -> str | None:
        return extract_answer(text)

    def is_correct(self, item: BenchmarkItem, predicted: str | None) -> bool:
        """The original keeps `answer[1]`, the first letter of "(ACE)": a multi-answer question is
        right when that letter is extracted."""
        return predicted == item.answers[0]

    def fits(self, shots_text_length: int, question_text_length: int) -> bool:
        """The original adds an example while examples and question stay under 4,096 characters (it
        also drops a question whose own prompt is longer; here `eval.max_prompt_tokens` governs that)."""
        return shots_text_length + question_text_length < PROMPT_CHARACTERS

    def aggregate(self, predictions: list[Prediction], registry: Registry) -> dict:
        return aggregate(predictions, registry)


def _left_out(source: str) -> bool:
    return any(source == name or source.endswith(f"/{name}") for name in LEFT_OUT_OF_LANGUAGE)


def language_accuracy(language: str, source_counts: dict[str, tuple[int, int]]) -> float | None:
    """A language's accuracy from its sources' (correct, total): the mean of the source accuracies
    for English and Chinese, the pooled accuracy for every other language."""
    counts = {s: c for s, c in source_counts.items() if c[1] and not _left_out(s)}
    if not counts:
        return None
    if language in SOURCE_MEAN_LANGUAGES:
        return mean_of(correct / total for correct, total in counts.values())
    return sum(c for c, _ in counts.values()) / sum(t for _, t in counts.values())


def aggregate(predictions: list[Prediction], registry: Registry) -> dict:
    """Accuracy per source and per language as the original's results scripts compute it; Major and
    Minor are the means over the major and minor languages present."""
    sources = per_source(predictions, lambda p: True)
    by_language: dict[str, list[Prediction]] = defaultdict(list)
    for prediction in predictions:
        by_language[prediction.language].append(prediction)
    per_language: dict[str, dict] = {}
    for language, group in sorted(by_language.items()):
        names = sorted({p.source for p in group})
        counts = {
            s: (sum(p.correct for p in group if p.source == s), sum(p.source == s for p in group))
            for s in names
        }
        per_language[language] = {
            "tier": registry.get(language).tier,
            "family": registry.get(language).family,
            **accuracy_counts(group),
            "sources": names,
            "accuracy": language_accuracy(language, counts),
            "accuracy_micro": accuracy_counts(group)["accuracy"],
        }
    return with_major_minor(predictions, predictions, per_language, sources)
