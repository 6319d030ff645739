"""The QA protocols without a model: prompts (tokenised as training tokenises a chat turn), answer
extraction (the original ApolloMoE rule and medbabel's), aggregation."""

from __future__ import annotations

import pytest

from moe_train.data import DocumentTokenizer
from moe_train.eval import apollomoe
from moe_train.eval.apollomoe import ApolloMoEProtocol, language_accuracy
from moe_train.eval.mcq import (
    PROMPT_TEMPLATES,
    ChatTokens,
    MedbabelProtocol,
    Prediction,
    aggregate,
    build_prompt,
    extract_answer,
    extract_letters,
    markdown_tables,
    select_shots,
    template_for,
)
from pipeline.benchmarks import BenchmarkItem
from pipeline.text.tokenizer import load_tokenizer

CHAT_TEMPLATE = "User:{q}\nAssistant:{a}<|endoftext|>"
APOLLO, MEDBABEL = ApolloMoEProtocol(), MedbabelProtocol()


# Answer strings and what the original `extract_and_choose_answer` (ApolloMoE src/eval/eval_qwen2.py)
# returns for them, worked out from its code: strict (X) letters, Arabic letters counted once each
# (C is س or ك), then any capital A-F on the line, then "Yes." / "No.".
APOLLOMOE_EXTRACTION = [
    ("The correct answer is (C).", "C"),
    ("(c)", "C"),  # lower case in parentheses is upper-cased
    ("（B）肺炎", "B"),  # full-width parentheses
    ("（Ｂ）肺炎", None),  # ... but a full-width letter is no letter at all
    ("(B）mixed widths", "B"),
    ("\n\n(D) first line\n(A) second line", "D"),  # the first line that is not ""
    ("   \n(B)", None),  # a line of spaces is that first line
    ("(A) or (B)", "A"),  # a tie goes to the letter counted first
    ("(B) is tempting, but (A) fits; so (A)", "A"),  # the most votes win
    ("The answer is C, not (D)", "D"),  # a parenthesised letter beats bare ones
    ("Answer: C", "A"),  # no (X): every capital A-F counts, the A of "Answer" first
    ("Based on the findings, C", "B"),
    ("Based on the findings, (C)", "C"),
    ("答案是C。", "C"),
    ("Because of hypoxia", "B"),  # capitals inside words count
    ("I think so", None),
    ("Yes.", "A"),
    ("No.", "B"),
    ("Yes", None),  # only the exact strings "Yes." and "No."
    ("yes.", None),
    ("The correct answer is (G).", None),  # outside A-F
    ("(E)", "E"),
    ("(F)", "F"),
    ("الإجابة الصحيحة هي (ج).", None),  # jim is not the original's C
    ("(س)", "C"),  # sin is
    ("(ك)", "C"),  # and so is kaf
    ("د) الخيار الرابع", "D"),  # a parenthesis on one side is enough
    ("(أ) و (ب)", "A"),
    ("(ب) (ب) (أ)", "A"),  # an Arabic letter votes once however often it appears; A is counted first
    ("(A) (ب) (ب)", "A"),
    ("(هـ)", None),  # no Arabic E
    ("ب", None),  # a bare Arabic letter does not count
    ("(بسبب المرض)", "B"),  # "(ب" opening a word does
    ("DNA damage is (a)", "A"),
    ("\n\n", None),
    ("", None),
    ("(A)(B)(B)(C)", "B"),
    ("(D).\nThe correct answer is (A).", "D"),
    ("((C))", "C"),
    ("(AB)", "A"),  # not a parenthesised letter: the bare capitals tie, A first
    ("Yes.\n(B)", "A"),
]


@pytest.mark.parametrize(("text", "expected"), APOLLOMOE_EXTRACTION)
def test_apollomoe_extraction_matches_the_original(text, expected):
    assert apollomoe.extract_answer(text) == expected


def test_the_extraction_table_is_big_enough_to_mean_something():
    assert len(APOLLOMOE_EXTRACTION) >= 30
    assert sum(apollomoe.extract_answer(t) != extract_answer(t) for t, _ in APOLLOMOE_EXTRACTION) >= 8


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
def test_medbabel_extraction(text, expected):
    assert extract_answer(text) == expected


def test_medbabel_reads_a_set_for_multi_answer_questions():
    assert extract_letters("The correct answers are (A) (C) and (E).") == "A,C,E"
    assert extract_letters("(ب) و (د)") == "B,D"
    assert extract_letters("A and C") == "A,C"
    assert extract_letters("none") is None


def _item(i, source="s", language="en", answers=("A",), n_options=4, context=""):
    letters = "ABCDE"[:n_options]
    return BenchmarkItem(
        f"{source}-{i}",
        "bench",
        source,
        language,
        f"Question {i}?",
        tuple((letter, f"option {letter}{i}") for letter in letters),
        tuple(answers),
        context,
    )


def test_every_major_language_has_a_template_and_minor_ones_use_english(registry):
    assert set(PROMPT_TEMPLATES) == set(registry.major()) == set(apollomoe.TEMPLATES)
    for code in registry.minor():
        assert template_for(code) is PROMPT_TEMPLATES["en"]
        assert APOLLO.user_message(_item(0, language=code)).startswith("You are a medical doctor")
    for template in PROMPT_TEMPLATES.values():
        assert "{first}" in template.instruction and "{last}" in template.instruction


def test_apollomoe_prompts_are_the_originals():
    item = _item(0, language="en")
    assert APOLLO.user_message(item) == (
        "You are a medical doctor answering real-world medical exam questions. Select one correct answer "
        "from A to D.\nQuestion: Question 0?\nOptions:\n(A) option A0\n(B) option B0\n(C) option C0\n(D) option D0"
    )
    assert APOLLO.answer_text(_item(0, answers=("C",))) == "The correct answer is (C)."
    assert APOLLO.answer_text(_item(0, language="ar", answers=("B",))) == "(B)الإجابة الصحيحة هي."
    assert APOLLO.answer_text(_item(0, language="hi")) == "सही उत्तर है(A)."
    assert APOLLO.answer_text(_item(0, language="de"), "D") == "Die richtige Antwort ist(D)."
    pubmed = _item(0, context="Some abstract.")
    assert APOLLO.user_message(pubmed).startswith(
        "You are a medical doctor answering real-world medical exam questions.\nContext: Some abstract. \nQuestion:"
    )
    assert APOLLO.user_message(pubmed, as_shot=True).startswith(
        "You are a medical doctor answering real-world medical exam questions. \n"
    )
    assert APOLLO.max_new_tokens == 256 and MEDBABEL.max_new_tokens == 32


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


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.mark.parametrize("protocol", [APOLLO, MEDBABEL], ids=lambda p: p.name)
def test_solved_examples_are_tokenised_exactly_as_training_tokenises_a_chat_turn(tokenizer, protocol):
    pool = [_item(i, answers=("BCDA"[i % 4],)) for i in range(4)]
    item, shots = pool[0], pool[1:]
    prompt = build_prompt(item, shots, protocol, ChatTokens(tokenizer, CHAT_TEMPLATE))
    training = DocumentTokenizer(tokenizer, CHAT_TEMPLATE)
    separator = tokenizer(protocol.shot_separator, add_special_tokens=False)["input_ids"]
    expected = []
    for shot in shots:
        rows = [
            {
                "messages": [
                    {"role": "user", "content": protocol.user_message(shot, as_shot=True)},
                    {"role": "assistant", "content": protocol.answer_text(shot)},
                ],
                "language": "en",
            }
        ]
        expected += training.documents(rows)[0].tokens + separator
    expected += training.chat_ids(protocol.user_message(item))
    assert list(prompt.ids) == expected and prompt.shots == 3
    # tokenising the prompt as one string, as the original does, merges ":" and "The" (one token)
    merged = tokenizer.convert_tokens_to_ids(":The")
    if protocol is APOLLO:
        assert merged in tokenizer(prompt.text, add_special_tokens=False)["input_ids"]
    assert merged not in prompt.ids
    assert prompt.text.endswith("(D) option D0\nAssistant:")


def test_prompts_drop_shots_to_fit_tokens_and_apollomoe_counts_characters(tokenizer):
    chat = ChatTokens(tokenizer, CHAT_TEMPLATE)
    pool = [_item(i) for i in range(4)]
    full = build_prompt(pool[0], pool[1:], MEDBABEL, chat)
    one = build_prompt(pool[0], pool[1:2], MEDBABEL, chat)
    assert build_prompt(pool[0], pool[1:], MEDBABEL, chat, max_tokens=len(one.ids)).ids == one.ids
    assert build_prompt(pool[0], pool[1:], MEDBABEL, chat, max_tokens=1).shots == 0  # the question stays
    assert full.shots == 3
    long_shots = [
        BenchmarkItem(f"l{i}", "b", "s", "en", "x " * 1500, pool[0].options, ("A",)) for i in range(3)
    ]
    assert build_prompt(pool[0], long_shots, APOLLO, chat).shots == 1  # 4,096 characters hold one


def _prediction(source, language, correct, predicted="A", multi=False):
    answer = "A" if correct else "B"
    return Prediction(
        "x",
        "bench",
        source,
        language,
        "loglik",
        answer,
        predicted,
        3,
        correct=correct and predicted is not None,
        multi=multi,
    )


def test_medbabel_aggregate_macro_averages_sources_and_splits_major_minor(registry):
    predictions = (
        [_prediction("en-1", "en", True)] * 3
        + [_prediction("en-2", "en", False)]
        + [_prediction("zh-1", "zh", True), _prediction("zh-1", "zh", False, predicted=None)]
        + [_prediction("sw-1", "sw", True), _prediction("ckb-1", "ckb", False)]
        + [_prediction("zh-1", "zh", True, multi=True), _prediction("zh-1", "zh", False, multi=True)]
    )
    result = aggregate(predictions, registry)
    en = result["per_language"]["en"]
    assert en["accuracy"] == pytest.approx(0.5) and en["accuracy_micro"] == pytest.approx(0.75)
    assert en["sources"] == ["en-1", "en-2"] and en["tier"] == "major" and en["n"] == 4
    assert result["per_language"]["zh"]["unanswered"] == 1 and result["per_language"]["zh"]["n"] == 2
    assert result["major"] == pytest.approx(0.5) and result["major_languages"] == ["en", "zh"]
    assert result["minor"] == pytest.approx(0.5) and sorted(result["minor_languages"]) == ["ckb", "sw"]
    assert result["accuracy_micro"] == pytest.approx(5 / 8)  # single-answer questions only
    assert result["multi_answer"] == {"n": 2, "exact_match": 0.5}  # reported apart
    assert result["per_source"]["zh-1"]["multi_answer"] == {"n": 2, "exact_match": 0.5}
    assert result["per_source"]["en-2"]["accuracy"] == 0.0
    table = markdown_tables({"loglik": result, "generate": aggregate(predictions[:4], registry)})
    assert "| Major (mean of major languages) | 50.0 | 50.0 |" in table
    assert "| Minor (mean of minor languages) | 50.0 | – |" in table
    assert "| en | major | 4 | 50.0 | 50.0 |" in table
    assert table.index("| zh |") < table.index("| ckb |")  # major languages first


def test_apollomoe_aggregate_follows_the_original_results_scripts(registry):
    predictions = (
        [_prediction("xmedbench/medqa-usmle", "en", c) for c in (True, True, True, False)]
        + [_prediction("xmedbench/pubmedqa", "en", c) for c in (True, False)]
        + [_prediction("MMLU_anatomy_de", "de", True)]
        + [_prediction("MMLU_college_medicine_de", "de", c) for c in (True, False, False)]
        + [_prediction("MMLU_anatomy_pt", "pt", c) for c in (True, False)]
        + [_prediction("MMLU_college_medicine_pt", "pt", False)] * 2
        + [_prediction("mmlu-medical-sw", "sw", c) for c in (True, False)]
    )
    result = apollomoe.aggregate(predictions, registry)
    per_language = result["per_language"]
    assert per_language["en"]["accuracy"] == pytest.approx((3 / 4 + 1 / 2) / 2)  # mean of sources
    assert per_language["de"]["accuracy"] == pytest.approx(2 / 4)  # pooled, not (1 + 1/3) / 2
    assert per_language["pt"]["accuracy"] == pytest.approx(1 / 2)  # college_medicine_pt left out
    assert result["per_source"]["MMLU_college_medicine_pt"]["accuracy"] == 0.0  # but still scored
    assert result["major"] == pytest.approx((0.625 + 0.5 + 0.5) / 3)
    assert result["minor"] == pytest.approx(0.5)
    assert language_accuracy("zh", {"a": (1, 2), "b": (3, 4)}) == pytest.approx(0.625)
    assert language_accuracy("fr", {"frenchmedmcqa": (1, 2), "mmlu-medical-fr": (3, 4)}) == pytest.approx(
        4 / 6
    )


def test_multi_answer_questions_per_protocol():
    item = _item(0, answers=("A", "C", "E"), n_options=5)
    assert APOLLO.is_correct(item, "A")  # the original scores "(ACE)" on its first letter
    assert not MEDBABEL.is_correct(item, "A") and MEDBABEL.is_correct(item, "A,C,E")
    assert MEDBABEL.extract("(A) (C) (E)", item) == "A,C,E"
    assert MEDBABEL.answer_text(item) == "The correct answer is (A) (C) (E)."
