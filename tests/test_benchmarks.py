"""The benchmark reader (pipeline.benchmarks) on the real benchmark files, in their published formats,
as decontamination and evaluation read them; the option and answer parsers; rejections."""

from __future__ import annotations

import json

import pytest
from conftest import fake_upstream, record

from pipeline.benchmarks import BenchmarkError, read_benchmark, suggest_format
from pipeline.benchmarks.options import OptionError, parse_answer, parse_options
from pipeline.dag import run_stage

SERIAL = {"executor": {"tasks": 1, "workers": 1}}

# file (under ../shared/data/benchmarks), format, language, questions, multi-answer questions
REAL = [
    ("frenchmedmcqa_dev.json", "mcq_dict", "fr", 300, 136),
    ("rumeddanet_dev_v1.jsonl", "yes_no", "ru", 256, 0),
    ("medqa_usmle_test.jsonl", "mcq_dict", "en", 300, 0),
    ("pubmedqa_ori_pqal.json", "pubmedqa", "en", 100, 0),
    ("mmlu_clinical_knowledge_test.csv", "mmlu_csv", "en", 265, 0),
    ("headqa_es_dev_medicine.json", "headqa", "es", 231, 0),
    ("jmed_llm_jmmlu_med.csv", "cmmlu_csv", "ja", 100, 0),
]


def _path(shared_data, name):
    return shared_data / ("benchmarks/" + name if not name.startswith("xmedbench") else name)


@pytest.mark.parametrize(("name", "fmt", "language", "count", "multi"), REAL)
def test_every_real_benchmark_file_is_read_whole(shared_data, registry, name, fmt, language, count, multi):
    read = read_benchmark(name, _path(shared_data, name), fmt, registry, language)
    assert (len(read.items), read.rejected) == (count, [])
    assert sum(item.multi for item in read.items) == multi
    assert {item.language for item in read.items} == {language}
    assert len({item.id for item in read.items}) == count
    assert all(set(item.answers) <= set(item.letters) for item in read.items)
    # without format:, the error suggests the right one
    assert f"format: {fmt} " in suggest_format(_path(shared_data, name))


def _read(shared_data, registry, name):
    fmt, language = next((f, lang) for n, f, lang, _, _ in REAL if n == name)
    return {
        item.id: item
        for item in read_benchmark(name, _path(shared_data, name), fmt, registry, language).items
    }


def test_parsed_items_per_format(shared_data, registry):
    french = _read(shared_data, registry, "frenchmedmcqa_dev.json")
    first = french["d0f974df4406bf2f933962bf0d0c0447a80d66719031e3b4a35c2ff3b3ccc594"]
    assert first.question == "L'adrénaline stimule tous ces processus métaboliques sauf un. Lequel?"
    assert first.options[0] == ("A", "Glycolyse") and first.options[4] == ("E", "Cétogénèse")
    assert first.answers == ("E",) and not first.multi
    assert any(item.answers == ("A", "B", "D") for item in french.values())  # lowercase letter lists

    russian = list(_read(shared_data, registry, "rumeddanet_dev_v1.jsonl").values())
    assert russian[0].options == (("A", "да"), ("B", "нет"))
    assert russian[0].context.startswith("Апоплексия яичника — кровоизлияние в яичник")
    assert sum(item.answers == ("A",) for item in russian) == 128  # 128 да, 128 нет

    medqa = list(_read(shared_data, registry, "medqa_usmle_test.jsonl").values())
    assert medqa[0].question.startswith("A junior orthopaedic surgery resident is completing a carpal tunnel")
    assert medqa[0].answers == ("C",) and len(medqa[0].options) == 5
    assert medqa[0].options[2][1] == "Tell the attending that he cannot fail to disclose this mistake"

    pubmed = _read(shared_data, registry, "pubmedqa_ori_pqal.json")
    assert pubmed["21645374"].question.startswith(
        "Do mitochondria play a role in remodelling lace plant leaves"
    )
    assert pubmed["21645374"].options == (("A", "Yes."), ("B", "No."), ("C", "Maybe."))
    assert pubmed["21645374"].context.startswith("Programmed cell death (PCD) is the regulated death")
    counts = [sum(item.answers == (letter,) for item in pubmed.values()) for letter in "ABC"]
    assert counts == [58, 26, 16]  # yes, no, maybe

    mmlu = list(_read(shared_data, registry, "mmlu_clinical_knowledge_test.csv").values())
    assert mmlu[0].question.startswith("What size of cannula would you use")
    assert mmlu[0].options[0] == ("A", "18 gauge.") and mmlu[0].answers == ("A",)
    assert mmlu[1].answers == ("D",) and mmlu[1].options[3] == ("D", "stamina.")

    headqa = _read(shared_data, registry, "headqa_es_dev_medicine.json")
    first = headqa["Cuaderno_2015_1_M:1"]
    assert first.question.startswith("Pregunta vinculada a la imagen nº1")
    assert len(first.options) == 4 and first.answers == ("B",)
    assert first.options[1][1].startswith("La capacidad de extensión (flexión dorsal) del tobillo")

    jmmlu = list(_read(shared_data, registry, "jmed_llm_jmmlu_med.csv").values())
    assert jmmlu[0].options[0] == ("A", "羊水塞栓症") and jmmlu[0].answers == ("A",)
    assert jmmlu[0].question.startswith("妊娠3回、出産2回")


def test_xmedbench_dev_questions_including_multi_answer(shared_data, registry):
    read = read_benchmark("xmedbench", shared_data / "xmedbench_dev_mcq.jsonl.gz", "xmedbench", registry)
    assert (len(read.items), read.rejected) == (1114, [])
    multi = [item for item in read.items if item.multi]
    assert len(multi) == 4 and {item.language for item in multi} == {"zh"}
    assert any(item.answers == ("A", "C", "E") for item in multi)  # "(ACE)"
    assert {item.language for item in read.items} == {"ar", "en", "es", "fr", "hi", "zh"}
    one = read_benchmark(
        "x", shared_data / "xmedbench_dev_mcq.jsonl.gz", "xmedbench", registry, source="xmedbench/headqa"
    )
    assert len(one.items) == 137 and {item.language for item in one.items} == {"es"}


def test_decontam_reads_every_real_format_and_finds_a_copy_of_each(
    tmp_path, write_config, shared_data, registry
):
    """The same files through `make decontam`: the counts the reader gives, and a copied question
    (or PubMedQA/RuMedDaNet context passage) of each benchmark found in a training document."""
    refs, copies = [], []
    for name, fmt, language, _, _ in REAL:
        refs.append(
            {
                "name": name.split(".")[0],
                "path": str(_path(shared_data, name)),
                "format": fmt,
                "language": language,
            }
        )
        item = max(_read(shared_data, registry, name).values(), key=lambda i: len(i.context or i.question))
        text = item.context or item.question
        copies.append(record(f"copy-{name.split('.')[0]}", f"Revision notes. {text} End of notes.", language))
    clean = [
        record("clean-en", "Wash your hands with soap before eating and after using the toilet, every day.")
    ]
    _, cfg = write_config({**SERIAL, "decontam": {"benchmarks": refs}})
    fake_upstream(tmp_path, "quality", clean + copies)
    summary = run_stage("decontam", cfg, tmp_path)
    for name, fmt, _, count, multi in REAL:
        entry = summary["benchmarks"][name.split(".")[0]]
        assert (entry["format"], entry["read"], entry["usable"], entry["rejected"]) == (fmt, count, count, {})
        assert entry["items"] == count and entry["multi_answer"] == multi
    assert summary["removed_by_benchmark"] == {name.split(".")[0]: 1 for name, *_ in REAL}
    assert summary["docs_out"] == 1


def test_eval_reads_the_same_questions_as_decontam(tmp_path, write_config, shared_data, registry):
    from moe_train.eval.evaluate import load_questions

    refs = [
        {"name": name, "path": str(_path(shared_data, name)), "format": fmt, "language": language}
        for name, fmt, language, _, _ in REAL
    ]
    _, cfg = write_config({"eval": {"benchmarks": refs}, "decontam": {"benchmarks": [dict(r) for r in refs]}})
    reads = load_questions(cfg, registry)
    assert [(r.name, len(r.items), len(r.rejected)) for r in reads] == [(n, c, 0) for n, _, _, c, _ in REAL]


# ---- options and answers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["Aspirin", "Heparin", "Warfarin"], ["Aspirin", "Heparin", "Warfarin"]),
        (["A. Aspirin", "B) Heparin", "(C) Warfarin"], ["Aspirin", "Heparin", "Warfarin"]),
        ({"B": "Heparin", "A": "Aspirin", "C": "Warfarin"}, ["Aspirin", "Heparin", "Warfarin"]),
        ({"a": "Aspirin", "b": "Heparin"}, ["Aspirin", "Heparin"]),
        ("(A) Aspirin\n(B) Heparin\n(C) Warfarin", ["Aspirin", "Heparin", "Warfarin"]),
        ("(A) Aspirin (B) Heparin (C) Warfarin", ["Aspirin", "Heparin", "Warfarin"]),
        ("（A）阿司匹林\n（B）肝素", ["阿司匹林", "肝素"]),
        ("(A) foo\n(B) bar\n  continued\n（C） qux", ["foo", "bar continued", "qux"]),
        ("(A) Type (b) receptor\n(B) none", ["Type (b) receptor", "none"]),  # a lower-case (b) is text
        ("(أ) واحد\n(ب) اثنان\n(ج) ثلاثة", ["واحد", "اثنان", "ثلاثة"]),
        ("A. Aspirin\nB. Heparin", ["Aspirin", "Heparin"]),
    ],
)
def test_parse_options_accepts_the_common_shapes(options, expected):
    assert [text for _, text in parse_options(options)] == expected


def test_parse_options_keeps_labels_as_written_and_refuses_nonsense():
    assert [label for label, _ in parse_options("(أ) واحد\n(ب) اثنان")] == ["أ", "ب"]
    for bad, message in [
        ("stray text\n(A) foo\n(B) bar", "before the first"),
        (["only one"], "at least 2"),
        ({"A": "x", "C": "y"}, "not A, B, C"),
        (["x", ""], "empty"),
        (42, "expected a string"),
    ]:
        with pytest.raises(OptionError, match=message):
            parse_options(bad)


@pytest.mark.parametrize(
    ("answer", "letters"),
    [
        ("C", ("C",)),
        ("(C)", ("C",)),
        ("c.", ("C",)),
        ("(C) Warfarin", ("C",)),
        (2, ("C",)),
        ("Warfarin", ("C",)),
        (["e"], ("E",)),  # IgakuQA
        (["a", "d", "b"], ("A", "B", "D")),  # FrenchMedMCQA
        ("(ACE)", ("A", "C", "E")),  # XMedBench multi-answer
        ("A, C", ("A", "C")),
        ("CAD", ("D",)),  # the text of an option wins over a reading as letters
    ],
)
def test_parse_answer(answer, letters):
    options = parse_options(["Aspirin", "Heparin", "Warfarin", "CAD", "Fever"])
    assert parse_answer(answer, options) == letters


def test_rejections_name_line_and_reason_and_a_mismatched_format_is_suggested(tmp_path, registry):
    path = tmp_path / "bench.jsonl"
    rows = [
        {"question": "Q1?", "options": {"A": "x", "B": "y"}, "answer_idx": "B"},
        {"question": "Q2?", "options": {"A": "x", "B": "y"}, "answer_idx": "F"},
        {"question": "", "options": {"A": "x", "B": "y"}, "answer_idx": "A"},
        {"question": "Q4?", "options": {"A": "x"}, "answer_idx": "A"},
        {"question": "Q5?", "answer_idx": "A"},
        [1, 2],
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n", encoding="utf-8")
    read = read_benchmark("bench", path, "mcq_dict", registry, language="en")
    assert len(read.items) == 1 and read.items[0].answers == ("B",)
    assert [(r.line, r.reason) for r in read.rejected] == [
        (2, "bad_answer"),
        (3, "missing_question"),
        (4, "bad_options"),
        (5, "missing_options"),
        (6, "not_an_object"),
        (7, "malformed_json"),
    ]
    assert read.summary()["rejected"] == {
        "bad_answer": 1,
        "bad_options": 1,
        "malformed_json": 1,
        "missing_options": 1,
        "missing_question": 1,
        "not_an_object": 1,
    }
    # no language anywhere: every row is rejected, and says why
    nolang = read_benchmark("bench", path, "mcq_dict", registry)
    assert nolang.items == [] and "missing_language" in nolang.empty_reason()
    with pytest.raises(BenchmarkError, match="unknown format 'medqa'"):
        read_benchmark("bench", path, "medqa", registry)


def test_medmcqa_columns_in_both_numberings(tmp_path, registry):
    row = {
        "id": "q1",
        "question": "Which vitamin prevents scurvy?",
        "opa": "A",
        "opb": "B12",
        "opc": "C",
        "opd": "D",
    }
    path = tmp_path / "medmcqa.jsonl"
    rows = [
        {**row, "cop": 3},
        {**row, "id": "q2", "cop": 1},
        {**row, "id": "q3", "cop": 0},
        {**row, "id": "q4", "cop": -1},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    authors = read_benchmark("m", path, "medmcqa", registry, language="en")
    assert [(i.id, i.answers) for i in authors.items] == [("q1", ("C",)), ("q2", ("A",))]
    assert [r.reason for r in authors.rejected] == ["bad_answer", "no_answer"]
    assert "medmcqa_hf" in authors.rejected[0].detail
    hub = read_benchmark("m", path, "medmcqa_hf", registry, language="en")
    assert [(i.id, i.answers) for i in hub.items] == [("q1", ("D",)), ("q2", ("B",)), ("q3", ("A",))]
    assert hub.items[0].options == (("A", "A"), ("B", "B12"), ("C", "C"), ("D", "D"))
    assert "format: medmcqa " in suggest_format(path)


def test_a_benchmark_with_no_usable_question_fails_eval_unless_optional(tmp_path, write_config, registry):
    from moe_train.eval.evaluate import load_questions

    path = tmp_path / "empty.csv"
    path.write_text("only,three,columns\n")
    ref = {"name": "empty", "path": str(path), "format": "mmlu_csv", "language": "en"}
    _, cfg = write_config({"eval": {"benchmarks": [ref]}})
    with pytest.raises(
        BenchmarkError, match=r"empty\.csv: benchmark 'empty' .*1 of 1 rows rejected as 'bad_row'"
    ):
        load_questions(cfg, registry)
    _, cfg = write_config({"eval": {"benchmarks": [{**ref, "optional": True}]}})
    assert load_questions(cfg, registry)[0].rejected_by_reason() == {"bad_row": 1}


def test_lm_eval_tasks_load_in_the_harness(tmp_path, registry):
    """`python -m moe_train.eval.lm_eval_tasks`: a YAML and a JSONL per benchmark, which
    lm-evaluation-harness loads and turns into one log-likelihood request per option, the letter
    right after the prompt."""
    from moe_train.eval.lm_eval_tasks import main

    assert main(["--config", "configs/demo.yaml", "--out", str(tmp_path)]) == 0
    directory = tmp_path / "lm_eval_tasks"
    written = json.loads((directory / "lm_eval_tasks.json").read_text())
    assert {name: task["questions"] for name, task in written.items()} == {
        "medqa_sample": 66,
        "mmlu_style_en": 6,
        "medqa_style_es": 4,
        "yes_no_ru": 6,
    }
    rows = [json.loads(line) for line in (directory / "medbabel_yes_no_ru.jsonl").read_text().splitlines()]
    assert rows[1]["choices"] == ["A", "B"] and rows[1]["gold"] == 1 and rows[1]["answers"] == ["B"]
    assert rows[1]["prompt"].startswith("User:Вы врач") and rows[1]["prompt"].endswith(
        "Assistant:Правильный ответ("
    )

    tasks = pytest.importorskip("lm_eval.tasks")
    manager = tasks.TaskManager(include_path=str(directory), include_defaults=False)
    task = manager.load_task_or_group(["medbabel_yes_no_ru"])["medbabel_yes_no_ru"]
    task.build_all_requests(limit=2, rank=0, world_size=1)
    requests = [(i.request_type, *i.arguments) for i in task.instances]
    assert [r[0] for r in requests] == ["loglikelihood"] * 4
    assert [r[1] for r in requests] == [rows[0]["prompt"]] * 2 + [rows[1]["prompt"]] * 2
    assert [r[2] for r in requests] == ["A", "B", "A", "B"]


def test_igakuqa_style_lists_and_cmmlu_style_headers(tmp_path, registry):
    """IgakuQA: `problem_text`, `choices` as a list, `answer` as a list of lowercase letters (the
    file the issue saw rejected whole); CMMLU: a `Question,A,B,C,D,Answer` header."""
    igaku = tmp_path / "igakuqa.jsonl"
    rows = [
        {
            "problem_id": "116A1",
            "problem_text": "正しいのはどれか。",
            "choices": ["a 肝臓", "b 腎臓", "c 脾臓", "d 膵臓", "e 心臓"],
            "answer": ["e"],
            "text_only": True,
        },
        {
            "problem_id": "116A2",
            "problem_text": "2つ選べ。",
            "choices": ["a x", "b y", "c z", "d w", "e v"],
            "answer": ["a", "c"],
            "text_only": True,
        },
    ]
    igaku.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    read = read_benchmark("IgakuQA", igaku, "mcq_list", registry, language="ja")
    assert [(i.id, i.answers) for i in read.items] == [("116A1", ("E",)), ("116A2", ("A", "C"))]
    assert read.items[0].options[0] == ("A", "肝臓") and read.rejected == []
    assert "format: mcq_list " in suggest_format(igaku)

    cmmlu = tmp_path / "cmmlu.csv"
    cmmlu.write_text("Question,A,B,C,D,Answer\n下列哪项是正确的？,甲,乙,丙,丁,C\n", encoding="utf-8")
    read = read_benchmark("cmmlu", cmmlu, "cmmlu_csv", registry, language="zh")
    assert [(i.question, i.options[2], i.answers) for i in read.items] == [
        ("下列哪项是正确的？", ("C", "丙"), ("C",))
    ]
    with pytest.raises(BenchmarkError, match="header .* does not name a question column"):
        read_benchmark("mmlu", shared_csv_without_header(tmp_path), "cmmlu_csv", registry, language="en")


def shared_csv_without_header(tmp_path):
    path = tmp_path / "noheader.csv"
    path.write_text("What is it?,x,y,z,w,A\n")
    return path
