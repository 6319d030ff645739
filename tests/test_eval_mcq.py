"""The QA protocol without a model: option parsing, benchmark loading, prompts, answer extraction,
aggregation."""

from __future__ import annotations

import gzip
import json
import re

import pytest
from helpers.eval_helpers import XMED

from moe_train.eval.mcq import (
    PROMPT_TEMPLATES,
    BenchmarkError,
    ChatFormat,
    MCQItem,
    Prediction,
    aggregate,
    build_prompt,
    canonical_letter,
    extract_answer,
    load_benchmark,
    markdown_tables,
    parse_options,
    select_shots,
    template_for,
)

CHAT = ChatFormat("User:{q}\nAssistant:{a}<|endoftext|>")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The correct answer is (C).", "C"),
        ("（Ｂ）肺炎", "B"),  # full-width parentheses and letter
        ("(B）mixed widths", "B"),
        ("the answer is (d)", "D"),  # lower case inside parentheses
        ("\n\n  (D) first line\n(A) second line", "D"),  # only the first non-empty line counts
        ("   \n\t\n(B)", "B"),  # whitespace-only lines are empty
        ("الإجابة الصحيحة هي (ج).", "C"),  # Arabic option letter in parentheses
        ("د) الخيار الرابع", "D"),  # Arabic letter with one parenthesis
        ("(هـ)", "E"),  # ha written with tatweel
        ("(بسبب المرض)", None),  # a parenthesised Arabic word is not an option letter
        ("(A) is tempting, but (B) fits; so (B)", "B"),  # the most frequent wins
        ("(A) or (B)", "A"),  # a tie goes to the earliest
        ("The answer is C, not (D)", "D"),  # a parenthesised letter beats a bare one
        ("Answer: C", "C"),  # bare letter fallback
        ("答案是C。", "C"),  # bare letter between CJK characters
        ("Because of hypoxia", None),  # letters inside words do not count
        ("I think so", None),
        ("The correct answer is (G).", None),  # outside A-F
        ("Yes.", "A"),
        ("no", "B"),
        ("", None),
        ("\n\n", None),
    ],
)
def test_extract_answer_follows_the_paper_rule(text, expected):
    assert extract_answer(text) == expected


def test_parse_options_handles_widths_continuations_and_arabic_labels():
    assert parse_options("(A) foo\n(B) bar\n  continued\n（C） qux") == (
        ("A", "foo"),
        ("B", "bar continued"),
        ("C", "qux"),
    )
    assert [canonical_letter(label) for label, _ in parse_options("(أ) واحد\n(ب) اثنان\n(ج) ثلاثة")] == [
        "A",
        "B",
        "C",
    ]
    with pytest.raises(ValueError, match="before the first"):
        parse_options("stray text\n(A) foo")


def _write_jsonl(path, rows):
    path.write_text(
        "\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows) + "\n"
    )
    return path


def test_load_benchmark_rejects_bad_rows_with_line_and_reason(tmp_path, registry):
    good = {
        "id": "q1",
        "question": "Q?",
        "options": "(A) a\n(B) b",
        "answer": "(B)",
        "language": "sw",
        "source": "s",
    }
    path = _write_jsonl(
        tmp_path / "bench.jsonl",
        [
            good,
            "{not json",
            {**good, "id": "q2", "question": ""},
            {**good, "id": "q3", "answer": "(E)"},
            {**good, "id": "q4", "language": "xx-unknown"},
            {**good},  # duplicate id
            "[1, 2]",
            {
                "id": "q5",
                "question": "Q?",
                "options": "(أ) نعم\n(ب) لا",
                "answer": "(ب)",
            },  # language from the config
            {**good, "id": "q6", "options": "(A) only one"},
        ],
    )
    items, rejects = load_benchmark(path, "bench", registry, language="ar")
    assert [i.id for i in items] == ["q1", "q5"]
    assert items[0].language == "sw" and items[0].answer == "B" and items[0].source == "s"
    assert items[1].language == "ar" and items[1].answer == "B" and items[1].answer_label == "ب"
    assert [(r.line, r.reason) for r in rejects] == [
        (2, "malformed_json"),
        (3, "missing_question"),
        (4, "bad_answer"),
        (5, "unknown_language"),
        (6, "duplicate_id"),
        (7, "not_an_object"),
        (9, "bad_options"),
    ]
    assert all(r.file == str(path) for r in rejects)
    with pytest.raises(BenchmarkError, match="file not found"):
        load_benchmark(tmp_path / "missing.jsonl", "missing", registry)


def test_load_benchmark_on_the_xmedbench_dev_questions(shared_data, registry):
    path = shared_data / XMED
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        raw = [json.loads(line) for line in fh]
    multi_answer = [r for r in raw if len(re.findall(r"[A-Z]", r["answer"])) > 1]
    items, rejects = load_benchmark(path, "xmedbench", registry)
    assert len(items) + len(rejects) == len(raw)
    assert len(rejects) == len(multi_answer) and {r.reason for r in rejects} <= {"bad_answer"}
    assert {i.language for i in items} == {r["lang"] for r in raw}
    assert all(i.answer in i.letters for i in items)


def test_every_major_language_has_a_template_and_minor_ones_use_english(registry):
    assert set(PROMPT_TEMPLATES) == set(registry.major())
    for code in registry.minor():
        assert template_for(code) is PROMPT_TEMPLATES["en"]
    for template in PROMPT_TEMPLATES.values():
        assert "{first}" in template.instruction and "{last}" in template.instruction


def _item(i, source="s", language="en", answer="A", n_options=4):
    letters = "ABCDE"[:n_options]
    return MCQItem(
        f"{source}-{i}",
        "bench",
        source,
        language,
        f"Question {i}?",
        tuple((letter, f"option {letter}{i}") for letter in letters),
        answer,
    )


def test_shots_come_from_the_same_source_with_a_fixed_seed():
    pool = [_item(i, "s1") for i in range(10)] + [_item(i, "s2") for i in range(10)]
    item = pool[3]
    shots = select_shots(item, pool, 3, seed=0)
    assert len(shots) == 3 and all(s.source == "s1" and s.id != item.id for s in shots)
    assert select_shots(item, pool, 3, seed=0) == shots
    assert any(select_shots(item, pool, 3, seed=s) != shots for s in range(1, 6))
    assert len(select_shots(_item(0, "lonely"), [_item(0, "lonely"), _item(1, "lonely")], 3, seed=0)) == 1
    mixed = [_item(i, "multi", language="en") for i in range(4)] + [
        _item(i + 4, "multi", language="zh") for i in range(4)
    ]
    assert {s.language for s in select_shots(mixed[5], mixed, 3, seed=0)} == {"zh"}


def test_prompt_uses_the_language_template_and_drops_shots_to_fit():
    pool = [_item(i, language="fr", answer="BCDA"[i % 4]) for i in range(6)]
    item, shots = pool[0], pool[1:4]
    prompt = build_prompt(item, shots, CHAT)
    assert prompt.shots == 3
    assert prompt.text.startswith("User:Vous êtes médecin")
    assert prompt.text.endswith("(D) option D0\nAssistant:")
    assert prompt.text.count("<|endoftext|>\n") == 3
    for shot in shots:
        assert f"Question: {shot.question}" in prompt.text
        assert f"Assistant:La bonne réponse est ({shot.answer}).<|endoftext|>" in prompt.text
    assert "de A à D" in prompt.text

    def words(text):
        return len(text.split())

    budget = words(build_prompt(item, shots[:1], CHAT).text)
    trimmed = build_prompt(item, shots, CHAT, words, budget)
    assert trimmed.shots == 1 and trimmed.text == build_prompt(item, shots[:1], CHAT).text
    assert build_prompt(item, shots, CHAT, words, 1).shots == 0  # the question itself is always kept
    with pytest.raises(ValueError, match="chat template"):
        ChatFormat("Assistant:{a} User:{q}")


def _prediction(source, language, correct, predicted="A"):
    return Prediction("x", "bench", source, language, "loglik", "A" if correct else "B", predicted, 3)


def test_aggregate_macro_averages_sources_and_splits_major_minor(registry):
    predictions = (
        [_prediction("en-1", "en", True)] * 3
        + [_prediction("en-2", "en", False)]
        + [_prediction("zh-1", "zh", True), _prediction("zh-1", "zh", False, predicted=None)]
        + [_prediction("sw-1", "sw", True), _prediction("ckb-1", "ckb", False)]
    )
    result = aggregate(predictions, registry)
    en = result["per_language"]["en"]
    assert en["accuracy"] == pytest.approx(0.5) and en["accuracy_micro"] == pytest.approx(0.75)
    assert en["sources"] == ["en-1", "en-2"] and en["tier"] == "major" and en["n"] == 4
    assert result["per_language"]["zh"]["unanswered"] == 1
    assert result["major"] == pytest.approx(0.5) and result["major_languages"] == ["en", "zh"]
    assert result["minor"] == pytest.approx(0.5) and sorted(result["minor_languages"]) == ["ckb", "sw"]
    assert result["accuracy_micro"] == pytest.approx(5 / 8)
    assert result["per_source"]["en-2"]["accuracy"] == 0.0
    table = markdown_tables({"loglik": result, "generate": aggregate(predictions[:4], registry)})
    assert "| Major (mean of major languages) | 50.0 | 50.0 |" in table
    assert "| Minor (mean of minor languages) | 50.0 | – |" in table
    assert "| en | major | 4 | 50.0 | 50.0 |" in table
    assert table.index("| zh |") < table.index("| ckb |")  # major languages first
