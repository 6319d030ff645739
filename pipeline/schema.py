"""The record schema: the one contract between the curation stages and training.

Every stage reads and writes exactly these columns; the writer refuses a row that does not fit.
Bump SCHEMA_VERSION on any change and describe it in docs/schema.md.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

SCHEMA_VERSION = 3  # 2: provenance columns source_id, source_file, source_position; mojibake_ratio;
# 3: `family` is the registry family, `expert` the scheme's expert

SOURCE_TYPES = (
    "book",
    "paper",
    "encyclopedia",
    "guideline",
    "dialogue",
    "exam",
    "web",
    "general",
    "code",
    "math",
    "terminology",
)
ORIGINS = ("original", "translated", "translation_memory", "rewritten")
SPLITS = ("train", "validation")  # the names the Hugging Face Hub and `datasets` use

MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string())])
EXAM_TYPE = pa.struct(
    [("question", pa.string()), ("options", pa.list_(pa.string())), ("answer", pa.string())]
)

# Named quality signals kept next to `quality_score` (null until the quality stage fills them).
QUALITY_SIGNALS = (
    ("n_words", "words (characters for unsegmented scripts)"),
    ("mean_word_length", "mean word length in characters"),
    ("symbol_ratio", "'#' or ellipses per word, whichever is higher (Gopher)"),
    ("digit_ratio", "digits per non-space character"),
    ("alpha_word_ratio", "fraction of whitespace-separated words holding a letter (Gopher)"),
    ("dup_line_fraction", "fraction of lines repeating an earlier line"),
    ("dup_paragraph_fraction", "fraction of characters in paragraphs repeating an earlier one"),
    ("top_ngram_fraction", "fraction of word characters covered by the most frequent word 3-gram"),
    ("dup_ngram_fraction", "fraction of word characters inside repeated word 5-grams"),
    ("line_punct_ratio", "fraction of lines ending in terminal punctuation"),
    ("boilerplate_fraction", "fraction of lines that are boilerplate"),
    ("stopword_ratio", "fraction of words that are stop words (null where no list exists)"),
    ("mojibake_ratio", "sequences of UTF-8 read in a legacy encoding ('Ã©', 'â€™'; ftfy) per word"),
    ("medical_score", "probability of the medical domain from the run-time fastText classifier"),
)
QUALITY_SIGNALS_TYPE = pa.struct([(name, pa.float32()) for name, _ in QUALITY_SIGNALS])


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    nullable: bool
    doc: str


COLUMNS: tuple[Column, ...] = (
    Column("id", pa.string(), False, "stable unique id; a translation's id derives from its parent's"),
    Column(
        "text", pa.string(), False, "plain document text, or the rendered conversation for `messages` rows"
    ),
    Column("messages", pa.list_(MESSAGE_TYPE), True, "list of {role, content} turns; null for plain text"),
    Column("exam", EXAM_TYPE, True, "multiple-choice structure {question, options, answer} for exam items"),
    Column("language", pa.string(), False, "registry language code (lang_families.yaml)"),
    Column("source", pa.string(), False, "name of the configured source the record came from"),
    Column("source_type", pa.string(), False, f"one of {', '.join(SOURCE_TYPES)}"),
    Column("origin", pa.string(), False, f"one of {', '.join(ORIGINS)}"),
    Column("parent_id", pa.string(), True, "id of the record this one was translated/rewritten from"),
    Column(
        "group_id",
        pa.string(),
        True,
        "links parallel records (a TMX unit's languages, a document's translations)",
    ),
    Column("license", pa.string(), False, "license of the source"),
    Column("url", pa.string(), True, "where the text came from, when known"),
    Column("source_id", pa.string(), True, "the source's own id of the item (its `id_field`, a TMX `tuid`)"),
    Column(
        "source_file",
        pa.string(),
        True,
        "input file, relative to the source's root (`hf:<path>:<split>` for a Hugging Face dataset)",
    ),
    Column(
        "source_position",
        pa.int64(),
        True,
        "where in `source_file`, 1-based: line (JSON Lines, CSV/TSV), item (JSON array), row (Parquet,"
        " Hugging Face), translation unit (TMX)",
    ),
    Column("llm_model", pa.string(), True, "model that produced a translated/rewritten record"),
    Column("prompt_version", pa.string(), True, "prompt version that produced a translated/rewritten record"),
    Column(
        "lid_language", pa.string(), True, "language detected by language ID (registry code, or raw label)"
    ),
    Column("lid_score", pa.float32(), True, "language-ID confidence of `lid_language`"),
    Column("family", pa.string(), True, "language family of `language` in the registry (lang_families.yaml)"),
    Column("expert", pa.string(), True, "expert name of the language in the configured expert scheme"),
    Column("expert_id", pa.int32(), True, "expert index of the language in the configured scheme"),
    Column("tier", pa.string(), True, "major | minor"),
    Column("quality_score", pa.float32(), True, "combined heuristic + medical-domain score in [0, 1]"),
    Column("quality_signals", QUALITY_SIGNALS_TYPE, True, "the named signals behind `quality_score`"),
    Column(
        "dup_cluster_id", pa.string(), True, "id of the kept document of this record's near-duplicate cluster"
    ),
    Column("dup_cluster_size", pa.int32(), True, "size of that cluster (1 when unique)"),
    Column("n_tokens", pa.int32(), True, "Qwen2 tokenizer token count of `text`"),
    Column("split", pa.string(), True, "train | validation (by a hash of the root parent id)"),
)
COLUMN_NAMES = tuple(c.name for c in COLUMNS)
REQUIRED = frozenset(c.name for c in COLUMNS if not c.nullable)

RECORD_SCHEMA = pa.schema(
    [pa.field(c.name, c.type, nullable=c.nullable) for c in COLUMNS],
    metadata={"medbabel_schema_version": str(SCHEMA_VERSION)},
)

QUARANTINE_COLUMNS: tuple[Column, ...] = (
    Column("quarantine_stage", pa.string(), False, "stage that set the record aside"),
    Column("quarantine_reason", pa.string(), False, "short reason code, e.g. wrong_language, near_duplicate"),
    Column(
        "quarantine_detail",
        pa.string(),
        True,
        "human-readable detail, e.g. 'declared sw, detected en (0.97)'",
    ),
)
QUARANTINE_SCHEMA = pa.schema(
    [*RECORD_SCHEMA, *(pa.field(c.name, c.type, nullable=c.nullable) for c in QUARANTINE_COLUMNS)],
    metadata={"medbabel_schema_version": str(SCHEMA_VERSION)},
)

# Input that could not become a record at all (collection): where it was and why.
REJECT_SCHEMA = pa.schema(
    [
        pa.field("file", pa.string(), nullable=False),
        pa.field("line", pa.int64(), nullable=True),
        pa.field("source", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=True),
        pa.field("raw", pa.string(), nullable=True),
    ],
    metadata={"medbabel_schema_version": str(SCHEMA_VERSION)},
)

_ENUMS = {"source_type": SOURCE_TYPES, "origin": ORIGINS, "split": SPLITS, "tier": ("major", "minor")}


class SchemaError(ValueError):
    """A row that does not fit the record schema."""


def record_problems(row: dict) -> list[str]:
    """Why `row` does not fit the schema (empty list when it fits). Types are checked by pyarrow."""
    problems = []
    unknown = set(row) - set(COLUMN_NAMES) - {c.name for c in QUARANTINE_COLUMNS}
    if unknown:
        problems.append(f"unknown column(s) {sorted(unknown)}")
    for name in REQUIRED:
        value = row.get(name)
        if value is None or (isinstance(value, str) and not value and name != "text"):
            problems.append(f"'{name}' is required")
    for name, allowed in _ENUMS.items():
        value = row.get(name)
        if value is not None and value not in allowed:
            problems.append(f"'{name}'={value!r} is not one of {allowed}")
    return problems


def empty_record(**values) -> dict:
    """A row with every column present (nulls where not given)."""
    row = dict.fromkeys(COLUMN_NAMES)
    row.update(values)
    return row


def _plain_problems(row: dict, schema: pa.Schema) -> list[str]:
    """Unknown or missing required columns, for schemas that are not record-shaped (REJECT_SCHEMA)."""
    problems = []
    unknown = set(row) - set(schema.names)
    if unknown:
        problems.append(f"unknown column(s) {sorted(unknown)}")
    problems += [f"'{f.name}' is required" for f in schema if not f.nullable and row.get(f.name) is None]
    return problems


def rows_to_table(rows: list[dict], schema: pa.Schema = RECORD_SCHEMA) -> pa.Table:
    """Validate rows and build a table; raises SchemaError naming the row id and the problem.

    Built column-wise and checked with Arrow kernels (this runs for every record a stage writes);
    only when a check fails are the rows walked one by one to name the first offending record."""
    allowed = set(schema.names)
    unknown = set().union(*map(dict.keys, rows)) - allowed if rows else set()
    try:
        table = pa.Table.from_pydict({name: [row.get(name) for row in rows] for name in schema.names}, schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise SchemaError(f"records do not fit schema v{SCHEMA_VERSION}: {exc}") from None
    if unknown or not _fits(table, schema):
        record_shaped = "id" in schema.names and "language" in schema.names
        for row in rows:
            problems = record_problems(row) if record_shaped else _plain_problems(row, schema)
            if problems:
                raise SchemaError(
                    f"record {row.get('id')!r} does not fit schema v{SCHEMA_VERSION}: {'; '.join(problems)}"
                )
    return table


def _fits(table: pa.Table, schema: pa.Schema) -> bool:
    """Required columns set (and non-empty strings, `text` excepted); enum columns within their values."""
    for field in schema:
        column = table[field.name]
        if not field.nullable:
            if column.null_count:
                return False
            empty_string = (
                pa.types.is_string(field.type)
                and field.name != "text"
                and len(column)
                and pc.any(pc.equal(pc.utf8_length(column), 0)).as_py()
            )
            if empty_string:
                return False
        allowed = _ENUMS.get(field.name)
        if (
            allowed is not None
            and len(column) > column.null_count
            and not pc.all(pc.is_in(column.drop_null(), value_set=pa.array(allowed))).as_py()
        ):
            return False
    return True


def stable_id(*parts: str) -> str:
    """Deterministic id from its parts (source name, file, line...); 16 hex chars of sha1."""
    return hashlib.sha1("\x1f".join(parts).encode("utf-8")).hexdigest()[:16]


def derived_id(parent_id: str, kind: str, language: str) -> str:
    """Id of a record derived from another (a translation, a rewrite): parent id + kind + language."""
    return f"{parent_id}-{kind}-{language}"


def derived_record(parent: dict, kind: str, language: str, origin: str, **values) -> dict:
    """A record made from `parent` (a translation, a rewrite): id derived from the parent's, provenance
    carried over, and linked to the parent's group so it lands in the same train/validation split."""
    return empty_record(
        id=derived_id(parent["id"], kind, language),
        text="",
        language=language,
        source=parent["source"],
        source_type=parent["source_type"],
        origin=origin,
        parent_id=parent["id"],
        group_id=parent.get("group_id") or parent["id"],
        license=parent["license"],
        url=parent.get("url"),
        source_id=parent.get("source_id"),
        source_file=parent.get("source_file"),
        source_position=parent.get("source_position"),
        **values,
    )


def schema_markdown() -> str:
    """The schema as a Markdown table (docs/schema.md is generated from this; a test keeps them in sync)."""

    def table(columns: tuple[Column, ...]) -> list[str]:
        rows = ["| column | type | nullable | meaning |", "|---|---|---|---|"]
        rows += [f"| `{c.name}` | `{c.type}` | {'yes' if c.nullable else 'no'} | {c.doc} |" for c in columns]
        return rows

    lines = [
        f"# Record schema (version {SCHEMA_VERSION})",
        "",
        "Generated from `pipeline/schema.py` by `python -m pipeline schema-doc`; do not edit by hand.",
        "Every stage reads and writes these columns; the writer refuses rows that do not fit.",
        "",
        *table(COLUMNS),
        "",
        "Provenance: `source`, `source_file` and `source_position` name the input a record was read from"
        " (with `source_id` when the source has its own ids), for kept and quarantined records alike;"
        " a translated or rewritten record carries its parent's.",
        "",
        "## Quality signals (`quality_signals` struct fields)",
        "",
        "| signal | meaning |",
        "|---|---|",
        *(f"| `{name}` | {doc} |" for name, doc in QUALITY_SIGNALS),
        "",
        "## Quarantine files",
        "",
        "Records a stage sets aside keep every column above plus:",
        "",
        *table(QUARANTINE_COLUMNS),
        "",
        "## Collection rejects",
        "",
        "Input that cannot become a record (`OUT/collect/rejected/`): "
        + ", ".join(f"`{f.name}`" for f in REJECT_SCHEMA)
        + ".",
        "",
    ]
    return "\n".join(lines)
