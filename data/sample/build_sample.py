"""Build the embedded sample from the text written in `src/<language>.yaml`.

    .venv/bin/python data/sample/build_sample.py            # rewrite data/sample/ in place
    .venv/bin/python data/sample/build_sample.py --out DIR  # write elsewhere (the tests compare)

The text lives in one YAML file per language, so adding a document is an edit there. This script
spreads it over the formats the collection stage reads (JSONL, gzipped JSONL, CSV, TSV, Parquet,
TMX, the ApolloMoE format), applies the planted problems (duplicates, wrong-language labels,
benchmark copies), checks them (a near-duplicate must stay near), and writes `planted.json`, the
machine-readable list of what was planted that tests assert on. Output is byte-for-byte
deterministic. README.md explains every file.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import sys
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from pipeline.registry import load_registry  # noqa: E402
from pipeline.schema import stable_id  # noqa: E402
from pipeline.text.segment import segment  # noqa: E402

LANGUAGE_ORDER = [
    *("en", "zh", "fr", "es", "ar", "hi", "de", "pt", "ru", "ja", "ko", "it"),
    *("vi", "uk", "cs", "da", "sw", "th", "he", "ha", "rw"),
]
# file -> the name of the source reading it in configs/demo.yaml (record ids are stable_id(source, id)).
FILES = {
    "medical_books": ("medical_books.jsonl", "medical_books"),
    "medical_papers": ("medical_papers.jsonl.gz", "medical_papers"),
    "guidelines": ("guidelines.csv", "guidelines"),
    "encyclopedia": ("encyclopedia.parquet", "encyclopedia"),
    "exams": ("exams.jsonl", "exams"),
    "dialogues": ("dialogues.jsonl", "dialogues"),
    "general": ("general.tsv", "general"),
    "web_pages": ("web_pages.jsonl", "web_pages"),
    "tmx": ("medical_tm.tmx", "translation_memory"),
    "apollo": ("apollo/apollo_sample.json", "apollo"),
}
KIND_FILE = {"book": "medical_books", "paper": "medical_papers", "guideline": "guidelines"}
KIND_FILE["encyclopedia"] = "encyclopedia"
APOLLO_KEYS = {
    "book": "medicalBook",
    "paper": "medicalPaper",
    "guideline": "medicalGuideline",
    "encyclopedia": "medicalWiki",
    "exam": "medicalExam",
    "dialogue": "medicalPatient",
    "general": "general",
    "web": "medicalWeb",
}
TMX_LANG_TAGS = {"en": "en-US", "sw": "sw-KE", "vi": "vi-VN", "cs": "cs-CZ"}
BENCHMARK_SOURCE = "medbabel-sample/medqa"
BENCHMARK_FILE = "benchmark/medqa_sample.jsonl"
LETTERS = "ABCDEFGH"
NEAR_DUPLICATE_MIN_JACCARD = 0.85
SHINGLE = 5
CONTAMINATION_NGRAM = {"space": 13, "char": 50}  # the decontamination stage's defaults


class SampleError(ValueError):
    pass


def load_sources() -> dict[str, dict]:
    docs = {}
    for code in LANGUAGE_ORDER:
        path = HERE / "src" / f"{code}.yaml"
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if data.get("language") != code:
            raise SampleError(f"{path}: language must be '{code}'")
        docs[code] = data
    return docs


def passage_text(p: dict, joiner: str) -> str:
    return joiner.join(p["sentences"]) if "sentences" in p else p["text"].strip()


def spread_answer(q: dict, position: int) -> None:
    """Rotate a question's options so its answer lands on letter `position % n`: the source files
    list the right answer first, and a benchmark whose answers are all (A) measures nothing."""
    options, n = q["options"], len(q["options"])
    shift = (LETTERS.index(q["answer"]) - position % n) % n
    q["options"] = options[shift:] + options[:shift]
    q["answer"] = LETTERS[position % n]


def exam_options(options: list[str]) -> str:
    return "\n".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(options))


def _ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def jaccard(a: str, b: str, segmentation: str) -> float:
    """Jaccard similarity of word (or character) 5-gram shingles, as MinHash deduplication estimates it."""
    x, y = _ngrams(segment(a, segmentation), SHINGLE), _ngrams(segment(b, segmentation), SHINGLE)
    return len(x & y) / len(x | y)


class Sample:
    def __init__(self, sources: dict[str, dict]):
        self.sources = sources
        for data in sources.values():
            for kind in ("benchmark", "exams"):
                for position, q in enumerate(data.get(kind, [])):
                    spread_answer(q, position)
        self.registry = load_registry()
        self.files: dict[str, list[dict]] = {key: [] for key in FILES}
        self.benchmark: list[dict] = []
        self.planted: list[dict] = []
        self.by_id: dict[str, tuple[str, dict]] = {}  # sample id -> (file key, row)
        self.texts: dict[str, str] = {}  # sample id -> document text as collected
        self.benchmark_by_id: dict[str, dict] = {}

    # ---- helpers ------------------------------------------------------------------------------
    def add(self, file_key: str, row: dict, text: str) -> None:
        sample_id = row["id"]
        if sample_id in self.by_id:
            raise SampleError(f"duplicate sample id {sample_id}")
        self.files[file_key].append(row)
        self.by_id[sample_id] = (file_key, row)
        self.texts[sample_id] = text

    def record_id(self, sample_id: str) -> str:
        file_key, _ = self.by_id[sample_id]
        return stable_id(FILES[file_key][1], sample_id)

    def plant(self, kind: str, sample_id: str, language: str, **details) -> None:
        file_key, _ = self.by_id[sample_id]
        self.planted.append(
            {
                "kind": kind,
                "sample_id": sample_id,
                "record_id": self.record_id(sample_id),
                "source": FILES[file_key][1],
                "file": FILES[file_key][0],
                "language": language,
                **details,
            }
        )

    # ---- documents -----------------------------------------------------------------------------
    def build(self) -> None:
        for code in LANGUAGE_ORDER:
            data = self.sources[code]
            for q in data.get("benchmark", []):
                self._check_exam(q)
                self.benchmark.append(
                    {
                        "id": q["id"],
                        "question": q["question"].strip(),
                        "options": exam_options(q["options"]),
                        "answer": f"({q['answer']})",
                        "language": code,
                        "source": BENCHMARK_SOURCE,
                    }
                )
        self.benchmark_by_id = {q["id"]: q for q in self.benchmark}
        for code in LANGUAGE_ORDER:
            data = self.sources[code]
            if data.get("apollo"):
                self._apollo_language(code, data)
            else:
                self._language(code, data)
        for code in LANGUAGE_ORDER:
            for item in self.sources[code].get("planted", []):
                self._planted(code, item)
        self._check_contamination()

    def _check_contamination(self) -> None:
        """Only the planted copies may share a long n-gram with a benchmark question or option."""
        bench: set[tuple[str, ...]] = set()
        for q in self.benchmark:
            mode = self.registry.get(q["language"]).segmentation
            for piece in [q["question"], *q["options"].split("\n")]:
                bench |= _ngrams(segment(piece, mode), CONTAMINATION_NGRAM[mode])
        copies = {p["sample_id"] for p in self.planted if p["kind"] == "benchmark_copy"}
        for sample_id, text in self.texts.items():
            file_key, row = self.by_id[sample_id]
            if file_key == "exams":
                text = " ".join([row["question"], *row["options"]])
            mode = self.registry.get(row["lang"]).segmentation
            shared = _ngrams(segment(text, mode), CONTAMINATION_NGRAM[mode]) & bench
            if shared and sample_id not in copies:
                raise SampleError(f"{sample_id} shares {sorted(shared)[0]} with a benchmark question")
            if sample_id in copies and not shared:
                raise SampleError(f"{sample_id} is planted as a benchmark copy but shares no long n-gram")

    def _check_exam(self, q: dict) -> None:
        if not 4 <= len(q["options"]) <= 5 or q["answer"] not in LETTERS[: len(q["options"])]:
            raise SampleError(f"{q['id']}: needs 4-5 options and an answer letter among them")

    def _language(self, code: str, data: dict) -> None:
        joiner = "" if self.registry.get(code).segmentation == "char" else " "
        for p in data.get("passages", []):
            text = passage_text(p, joiner)
            self._passage(KIND_FILE[p["kind"]], p["id"], code, p.get("title"), text, p.get("url"))
            if "tm" in p:
                self._tm(p)
        for q in data.get("exams", []):
            self._check_exam(q)
            self._exam(q["id"], code, q["question"].strip(), q["options"], q["answer"])
        for d in data.get("dialogues", []):
            turns = [t.strip() for t in d["turns"]]
            messages = [{"role": ("user", "assistant")[i % 2], "content": t} for i, t in enumerate(turns)]
            self.add("dialogues", {"id": d["id"], "lang": code, "messages": messages}, "\n".join(turns))
            if d.get("pii"):
                for value in d["pii"]:
                    if not any(value in t for t in turns):
                        raise SampleError(f"{d['id']}: personal data {value!r} is not in the dialogue")
                self.plant("pii", d["id"], code, values=d["pii"])
        for g in data.get("general", []):
            self.add("general", {"id": g["id"], "lang": code, "text": g["text"].strip()}, g["text"].strip())
        for w in data.get("web", []):
            text = w["text"].strip()
            if w.get("benchmark"):  # a page quoting a benchmark question verbatim
                text = text.replace("{question}", self.benchmark_by_id[w["benchmark"]]["question"])
            self.add("web_pages", {"id": w["id"], "lang": code, "url": w.get("url"), "text": text}, text)
            if w.get("junk"):
                self.plant("junk", w["id"], code, junk=w["junk"])
            if w.get("benchmark"):
                self.plant(
                    "benchmark_copy",
                    w["id"],
                    code,
                    benchmark_id=w["benchmark"],
                    benchmark_file=BENCHMARK_FILE,
                )

    def _passage(self, file_key: str, sample_id: str, code: str, title, text: str, url=None) -> None:
        row = {"id": sample_id, "lang": code, "title": title or "", "text": text, "url": url}
        self.add(file_key, row, f"{title}\n\n{text}" if title else text)

    def _exam(self, sample_id: str, code: str, question: str, options: list[str], answer: str) -> None:
        row = {"id": sample_id, "lang": code, "question": question, "options": options, "answer": answer}
        self.add("exams", row, question)

    def _tm(self, p: dict) -> None:
        """One translation unit for the title and one per sentence of a passage."""
        for lang, translations in p["tm"].items():
            if len(translations) != len(p["sentences"]) or lang not in p["title_tm"]:
                raise SampleError(f"{p['id']}: {lang} needs the title and {len(p['sentences'])} sentences")
        units = [("title", p["title"], p["title_tm"])]
        units += [
            (str(i + 1), s, {lang: p["tm"][lang][i] for lang in p["tm"]})
            for i, s in enumerate(p["sentences"])
        ]
        for suffix, english, translations in units:
            self.files["tmx"].append(
                {"tuid": f"{p['id']}:{suffix}", "segments": {"en": english} | translations}
            )

    def _apollo_language(self, code: str, data: dict) -> None:
        tier = self.registry.get(code).tier
        joiner = "" if self.registry.get(code).segmentation == "char" else " "

        def item(kind: str, conversations: list[str]) -> dict:
            return {
                "conversations": conversations,
                "source": f"{APOLLO_KEYS[kind]}_{code}",
                "class": tier,
                "language": code,
            }

        for p in data.get("passages", []):
            text = passage_text(p, joiner)
            body = f"{p['title']}\n\n{text}" if p.get("title") else text
            self.files["apollo"].append(item(p["kind"], [body]))
        for q in data.get("exams", []):
            self._check_exam(q)
            answer = f"({q['answer']}) {q['options'][LETTERS.index(q['answer'])]}"
            self.files["apollo"].append(
                item("exam", [f"{q['question'].strip()}\n{exam_options(q['options'])}", answer])
            )
        for d in data.get("dialogues", []):
            self.files["apollo"].append(item("dialogue", [t.strip() for t in d["turns"]]))
        for g in data.get("general", []):
            self.files["apollo"].append(item("general", [g["text"].strip()]))

    # ---- planted problems ----------------------------------------------------------------------------
    def _planted(self, code: str, item: dict) -> None:
        kind = item["type"]
        if kind == "exact_duplicate":
            target_file, target = self.by_id[item["of"]]
            self._copy_as(item, target_file, target, item.get("file", target_file))
            self.plant(
                "exact_duplicate", item["id"], code, of=item["of"], of_record_id=self.record_id(item["of"])
            )
        elif kind == "near_duplicate":
            target_file, target = self.by_id[item["of"]]
            edited = self._copy_as(item, target_file, target, item.get("file", target_file), item["edits"])
            score = jaccard(self.texts[item["of"]], edited, self.registry.get(code).segmentation)
            if not NEAR_DUPLICATE_MIN_JACCARD <= score < 1:
                raise SampleError(
                    f"{item['id']}: {SHINGLE}-gram Jaccard {score:.3f} with {item['of']} is not near"
                )
            self.plant(
                "near_duplicate",
                item["id"],
                code,
                of=item["of"],
                of_record_id=self.record_id(item["of"]),
                edits=item["edits"],
                jaccard=round(score, 3),
            )
        elif kind == "wrong_language":
            label, text = item["label"], item["text"].strip()
            if self.registry.confusable(label, code):
                raise SampleError(f"{item['id']}: {label} and {code} are confusable; pick another label")
            if item["file"] == "exams":
                raise SampleError("wrong-language plants are passages")
            self._passage(item["file"], item["id"], label, item.get("title"), text)
            self.plant("wrong_language", item["id"], label, true_language=code)
        elif kind == "benchmark_copy":
            q = next(b for b in self.sources[code]["benchmark"] if b["id"] == item["of"])
            self._exam(item["id"], code, q["question"].strip(), list(q["options"]), q["answer"])
            self.plant(
                "benchmark_copy",
                item["id"],
                code,
                benchmark_id=item["of"],
                benchmark_file="benchmark/medqa_sample.jsonl",
            )
        else:
            raise SampleError(f"unknown planted type {kind!r}")

    def _copy_as(self, item: dict, target_file: str, target: dict, file_key: str, edits=None) -> str:
        text = target["text"]
        for old, new in edits or []:
            if text.count(old) != 1:
                raise SampleError(f"{item['id']}: edit {old!r} must occur exactly once in {item['of']}")
            text = text.replace(old, new)
        title = target.get("title") or None
        language = target["lang"]
        if file_key in KIND_FILE.values():
            self._passage(file_key, item["id"], language, title, text)
        else:
            raise SampleError(f"{item['id']}: duplicates are planted among passages")
        return self.texts[item["id"]]

    # ---- writing ----------------------------------------------------------------------------------------
    def write(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "apollo").mkdir(exist_ok=True)
        (out / "benchmark").mkdir(exist_ok=True)
        _write_jsonl(out / "medical_books.jsonl", self.files["medical_books"])
        papers = [
            {"doc_id": r["id"], "language": r["lang"], "title": r["title"], "abstract": r["text"]}
            for r in self.files["medical_papers"]
        ]
        with open(out / "medical_papers.jsonl.gz", "wb") as fh, gzip.GzipFile("", "wb", 9, fh, mtime=0) as gz:
            gz.write(_jsonl_bytes(papers))
        _write_table(out / "guidelines.csv", ["id", "lang", "title", "text"], self.files["guidelines"], ",")
        _write_table(out / "general.tsv", ["id", "lang", "text"], self.files["general"], "\t")
        columns = ["id", "lang", "title", "text", "url"]
        table = pa.table({c: [r[c] for r in self.files["encyclopedia"]] for c in columns})
        pq.write_table(table, out / "encyclopedia.parquet", compression="zstd")
        _write_jsonl(out / "exams.jsonl", self.files["exams"])
        _write_jsonl(out / "dialogues.jsonl", self.files["dialogues"])
        web = [
            {
                "page_id": r["id"],
                "lang": r["lang"],
                **({"url": r["url"]} if r["url"] else {}),
                "text": r["text"],
            }
            for r in self.files["web_pages"]
        ]
        _write_jsonl(out / "web_pages.jsonl", web)
        (out / "medical_tm.tmx").write_text(_tmx(self.files["tmx"]), encoding="utf-8")
        apollo = json.dumps(self.files["apollo"], ensure_ascii=False, indent=1)
        (out / "apollo" / "apollo_sample.json").write_text(apollo + "\n", encoding="utf-8")
        _write_jsonl(out / "benchmark" / "medqa_sample.jsonl", self.benchmark)
        (out / "messy").mkdir(exist_ok=True)
        (out / MESSY_FILE).write_bytes(b"".join(line + b"\n" for line, _ in MESSY_LINES))
        for number, (_, reason) in enumerate(MESSY_LINES, 1):
            if reason:
                self.planted.append(
                    {
                        "kind": "reject",
                        "source": "forum_posts",
                        "file": MESSY_FILE,
                        "line": number,
                        "reason": reason,
                    }
                )
        planted = json.dumps(self.planted, ensure_ascii=False, indent=1)
        (out / "planted.json").write_text(planted + "\n", encoding="utf-8")

    def counts(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for key, rows in self.files.items():
            for row in rows:
                if key == "tmx":
                    langs = list(row["segments"])
                elif key == "apollo":
                    langs = [row["language"]]
                else:
                    langs = [row["lang"]]
                for lang in langs:
                    counts.setdefault(lang, {}).setdefault(key, 0)
                    counts[lang][key] += 1
        return counts


# A forum dump with broken lines: (raw line, reason the collection stage rejects it with, or None).
MESSY_FILE = "messy/forum_posts.jsonl"
MESSY_LINES: list[tuple[bytes, str | None]] = [
    (
        json.dumps(
            {
                "lang": "EN-us",
                "text": "I was diagnosed with coeliac disease last year. Switching to a gluten-free diet was "
                "hard at first, but my stomach pain and tiredness went away within a few months. Reading "
                "food labels carefully is now a habit, and many shops sell good gluten-free bread. My doctor "
                "still checks my iron and vitamin levels once a year, which I would recommend to anyone "
                "with the same diagnosis.",
            }
        ).encode(),
        None,
    ),
    (b'{"lang": "fr", "text": "Bonjour, j\'ai une question sur la vaccination de mon b', "malformed_json"),
    (
        '{"lang": "de", "text": "Kopfschmerzen seit drei Tagen, was tun? Grüße"}'.encode("latin-1"),
        "invalid_utf8",
    ),
    (b'{"lang": "it", "text": "   "}', "empty_text"),
    (json.dumps({"lang": "tlh", "text": "nuqneH! Qapla' batlh!"}).encode(), "unknown_language"),
    (
        json.dumps({"lang": "pt", "body": "Alguém sabe se a vacina da gripe dá febre?"}).encode(),
        "missing_field",
    ),
    (
        json.dumps(
            {
                "lang": "es",
                "text": "Mi hijo tuvo bronquiolitis a los tres meses. El pediatra nos explicó que lo importante "
                "era vigilar su respiración y que siguiera comiendo. Le lavábamos la nariz con suero varias "
                "veces al día y en una semana mejoró mucho. Ahora sabemos reconocer los signos de alarma, como "
                "la respiración muy rápida o el rechazo de las tomas, y cuándo hay que ir a urgencias.",
            },
            ensure_ascii=False,
        ).encode(),
        None,
    ),
]


def _jsonl_bytes(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_bytes(_jsonl_bytes([{k: v for k, v in r.items() if v is not None} for r in rows]))


def _write_table(path: Path, columns: list[str], rows: list[dict], delimiter: str) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([row.get(c) or "" for c in columns])
    path.write_text(buf.getvalue(), encoding="utf-8")


def _tmx(units: list[dict]) -> str:
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<tmx version="1.4">',
        '<header creationtool="medbabel build_sample.py" creationtoolversion="1" datatype="plaintext"'
        ' segtype="sentence" adminlang="en-US" srclang="en-US" o-tmf="medbabel"/>',
        "<body>",
    ]
    for unit in units:
        lines.append(f"<tu tuid={quoteattr(unit['tuid'])}>")
        for lang, text in unit["segments"].items():
            lines.append(f'  <tuv xml:lang="{TMX_LANG_TAGS[lang]}"><seg>{escape(text)}</seg></tuv>')
        lines.append("</tu>")
    lines += ["</body>", "</tmx>", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="where to write (default: data/sample/)")
    parser.add_argument("--counts", action="store_true", help="print documents per language and file")
    args = parser.parse_args(argv)
    sample = Sample(load_sources())
    sample.build()
    sample.write(args.out)
    if args.counts:
        for lang, per_file in sample.counts().items():
            print(f"{lang:<4} {sum(per_file.values()):>4}  {per_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
