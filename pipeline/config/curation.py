"""The curation stages' sections: sources and collection, LLM translation and rewriting, dedup,
language ID, families, quality, decontamination and shards."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pipeline.config.base import Section, unit_interval
from pipeline.schema import SOURCE_TYPES

SourceType = Literal[SOURCE_TYPES]  # type: ignore[valid-type]
SourceFormat = Literal[
    "jsonl",
    "parquet",
    "csv",
    "tsv",
    "tmx",
    "hf",
    "apollo",
    "warc",
    "html",
    "pdf",
    "jats",
    "medline",
    "mediawiki",
    "docx",
    "epub",
]
# Formats holding whole documents (web pages, PDFs, articles, wiki pages): their text is extracted,
# their language comes from `language` or `language_detect`, never from a field.
DOCUMENT_FORMATS = ("warc", "html", "pdf", "jats", "medline", "mediawiki", "docx", "epub")


class SourceSection(Section):
    """One input of the collection stage (docs/collect.md describes every option)."""

    name: str = Field(description="unique name; recorded in each record's `source` column and its id")
    path: str = Field(
        description="file, directory or glob, relative to the project root; for `hf`, a dataset "
        "directory (save_to_disk or loadable by load_dataset) or a hub name"
    )
    format: SourceFormat
    source_type: SourceType | None = Field(
        None, description="required unless format is apollo (whose items carry it in their `source` key)"
    )
    license: str
    language: str | None = Field(
        None, description="fixed language of every record (any code the registry maps)"
    )
    language_field: str | None = Field(None, description="field holding each record's language code")
    id_field: str | None = Field(
        None, description="field with an id unique within the source; else ids come from file and position"
    )
    text_field: str = "text"
    url_field: str | None = None
    title_field: str | None = Field(
        None, description="field prepended to the text as its first line, followed by a blank line"
    )
    messages_field: str | None = Field(
        None, description="list of {role, content} (or {from, value}) turns; `text` is their rendering"
    )
    question_field: str | None = Field(
        None, description="exam question (with options_field and answer_field)"
    )
    options_field: str | None = Field(
        None, description='list of options, {"A": ...} mapping, or "(A) ...\\n(B) ..." string'
    )
    answer_field: str | None = Field(
        None, description="answer letter (C, (C)), 0-based option index, or the option's text"
    )
    csv_delimiter: str | None = Field(
        None, description="csv/tsv field separator; ',' for csv and tab for tsv"
    )
    language_detect: Literal["declared", "lid"] | None = Field(
        None,
        description="document formats without a fixed `language`: `declared` takes the document's own "
        "language (<html lang>, Content-Language, xml:lang, JATS/MEDLINE language) and falls back to "
        "language ID; `lid` always uses language ID (lid.176)",
    )
    extractor: Literal["trafilatura", "resiliparse"] = Field(
        "trafilatura", description="html/warc main-text extractor (bench/bench_extract.py compares them)"
    )
    tables: bool = Field(
        False, description="jats/medline/html: keep tables as tab-separated text (default: dropped)"
    )
    wiki_categories: list[str] = Field(
        default_factory=list,
        description="mediawiki: keep only pages in one of these categories (names without 'Category:')",
    )
    wiki_title_pattern: str | None = Field(
        None, description="mediawiki: keep only pages whose title matches this regular expression"
    )
    wiki_namespaces: list[int] = Field(
        default_factory=lambda: [0], description="mediawiki: page namespaces to read (0: articles)"
    )
    medical_gate: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="web/general sources: the quality stage keeps only documents whose medical score "
        "(the bootstrap classifier's when quality.medical_gate_bootstrap is on) is at least this; "
        "curated sources (the other types) cannot be gated",
    )
    hf_split: str = "train"
    hf_config: str | None = Field(None, description="dataset configuration name for load_dataset")
    priority: int = Field(0, description="higher wins when choosing which near-duplicate to keep")

    @model_validator(mode="after")
    def _language_given(self) -> SourceSection:
        if self.format in DOCUMENT_FORMATS:
            if self.language_field is not None:
                raise ValueError(
                    f"'{self.format}' documents have no fields: use 'language' or 'language_detect'"
                )
            if (self.language is None) == (self.language_detect is None):
                raise ValueError("give exactly one of 'language' or 'language_detect'")
        elif self.language_detect is not None:
            raise ValueError(
                f"'language_detect' applies to the document formats {', '.join(DOCUMENT_FORMATS)}"
            )
        elif self.format not in ("tmx", "apollo") and (self.language is None) == (
            self.language_field is None
        ):
            raise ValueError("give exactly one of 'language' or 'language_field'")
        if self.format != "apollo" and self.source_type is None:
            raise ValueError("'source_type' is required for this format")
        return self

    @model_validator(mode="after")
    def _fields_consistent(self) -> SourceSection:
        exam = [self.question_field, self.options_field, self.answer_field]
        if any(exam) and not all(exam):
            raise ValueError("exam sources need all of 'question_field', 'options_field' and 'answer_field'")
        if any(exam) and self.messages_field:
            raise ValueError("give either the exam fields or 'messages_field', not both")
        if self.csv_delimiter is not None:
            if self.format not in ("csv", "tsv"):
                raise ValueError("'csv_delimiter' applies to csv and tsv sources only")
            if len(self.csv_delimiter) != 1:
                raise ValueError("'csv_delimiter' must be one character")
        return self

    @model_validator(mode="after")
    def _gate_on_uncurated(self) -> SourceSection:
        if self.medical_gate is not None and self.source_type not in ("web", "general"):
            raise ValueError(
                f"'medical_gate' applies to web and general sources; '{self.source_type}' sources are curated"
            )
        return self

    @property
    def is_exam(self) -> bool:
        return self.question_field is not None


# The ApolloMoE release's source keys (`medicalExam_sw` -> exam) mapped onto the schema's source types.
APOLLO_SOURCE_TYPES = {
    "medicalBook": "book",
    "medicalPaper": "paper",
    "medicalGuideline": "guideline",
    "medicalWiki": "encyclopedia",
    "medicalEncyclopedia": "encyclopedia",
    "medicalExam": "exam",
    "medicalPatient": "dialogue",
    "medicalDialogue": "dialogue",
    "medicalWeb": "web",
    "general": "general",
    "code": "code",
    "math": "math",
}


class CollectSection(Section):
    max_doc_chars: int = Field(
        1_000_000, ge=1, description="longer documents (after rendering) are rejected as too_long"
    )
    min_doc_chars: int = Field(
        1, ge=1, description="shorter non-empty documents are rejected as too_short (empty: empty_text)"
    )
    reject_snippet_chars: int = Field(
        300, ge=0, description="how much of a rejected input is kept in rejected/ (`raw` column)"
    )
    max_record_bytes: int = Field(
        32 << 20,
        ge=1024,
        description="a line, JSON item, CSV field or TMX unit larger than this many bytes is rejected as "
        "too_large without being decoded (memory stays bounded whatever the input)",
    )
    max_decompressed_bytes: int = Field(
        1 << 40,
        ge=1,
        description="a compressed file inflating past this many bytes stops there (decompression_limit); "
        "the records before are kept",
    )
    max_compression_ratio: float = Field(
        500.0,
        ge=1,
        description="a compressed file inflating more than this many times its compressed size (judged "
        "after its first 8 MiB) stops there as a likely decompression bomb (decompression_limit)",
    )
    apollo_source_types: dict[str, SourceType] = Field(
        default_factory=lambda: dict(APOLLO_SOURCE_TYPES),
        description="ApolloMoE source key prefix -> source_type (replaces the default mapping)",
    )

    @model_validator(mode="after")
    def _bounds(self) -> CollectSection:
        if self.min_doc_chars > self.max_doc_chars:
            raise ValueError("'min_doc_chars' is larger than 'max_doc_chars'")
        return self


class ModelPrice(Section):
    input: float = Field(ge=0, description="USD per million prompt tokens")
    output: float = Field(ge=0, description="USD per million completion tokens")


class LLMSection(Section):
    base_url: str | None = Field(
        None, description="OpenAI-compatible endpoint, e.g. https://api.openai.com/v1; unset = offline"
    )
    model: str = "gpt-4o-mini"
    api_key_env: str = Field(
        "OPENAI_API_KEY",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="NAME of the environment variable holding the key (never the key itself)",
    )
    concurrency: int = Field(16, ge=1, description="requests in flight at once")
    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)
    max_retries: int = Field(5, ge=0, description="retries of a failed request (429, 5xx, timeout...)")
    backoff_base_s: float = Field(1.0, ge=0, description="first retry delay; doubles on each retry")
    backoff_max_s: float = Field(60.0, ge=0)
    timeout_s: float = Field(120.0, gt=0)
    temperature: float = 0.0
    max_tokens: int = Field(2048, ge=1)
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    extra_body: dict[str, Any] = Field(
        default_factory=dict, description="extra request fields for the server (e.g. vLLM/Ollama options)"
    )
    prices: dict[str, ModelPrice] = Field(
        default_factory=dict, description="model -> {input, output} USD per 1M tokens"
    )
    budget_usd: float | None = Field(None, gt=0, description="stop sending requests once this is spent")
    cache_path: str | None = Field(
        None,
        description="request cache (SQLite); OUT/llm_cache.sqlite when unset. A relative path lies inside "
        "OUT; an absolute one (a cache shared between runs) is the only file written outside OUT",
    )

    @field_validator("cache_path")
    @classmethod
    def _cache_inside_out(cls, value: str | None) -> str | None:
        if value is None or Path(value).expanduser().is_absolute():
            return value
        if ".." in Path(value).parts:
            raise ValueError(
                f"'{value}' climbs out of OUT; a relative cache path lies inside OUT, "
                "give an absolute path for a cache shared between runs"
            )
        return value

    @model_validator(mode="after")
    def _budget_needs_price(self) -> LLMSection:
        if self.budget_usd is not None and self.model not in self.prices:
            raise ValueError(f"budget_usd is set but prices has no entry for model '{self.model}'")
        return self


class TargetBudget(Section):
    docs: int | None = Field(None, ge=0)
    tokens: int | None = Field(None, ge=0, description="Qwen2 tokens of source text")


class TranslateSection(Section):
    enabled: bool = True
    sources: list[str] = Field(default_factory=list, description="source names to translate ([] = all)")
    source_types: list[SourceType] = Field(default_factory=list, description="[] = all")
    from_languages: list[str] = Field(default_factory=lambda: ["en"])
    targets: list[str] = Field(default_factory=list)
    budget_docs_per_target: int | None = Field(None, ge=0)
    budget_tokens_per_target: int | None = Field(None, ge=0)
    target_budgets: dict[str, TargetBudget] = Field(
        default_factory=dict, description="per-target budgets overriding the two above"
    )
    translation_memories: list[str] = Field(default_factory=list, description="TMX files (.tmx, .gz, .zip)")
    memory_from_cache: bool = Field(
        True, description="reuse accepted translations by other models/prompt versions from the cache"
    )
    glossaries: list[str] = Field(default_factory=list, description="JSONL lang/en/text or CSV files")
    max_glossary_terms: int = Field(30, ge=0)
    max_segment_chars: int = Field(2000, ge=50)
    prompt_version: str = "v1"
    length_ratio: tuple[float, float] = Field(
        (0.3, 3.0), description="output/source length bounds (unspaced scripts weighted x3)"
    )
    lid_min_score: float = Field(0.6, ge=0, le=1, description="confidence at which a wrong language rejects")


class RewriteSection(Section):
    enabled: bool = False
    sources: list[str] = Field(default_factory=list, description="source names to rewrite ([] = all)")
    source_types: list[SourceType] = Field(
        default_factory=lambda: ["book", "paper", "guideline", "encyclopedia"]
    )
    languages: list[str] = Field(default_factory=list, description="[] = all")
    min_answer_chars: int = Field(100, ge=0)
    max_docs: int | None = Field(None, ge=0)
    max_passage_chars: int = Field(3000, ge=200)
    max_passages_per_doc: int = Field(4, ge=1)
    prompt_version: str = "v1"


class DedupSection(Section):
    exact: bool = Field(
        True, description="remove documents whose normalised text (lower-cased words) is identical"
    )
    near: bool = Field(True, description="remove near-duplicates found by MinHash + LSH")
    ngram: int = Field(5, ge=1, description="shingle size in words (characters for zh, ja, th, lo)")
    bands: int = Field(14, ge=1, description="LSH bands (FineWeb: 14)")
    rows: int = Field(8, ge=1, description="MinHash permutations per band (FineWeb: 8)")
    seed: int = Field(1, description="seed of the MinHash permutations")
    verify: Literal["exact", "signature", "off"] = Field(
        "exact",
        description="how a candidate pair sharing an LSH bucket is confirmed: exact shingle-set Jaccard, "
        "the signatures' estimate, or not at all (stock datatrove)",
    )
    verify_threshold: float = unit_interval(0.7, "minimum (exact or estimated) Jaccard of a confirmed pair")
    reference: str | None = Field(
        None,
        description="directory of an earlier medbabel corpus's shards: new documents that duplicate one "
        "of its documents (exactly, or near at verify_threshold by the signatures' estimate) are removed; "
        "its per-language MinHash index is built once next to the shards and reused",
    )


class LangIdSection(Section):
    model: str = Field("lid176", description="lid model name from the registry's lid_models")
    model_path: str | None = Field(None, description="fastText model file; the registry default when unset")
    default_threshold: float = unit_interval(
        0.5, "minimum probability of the declared language (with its confusable group) to keep a record"
    )
    thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="per-language minimum, on top of the shipped per-model defaults (pipeline/text/lid_verify.py)",
    )
    contradiction_threshold: float = unit_interval(
        0.8, "for languages the model lacks: a detection of another language this confident rejects"
    )
    min_script_fraction: float = unit_interval(
        0.5, "fraction of letters that must be in the language's scripts"
    )
    min_common_word_share: float = unit_interval(
        0.08, "for languages the model lacks: minimum share of the words that are its common words"
    )
    common_word_margin: float = unit_interval(
        0.05, "... rejects when another listed language's common words are this much more (1: never)"
    )
    min_words_for_common_words: int = Field(20, ge=1, description="fewer words: not judged by common words")
    min_chars: int = Field(
        30,
        ge=0,
        description="shorter texts (Han, kana and Hangul count 3 each) are judged on their script and a "
        "confident top prediction only",
    )
    tiny_min_chars: int = Field(12, ge=0, description="shorter texts are judged on their script alone")
    tiny_contradiction: float = unit_interval(
        0.9, "texts under min_chars: a top prediction of another registry language this confident rejects"
    )
    short_text_chars: int = Field(
        100, ge=0, description="shorter texts are removed only on contrary evidence, not on a low score alone"
    )
    short_contradiction: float = unit_interval(
        0.3, "short texts: a language outside the group this probable is contrary evidence ..."
    )
    short_margin: float = unit_interval(0.2, "... when it is this much above the declared group")
    short_foreign_contradiction: float = unit_interval(
        0.5, "short texts: ... this probable for a language outside the registry"
    )
    short_min_words: int = Field(
        7,
        ge=1,
        description="short texts: this many words and not one common word of the language is contrary evidence",
    )
    long_contradiction: float = unit_interval(
        0.25, "longer texts under their threshold: a language outside the group this probable rejects ..."
    )
    long_margin: float = unit_interval(0.1, "... when it is this much above the declared group")
    absent: float = unit_interval(
        0.01, "longer texts: a declared group scoring under this (not among the top predictions) rejects"
    )
    other_min_hits: int = Field(
        3,
        ge=1,
        description="words only another group's common-word lists hold that make a text read as it ...",
    )
    other_min_share: float = unit_interval(0.2, "... when they are at least this share of its words")
    common_word_support: float = unit_interval(
        0.15,
        "a text with this share of the declared language's common words is kept whatever the model's score",
    )
    second_opinion: Literal["cld2", "none"] = Field(
        "cld2",
        description="a second language-ID model asked where the first leaves a text undecided, by language ID "
        "and the translate/rewrite output checks (CLD2 knows Hausa, Kinyarwanda, Lingala, Igbo and Northern "
        "Sotho, which lid.176 lacks); none: lid.176 alone",
    )
    top_k: int = Field(5, ge=1, description="predictions per text considered for the declared language")
    batch_size: int = Field(512, ge=1)


class FamiliesSection(Section):
    on_unassigned: Literal["error", "quarantine"] = Field(
        "error",
        description="a language with no expert in the scheme: stop with an error, or quarantine its records",
    )


class QualityRuleBounds(Section):
    """Bounds of the heuristic rules for one language (unset: the built-in per-language default).

    A signal exactly at its bound scores 0.5 (kept at the default threshold); see docs/curation.md.
    """

    max_words: float | None = None
    min_mean_word_length: float | None = None
    max_mean_word_length: float | None = None
    max_symbol_ratio: float | None = None
    max_digit_ratio: float | None = None
    min_alpha_word_ratio: float | None = None
    max_dup_line_fraction: float | None = None
    max_dup_paragraph_fraction: float | None = None
    max_top_ngram_fraction: float | None = None
    max_dup_ngram_fraction: float | None = None
    min_line_punct_ratio: float | None = None
    max_boilerplate_fraction: float | None = None
    min_stopwords: float | None = None
    max_mojibake_ratio: float | None = None


def _check_source_type_keys(mapping: dict[str, float]) -> dict[str, float]:
    unknown = sorted(set(mapping) - {"default", *SOURCE_TYPES})
    if unknown:
        raise ValueError(
            f"unknown source type key(s) {unknown}; use 'default' or one of {list(SOURCE_TYPES)}"
        )
    if "default" not in mapping:
        raise ValueError("a 'default' key is required")
    return mapping


class MedicalGateBootstrap(Section):
    """FineWeb-Edu-style labels for the medical gate: an LLM labels a sample of the gated sources'
    documents, a fastText classifier learns them and scores the rest (docs/curation.md)."""

    enabled: bool = Field(False, description="label a sample with the LLM endpoint (llm.*) and train on it")
    sample_docs: int = Field(1_000, ge=10, description="documents of the gated sources the LLM labels")
    holdout_fraction: float = unit_interval(
        0.2, "part of the labels kept out of training, for precision/recall"
    )
    max_chars: int = Field(2_000, ge=100, description="characters of each document the LLM reads")
    min_labels: int = Field(20, ge=2, description="fewer usable labels of either class: no classifier")
    epochs: int = Field(25, ge=1)
    prompt_version: str = Field("v1", description="the rubric's version (part of the cache key)")


class QualitySection(Section):
    thresholds: dict[str, float] = Field(
        default_factory=lambda: {
            "default": 0.3,
            "web": 0.5,
            "general": 0.5,
            "exam": 0.0,
            "terminology": 0.0,
            "code": 0.0,
            "math": 0.0,
        },
        description="source_type -> minimum quality_score (0.5: the published web filters' bounds; 0: keep all)",
    )
    min_words: dict[str, float] = Field(
        default_factory=lambda: {"default": 1, "web": 50},
        description="source_type -> fewest words (Gopher's 50 for web pages; scaled by chars_per_word "
        "for unsegmented scripts)",
    )
    heuristic_types: list[SourceType] = Field(
        default_factory=lambda: ["web", "general"],
        description="source types judged by every heuristic rule; the others (curated sources) only by "
        "the defect rules: boilerplate, encoding garbage, duplicated lines and paragraphs",
    )
    rules: dict[str, QualityRuleBounds] = Field(
        default_factory=dict, description="language code (or 'default') -> rule bound overrides"
    )
    medical_classifier: bool = Field(True, description="train the medical-domain fastText classifier")
    medical_positive_types: list[SourceType] = Field(
        default_factory=lambda: ["book", "paper", "encyclopedia", "guideline", "dialogue", "exam"]
    )
    medical_negative_types: list[SourceType] = Field(default_factory=lambda: ["general", "web"])
    medical_weight: dict[str, float] = Field(
        default_factory=lambda: {"default": 0.3, "general": 0.0, "terminology": 0.0},
        description="source_type -> weight w of the medical score: score = heuristic * (1 - w + w * medical)",
    )
    medical_max_train_docs: int = Field(
        2_000, ge=1, description="training documents per class and fold (smallest id hashes)"
    )
    medical_min_train_docs: int = Field(
        10, ge=1, description="fewer documents of either class in a fold: the classifier is skipped"
    )
    medical_epochs: int = Field(5, ge=1)
    medical_gate_bootstrap: MedicalGateBootstrap = Field(default_factory=lambda: MedicalGateBootstrap())
    pii: bool = Field(True, description="replace personal data with typed placeholders (<EMAIL>, <PHONE>...)")

    @model_validator(mode="after")
    def _keys(self) -> QualitySection:
        for name in ("thresholds", "min_words", "medical_weight"):
            try:
                _check_source_type_keys(getattr(self, name))
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return self


class BenchmarkRef(Section):
    """One benchmark file (read by pipeline.benchmarks, for decontamination and evaluation alike)."""

    name: str
    path: str
    format: str | None = Field(
        None,
        description="the file's layout: xmedbench, mcq_list, mcq_dict, medmcqa, medmcqa_hf, mmlu_csv, "
        "cmmlu_csv, pubmedqa, yes_no, headqa (see pipeline/benchmarks/); a missing one is an error "
        "that suggests the format the file looks like",
    )
    language: str | None = Field(None, description="the questions' language, where rows do not name it")
    source: str | None = Field(None, description="only the rows of this `source` (XMedBench files)")
    optional: bool = Field(False, description="zero usable questions is a warning, not an error")


class DecontamSection(Section):
    benchmarks: list[BenchmarkRef] = Field(
        default_factory=list,
        description="benchmark files to decontaminate against (name, path, format, language)",
    )
    ngram_words: int = Field(13, ge=1, description="n-gram length in words (space-segmented languages)")
    ngram_chars: int = Field(50, ge=1, description="n-gram length in characters (zh, ja, th, lo)")
    min_item_words: int = Field(
        10, ge=1, description="a benchmark text shorter than ngram_words is matched whole from this length"
    )
    min_item_chars: int = Field(20, ge=1, description="the same, in characters, for unsegmented scripts")


class ShardsSection(Section):
    max_rows_per_shard: int = Field(100_000, ge=1)
    row_group_size: int = Field(10_000, ge=1)
    valid_fraction: float = unit_interval(0.05)
    compression: Literal["zstd", "snappy", "gzip", "brotli", "lz4", "none"] = "zstd"
    token_batch_size: int = Field(256, ge=1, description="documents per batched tokenizer call")
    sort_buffer_rows: int = Field(
        50_000, ge=1, description="rows a task buffers per partition before writing a sorted run"
    )
