"""A corpus of hostile inputs, generated at test time (the 50 MB line is never committed).

Each `Case` is one kind of bad input: the files it needs, the source entry that reads them, and
what must happen: records `rejected` with a reason (and the rest kept), records `kept` in a stated
form, or, for `Stop` cases, the run stopping with a message before any work. `build_cases(root)`
writes every file under `root` and returns the cases; tests/test_hostile_input.py runs them and
prints the table.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
import zstandard

BIG_LINE_BYTES = 50 * 1024 * 1024


@dataclass
class Case:
    """Bad input read by collection. `expect_rejects` lists (reason, line) in file order; `check_kept`
    gets the kept records of this source and returns None or what is wrong with them."""

    kind: str
    source: dict
    expect_rejects: list[tuple[str, int | None]]
    expect_kept: int
    check_kept: Callable[[list[dict]], str | None] | None = None
    outcome: str = ""  # the expectation in words, for the table


@dataclass
class Stop:
    """Bad input or configuration that must stop the run with `message` (exit code 2, no traceback)."""

    kind: str
    config: dict
    message: str
    out_is_file: bool = False
    outcome: str = ""
    extra: dict = field(default_factory=dict)
    yaml_text: str | None = None  # the config file verbatim, where a dict cannot say it (aliases, dup keys)


def _alias_bomb(good_source: dict) -> str:
    """Nine levels of ten aliases each: 10^9 strings once expanded, in a 1 KB file."""
    lines = ["llm:", "  extra_body:", '    l0: &l0 ["lol"]']
    for level in range(1, 10):
        refs = ", ".join([f"*l{level - 1}"] * 10)
        lines.append(f"    l{level}: &l{level} [{refs}]")
    return "\n".join(lines) + "\n" + yaml.safe_dump({"sources": [good_source]})


def _source(name: str, path: Path, fmt: str = "jsonl", **kw) -> dict:
    base = {"name": name, "path": str(path), "format": fmt, "source_type": "paper", "license": "CC0"}
    if "language_field" not in kw:
        base["language"] = "en"
    base.update(kw)
    return base


def _jsonl(path: Path, lines: list[bytes | dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join((json.dumps(x).encode() if isinstance(x, dict) else x) + b"\n" for x in lines))
    return path


def _texts_equal(expected: list[str]) -> Callable[[list[dict]], str | None]:
    def check(rows: list[dict]) -> str | None:
        got = sorted(r["text"] for r in rows)
        return None if got == sorted(expected) else f"texts {got!r} != {sorted(expected)!r}"

    return check


def _languages_equal(expected: list[str]) -> Callable[[list[dict]], str | None]:
    def check(rows: list[dict]) -> str | None:
        got = [r["language"] for r in sorted(rows, key=lambda r: r["text"])]
        return None if got == expected else f"languages {got} != {expected}"

    return check


def _truncated(data: bytes, keep: float = 0.6) -> bytes:
    return data[: int(len(data) * keep)]


def _many_lines(n: int) -> bytes:
    """Lines that compress poorly, so a compressed file spans several blocks (zstd blocks are 128 KB
    and a cut inside the only block would leave nothing to keep)."""
    rng = random.Random(7)
    return b"".join(
        json.dumps({"text": f"Line {i}: fever {rng.getrandbits(256):x} cough"}).encode() + b"\n"
        for i in range(n)
    )


# ---- decompression bombs: gigabytes inflated from a few hundred KB, built in seconds ----------------
# Concatenated gzip members and zstd frames decompress as one stream, so one compressed block of
# zeros is written many times over instead of compressing gigabytes.

BOMB_BLOCK = 16 << 20


def _repeat_compressed(fh, compress, block: bytes, total: int) -> None:
    member = compress(block)
    for _ in range(max(1, total // len(block))):
        fh.write(member)


def gzip_one_line_bomb(path: Path, inflated: int) -> Path:
    """`.jsonl.gz`: a good line, then one JSON line of `inflated` bytes."""
    with open(path, "wb") as fh:
        fh.write(gzip.compress(json.dumps({"text": "Fever and cough."}).encode() + b'\n{"text": "'))
        _repeat_compressed(fh, lambda b: gzip.compress(b, 9), b"a" * BOMB_BLOCK, inflated)
        fh.write(gzip.compress(b'"}\n'))
    return path


def zstd_one_line_bomb(path: Path, inflated: int) -> Path:
    """`.jsonl.zst`: a good line, then one JSON line of `inflated` bytes."""
    cctx = zstandard.ZstdCompressor(level=19)
    with open(path, "wb") as fh:
        fh.write(cctx.compress(json.dumps({"text": "Fever and cough."}).encode() + b'\n{"text": "'))
        _repeat_compressed(fh, cctx.compress, b"0" * BOMB_BLOCK, inflated)
        fh.write(cctx.compress(b'"}\n'))
    return path


def tmx_segment_bomb(path: Path, inflated: int) -> Path:
    """`.tmx.gz`: one translation unit, then a unit whose English segment holds `inflated` bytes."""
    head = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<tmx version="1.4"><header srclang="en"/><body>\n'
        '<tu><tuv xml:lang="en"><seg>Fever.</seg></tuv><tuv xml:lang="fr"><seg>Fievre.</seg></tuv></tu>\n'
        '<tu><tuv xml:lang="en"><seg>'
    )
    with open(path, "wb") as fh:
        fh.write(gzip.compress(head.encode()))
        _repeat_compressed(fh, lambda b: gzip.compress(b, 9), b"b" * BOMB_BLOCK, inflated)
        fh.write(gzip.compress(b"</seg></tuv></tu>\n</body></tmx>\n"))
    return path


def zstd_many_records_bomb(path: Path, records: int) -> Path:
    """`.jsonl.zst` of `records` valid, identical 1 KB records."""
    line = json.dumps({"text": "Fever and cough. " * 60}).encode() + b"\n"
    per_block = BOMB_BLOCK // len(line)
    cctx = zstandard.ZstdCompressor(level=19)
    with open(path, "wb") as fh:
        _repeat_compressed(fh, cctx.compress, line * per_block, records * len(line))
    return path


def build_cases(root: Path) -> list[Case]:
    """Write every hostile input under `root`; one source per case."""
    root.mkdir(parents=True, exist_ok=True)
    good = {"text": "Fever and cough for three days."}
    cases: list[Case] = []

    def add(kind, source, rejects, kept, check=None, outcome=""):
        cases.append(Case(kind, source, rejects, kept, check, outcome))

    p = _jsonl(root / "utf8.jsonl", [good, b'{"text": "caf\xe9 au lait \xff\xfe"}'])
    add("invalid UTF-8", _source("utf8", p), [("invalid_utf8", 2)], 1, outcome="rejected invalid_utf8")

    p = _jsonl(root / "nul.jsonl", [{"text": "fever\u0000 and cough"}, b'{"text": "raw \x00 byte"}'])
    add(
        "NUL bytes",
        _source("nul", p),
        [("malformed_json", 2)],
        1,
        _texts_equal(["fever and cough"]),
        "escaped NUL removed; raw NUL in JSON rejected malformed_json",
    )

    p = root / "bom.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps(good).encode() + b"\n")
    c = root / "bom.csv"
    c.write_bytes(b"\xef\xbb\xbftext,lang\r\nBOM csv row,en\r\n")
    add("BOM (JSONL)", _source("bom_jsonl", p), [], 1, _texts_equal([good["text"]]), "kept, BOM stripped")
    add(
        "BOM (CSV header)",
        _source("bom_csv", c, "csv", language_field="lang"),
        [],
        1,
        _texts_equal(["BOM csv row"]),
        "kept, header read",
    )

    c = root / "endings.csv"
    c.write_bytes(b'text\r\n"one\r\ntwo"\n"three\rfour"\r\nfive\n')
    add(
        "mixed line endings",
        _source("endings", c, "csv"),
        [],
        3,
        _texts_equal(["one\ntwo", "three\nfour", "five"]),
        "kept, newlines normalised to \\n",
    )

    p = root / "bigline.jsonl"
    with open(p, "wb") as fh:
        fh.write(json.dumps(good).encode() + b"\n")
        fh.write(b'{"text": "' + b"x" * BIG_LINE_BYTES + b'"}\n')
        fh.write(json.dumps({"text": "After the big line."}).encode() + b"\n")
    add(
        "single 50 MB line",
        _source("bigline", p),
        [("too_large", 2)],
        2,
        outcome="rejected too_large unread, lines after it kept",
    )

    p = _jsonl(root / "longdoc.jsonl", [good, {"text": "fever " * 400_000}, good])
    add("2.4 M character document", _source("longdoc", p), [("too_long", 2)], 2, outcome="rejected too_long")

    c = root / "bigfield.csv"
    with open(c, "wb") as fh:
        fh.write(b"text\nFever.\n" + b"y" * BIG_LINE_BYTES + b"\nCough.\n")
    add("50 MB CSV row", _source("bigfield", c, "csv"), [("too_large", 3)], 2, outcome="rejected too_large")

    for kind, name, path, expect in (
        ("gzip bomb: one 1 GB line", "gzbomb", gzip_one_line_bomb(root / "bomb.jsonl.gz", 1 << 30), 2),
        ("zstd bomb: one 8 GB line", "zstbomb", zstd_one_line_bomb(root / "bomb.jsonl.zst", 8 << 30), 2),
        ("gzip TMX bomb: 2 GB segment", "tmxbomb", tmx_segment_bomb(root / "bomb.tmx.gz", 2 << 30), 4),
    ):
        fmt = "tmx" if ".tmx" in path.name else "jsonl"
        add(
            f"{kind} ({path.stat().st_size // 1024} KB)",
            _source(name, path, fmt),
            [("decompression_limit", expect)],
            2 if fmt == "tmx" else 1,
            outcome="file stopped (decompression_limit), records before it kept",
        )
    p = zstd_many_records_bomb(root / "many.jsonl.zst", 4_000_000)
    add(
        f"zstd of 4 M 1 KB records ({p.stat().st_size // 1024} KB)",
        _source("manybomb", p),
        [("decompression_limit", None)],
        -1,
        outcome="file stopped (decompression_limit) after the first records",
    )

    p = _jsonl(root / "nested.jsonl", [b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", good])
    add(
        "deeply nested JSON (lines)",
        _source("nested", p),
        [("malformed_json", 1)],
        1,
        outcome="malformed_json",
    )
    a = root / "nested_array.json"
    a.write_bytes(b'[{"text": "ok item"}, {"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]")
    add(
        "deeply nested JSON (array)",
        _source("nested_array", a),
        [("malformed_json", 1)],
        1,
        outcome="malformed_json, items before kept",
    )

    p = _jsonl(
        root / "types.jsonl",
        [{"text": 42}, {"text": ["a", "b"]}, {"text": {"x": 1}}, {"body": "no text field"}, good],
    )
    add(
        "wrong field types",
        _source("types", p),
        [("bad_field", 1), ("bad_field", 2), ("bad_field", 3), ("missing_field", 4)],
        1,
        outcome="bad_field / missing_field",
    )
    p = _jsonl(root / "langtype.jsonl", [{"text": "x y z", "lang": 7}, {"text": "x y z", "lang": None}])
    add(
        "wrong type of language field",
        _source("langtype", p, language_field="lang"),
        [("unknown_language", 1), ("missing_field", 2)],
        0,
        outcome="unknown_language / missing_field",
    )

    p = _jsonl(
        root / "blank.jsonl", [{"text": "   \n\t  "}, {"text": "\u3000\u00a0\u2003"}, {"text": ""}, good]
    )
    add(
        "text of only whitespace",
        _source("blank", p),
        [("empty_text", 1), ("empty_text", 2), ("empty_text", 3)],
        1,
        outcome="empty_text",
    )

    invisible = (
        "\u200b\u200c\u200d\u2060\ufeff\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
    )
    persian = "می\u200cخواهم"  # a zero-width non-joiner inside a word is spelling, not noise
    hebrew = "\u202bמטופל עם חום\u202c"
    p = _jsonl(
        root / "invisible.jsonl",
        [{"text": invisible}, {"text": " \u200b \u202e "}, {"text": persian}, {"text": hebrew}],
    )
    add(
        "zero-width / bidi controls",
        _source("invisible", p),
        [("empty_text", 1), ("empty_text", 2)],
        2,
        _texts_equal([persian, hebrew.strip("\u202b\u202c")]),
        "only-invisible text empty_text; ZWNJ inside real text kept, bidi embeddings removed",
    )

    soup = (
        "<html><body><div class='nav'><a href='/'>Home</a> | <a href='/x'>x</a></div>" * 20 + "</body></html>"
    )
    p = _jsonl(root / "html.jsonl", [{"text": soup}])
    add(
        "HTML soup",
        _source("html", p),
        [],
        1,
        _texts_equal([soup]),
        "kept verbatim by collect (later stages quarantine it)",
    )

    data = gzip.compress(_many_lines(6000))
    g = root / "truncated.jsonl.gz"
    g.write_bytes(_truncated(data))
    cases.append(
        Case(
            "truncated gzip",
            _source("gz", g),
            [("truncated_file", None)],
            -1,
            outcome="truncated_file, lines before kept",
        )
    )
    z = root / "truncated.jsonl.zst"
    z.write_bytes(_truncated(zstandard.ZstdCompressor().compress(_many_lines(6000))))
    cases.append(
        Case(
            "truncated zstd",
            _source("zst", z),
            [("truncated_file", None)],
            -1,
            outcome="truncated_file, lines before kept",
        )
    )

    q = root / "schema.parquet"
    pq.write_table(pa.table({"body": ["a", "b"], "lang": [1, 2]}), q)
    add(
        "Parquet with a different schema",
        _source("parquet_schema", q, "parquet"),
        [("missing_field", 1), ("missing_field", 2)],
        0,
        outcome="missing_field per row",
    )
    q2 = root / "schema_types.parquet"
    pq.write_table(pa.table({"text": [1, 2]}), q2)
    add(
        "Parquet text column of ints",
        _source("parquet_types", q2, "parquet"),
        [("bad_field", 1), ("bad_field", 2)],
        0,
        outcome="bad_field per row",
    )

    t = root / "broken.tmx"
    t.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<tmx version="1.4"><header srclang="en"/><body>\n'
        '<tu><tuv xml:lang="en"><seg>Fever</seg></tuv><tuv xml:lang="fr"><seg>Fièvre</seg></tuv></tu>\n'
        '<tu><tuv xml:lang="en"><seg>Cough</seg></tuv><tuv xml:lang="fr"><seg>Tou'
    )
    add(
        "TMX with a broken XML tail",
        {"name": "tmx", "path": str(t), "format": "tmx", "source_type": "terminology", "license": "CC0"},
        [("malformed_xml", None)],
        2,
        _texts_equal(["Fever", "Fièvre"]),
        "malformed_xml, units before kept",
    )

    c = root / "ragged.csv"
    c.write_text("text,lang\nok row,en\ntoo,many,fields\nshort\n")
    add(
        "CSV with a ragged row",
        _source("ragged", c, "csv", language_field="lang"),
        [("ragged_row", 3), ("ragged_row", 4)],
        1,
        outcome="ragged_row",
    )

    codes = ["EN", "en-US", "zh-Hans", "pt_BR", "ZH-hant", "xx", "klingon", "sr-Latn"]
    p = _jsonl(
        root / "codes.jsonl", [{"text": f"text {i} {code}", "lang": code} for i, code in enumerate(codes)]
    )
    add(
        "unknown / mis-cased language codes",
        _source("codes", p, language_field="lang"),
        [("unknown_language", 6), ("unknown_language", 7)],
        6,
        _languages_equal(["en", "en", "zh", "pt", "zh", "sr"]),
        "EN,en-US->en; zh-Hans,ZH-hant->zh; pt_BR->pt; sr-Latn->sr; xx,klingon unknown_language",
    )
    return cases


def build_stops(root: Path) -> list[Stop]:
    """Configurations that must stop before any work."""
    root.mkdir(parents=True, exist_ok=True)
    good = _jsonl(root / "good.jsonl", [{"text": "Fever and cough."}])
    ok_source = _source("good", good)
    out_file = root / "out-is-a-file"
    out_file.write_text("not a directory\n")
    return [
        Stop(
            "config with unknown keys",
            {"sources": [ok_source], "collect": {"max_doc_charz": 5}},
            "collect.max_doc_charz: unknown key",
            outcome="stop: names the key",
        ),
        Stop(
            "unknown key in a source",
            {"sources": [{**ok_source, "txt_field": "body"}]},
            "sources[0].txt_field: unknown key",
            outcome="stop: names the key",
        ),
        Stop(
            "source glob matching nothing",
            {"sources": [_source("nothing", root / "missing" / "*.jsonl")]},
            "source 'nothing': path",
            outcome="stop: matches no file",
        ),
        Stop(
            "output directory that is a file",
            {"sources": [ok_source]},
            "is not a directory",
            out_is_file=True,
            outcome="stop: OUT is a file",
            extra={"out": str(out_file)},
        ),
        Stop(
            "YAML alias bomb in llm.extra_body",
            {},
            "anchors and aliases are not allowed",
            outcome="stop: names the line, no expansion",
            yaml_text=_alias_bomb(ok_source),
        ),
        Stop(
            "duplicate top-level key",
            {},
            "duplicate key 'executor' (first given on line 1)",
            outcome="stop: names the key and lines",
            yaml_text="executor: {tasks: 2}\n"
            + yaml.safe_dump({"sources": [ok_source]})
            + "executor: {tasks: 3}\n",
        ),
        Stop(
            "executor.tasks: 10^26",
            {"sources": [ok_source], "executor": {"tasks": 10**26}},
            "executor.tasks: Input should be less than or equal to 10000",
            outcome="stop: bounded task count",
        ),
        Stop(
            "executor.workers: 0",
            {"sources": [ok_source], "executor": {"workers": 0}},
            "executor.workers: Value error, 0 workers would run nothing",
            outcome="stop: names the key",
        ),
        Stop(
            "llm.cache_path climbing out of OUT",
            {"sources": [ok_source], "llm": {"cache_path": "../x.sqlite"}},
            "llm.cache_path: Value error, '../x.sqlite' climbs out of OUT",
            outcome="stop: before anything is written",
        ),
        Stop(
            "unknown language code on a source",
            {"sources": [{**ok_source, "language": "tlh"}]},
            "unknown language code 'tlh'",
            outcome="stop: unknown language",
        ),
    ]
