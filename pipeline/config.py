"""Run configuration: one YAML file per run, validated at load.

Every option lives here, with its default. Unknown keys are errors, and every error names the file
and the key path (`sources[2].format`). `configs/example_full.yaml` shows every option.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline import yaml_files
from pipeline.schema import SOURCE_TYPES

SourceType = Literal[SOURCE_TYPES]  # type: ignore[valid-type]
SourceFormat = Literal["jsonl", "parquet", "csv", "tsv", "tmx", "hf", "apollo"]


def unit_interval(default: float, description: str | None = None) -> Any:
    """A config field holding a fraction or probability, in [0, 1]."""
    return Field(default, ge=0.0, le=1.0, description=description)


class ConfigError(ValueError):
    """The config file is invalid; the message names the file and the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunSection(Section):
    name: str = "medbabel"
    seed: int = 0
    warn_removed_share: float = unit_interval(
        0.05, "a filtering stage that removes more than this share of one language of one source warns"
    )


class RegistrySection(Section):
    path: str | None = Field(None, description="registry file; the project's lang_families.yaml when unset")
    scheme: str | None = Field(None, description="expert scheme; the registry's default_scheme when unset")


class SlurmSection(Section):
    partition: str = "cpu"
    time: str = Field("04:00:00", description="time limit of each array job")
    cpus_per_task: int = Field(1, ge=1)
    mem_per_cpu_gb: float = Field(2.0, gt=0)
    qos: str | None = None
    sbatch_args: dict[str, str] = Field(default_factory=dict, description="extra #SBATCH directives")
    condaenv: str | None = Field(None, description="conda environment the jobs activate")
    venv_path: str | None = Field(None, description="venv the jobs activate; the running one when unset")
    env_command: str | None = Field(None, description="shell lines replacing the activation entirely")
    max_array_size: int = Field(1001, description="the cluster's MaxArraySize; more tasks split into jobs")
    poll_s: float = Field(30.0, gt=0, description="how often the waiting process checks task completions")


class RaySection(Section):
    address: str | None = Field(
        None, description="ray cluster address ('auto', 'host:port'); a local cluster is started when unset"
    )
    cpus_per_task: int = Field(1, ge=1)
    mem_per_task_gb: float = Field(2.0, gt=0)
    time_s: int | None = Field(None, description="kill and retry a task running longer than this")


class ExecutorSection(Section):
    kind: Literal["local", "ray", "slurm"] = "local"
    tasks: int = Field(2, ge=1, description="how many tasks (input shards) each stage is split into")
    workers: int = Field(-1, description="tasks running at once (-1: all); on Slurm the array's %limit")
    slurm: SlurmSection = SlurmSection()
    ray: RaySection = RaySection()


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
    hf_split: str = "train"
    hf_config: str | None = Field(None, description="dataset configuration name for load_dataset")
    priority: int = Field(0, description="higher wins when choosing which near-duplicate to keep")

    @model_validator(mode="after")
    def _language_given(self) -> SourceSection:
        if self.format not in ("tmx", "apollo") and (self.language is None) == (self.language_field is None):
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
        None, description="request cache (SQLite); OUT/llm_cache.sqlite when unset"
    )

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


class LangIdSection(Section):
    model: str = Field("lid176", description="lid model name from the registry's lid_models")
    model_path: str | None = Field(None, description="fastText model file; the registry default when unset")
    default_threshold: float = unit_interval(
        0.5, "minimum probability of the declared language (with its confusable group) to keep a record"
    )
    thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="per-language minimum, on top of the shipped per-model defaults (pipeline/lid_verify.py)",
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
    min_chars: int = Field(30, ge=0, description="shorter texts are too short to judge and are kept")
    short_text_chars: int = Field(
        100, ge=0, description="shorter texts are removed only on contrary evidence, not on a low score alone"
    )
    short_contradiction: float = unit_interval(
        0.3, "short texts: a language outside the group this probable is contrary evidence ..."
    )
    short_margin: float = unit_interval(0.2, "... when it is this much above the declared group")
    short_min_words: int = Field(
        6,
        ge=1,
        description="short texts: this many words and not one common word of the language is contrary evidence",
    )
    common_word_support: float = unit_interval(
        0.2,
        "a text with this share of the declared language's common words is kept whatever the model's score",
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
    name: str
    path: str
    language: str | None = None
    source: str | None = None


class DecontamSection(Section):
    benchmarks: list[BenchmarkRef] = Field(
        default_factory=list,
        description="MCQ JSONL files (question, options, answer) to decontaminate against",
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


class TrainSection(Section):
    """Post-MoE training (moe_train/): upcycling, hybrid-k routing, packed data, the loop, export."""

    # model
    model: str = Field(
        "tiny",
        description="a preset (tiny, qwen2-0.5b, qwen2-1.5b: random init), a local dense Qwen2 checkpoint "
        "dir (upcycled) or a Qwen2-MoE checkpoint dir (trained further)",
    )
    tokenizer: str | None = Field(
        None, description="tokenizer dir; default: the checkpoint's own, else the bundled Qwen2 tokenizer"
    )
    moe_layers: int = Field(2, ge=1, description="how many of the last decoder layers become MoE")
    top_k: int = Field(2, ge=1)
    norm_topk_prob: bool = Field(False, description="renormalise the top-k weights (the paper: false)")
    shared_expert: bool = Field(False, description="add a shared 'general' expert to each MoE layer")
    router_aux_loss_coef: float = Field(0.0, ge=0, description="load-balancing loss (the paper: none)")
    router_supervision_coef: float = Field(
        0.0, ge=0, description="cross-entropy of router logits toward the family expert"
    )
    hybrid_routing: bool = Field(True, description="force each token's family expert into its top-k")
    # data
    seq_len: int = Field(4096, ge=8)
    languages: list[str] = Field(default_factory=list, description="[] = every language in the shards")
    families: list[str] = Field(default_factory=list, description="[] = every family")
    source_types: list[str] = Field(default_factory=list, description="[] = every source type")
    source_priorities: dict[str, float] = Field(
        default_factory=dict,
        description="source name or type -> priority; lower priorities come first in each epoch",
    )
    source_repeats: dict[str, float] = Field(
        default_factory=dict, description="source name or type -> times seen per epoch (fractions allowed)"
    )
    chat_template: str = "User:{q}\nAssistant:{a}<|endoftext|>"
    # optimisation
    micro_batch_size: int = Field(1, ge=1, description="sequences per GPU per micro-step")
    grad_accum: int = Field(1, ge=1)
    max_steps: int = Field(100, ge=1)
    lr: float = Field(3e-4, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup_steps: int = Field(10, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = Field(1.0, gt=0)
    # evaluation, logging, checkpoints
    eval_every: int = Field(50, ge=1)
    eval_batches: int = Field(8, ge=1, description="validation micro-batches per evaluation")
    log_every: int = Field(1, ge=1)
    checkpoint_every: int = Field(50, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    export_dtype: Literal["bfloat16", "float32"] = "bfloat16"
    # speed
    device: str = Field("auto", description="auto (cuda when available), cuda, cpu")
    attention: Literal["auto", "sdpa", "varlen"] = Field(
        "auto", description="auto: FlashAttention varlen on CUDA, SDPA with a block-diagonal mask on CPU"
    )
    experts_implementation: Literal["grouped_mm", "eager", "batched_mm"] = "grouped_mm"
    bf16_params: bool = Field(
        True,
        description="one CUDA device: bf16 parameters compute, float32 master weights train "
        "(false: float32 parameters under bf16 autocast); several processes use FSDP2 mixed precision",
    )
    compile: bool = False
    activation_checkpointing: bool = False
    loss_chunk_size: int = Field(4096, ge=1, description="tokens per chunk of the fused cross-entropy")


class EvalSection(Section):
    model: str | None = Field(
        None, description="checkpoint directory to evaluate; OUT/train/export when unset"
    )
    benchmarks: list[BenchmarkRef] = Field(
        default_factory=list, description="XMedBench/ApolloMoE-format MCQ files (.jsonl or .jsonl.gz)"
    )
    modes: list[Literal["loglik", "generate"]] = Field(default_factory=lambda: ["loglik", "generate"])
    shots: int = Field(3, ge=0, description="solved examples per prompt, drawn from the same source")
    max_prompt_tokens: int = Field(3072, description="drop the last examples while a prompt is longer")
    max_new_tokens: int = Field(
        32, description="generate mode: decoding stops earlier at the first full line"
    )
    max_questions_per_language: int | None = Field(None, description="seeded subsample per language")
    batch_size: int = Field(8, ge=1)
    device: str = Field("auto", description="auto (CUDA when present, else CPU), cpu, cuda, cuda:1 ...")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bfloat16 on GPU, float32 on CPU"
    )
    perplexity: bool = Field(True, description="validation loss per language/family on the valid shards")
    valid_max_docs_per_language: int | None = Field(200, description="valid documents scored per language")
    valid_max_tokens: int = Field(1024, description="each valid document is truncated to this many tokens")
    routing: bool = Field(True, description="routing statistics and heatmaps of the MoE layers")
    routing_min_tokens: int = Field(
        1, description="languages with fewer routed tokens are left out of divergences"
    )
    spread_steps: int = Field(30, ge=0, description="`routing_analysis spread`: training steps")
    spread_lr: float = Field(1e-3, description="`routing_analysis spread`: peak learning rate (train.lr)")
    spread_seq_len: int = Field(
        256, description="`routing_analysis spread`: packed sequence length (train.seq_len)"
    )


class ReportSection(Section):
    title: str = "medbabel run report"
    max_curve_points: int = Field(2000, description="training curves are thinned to at most this many points")


class Config(Section):
    run: RunSection = RunSection()
    registry: RegistrySection = RegistrySection()
    executor: ExecutorSection = ExecutorSection()
    sources: list[SourceSection] = Field(default_factory=list)
    collect: CollectSection = CollectSection()
    llm: LLMSection = LLMSection()
    translate: TranslateSection = TranslateSection()
    rewrite: RewriteSection = RewriteSection()
    dedup: DedupSection = DedupSection()
    langid: LangIdSection = LangIdSection()
    families: FamiliesSection = FamiliesSection()
    quality: QualitySection = QualitySection()
    decontam: DecontamSection = DecontamSection()
    shards: ShardsSection = ShardsSection()
    train: TrainSection = TrainSection()
    eval: EvalSection = EvalSection()
    report: ReportSection = ReportSection()

    # Set by load_config: where the file lives (relative paths resolve against it).
    base_dir: Path = Field(default=Path("."), exclude=True)
    source_file: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _unique_source_names(self) -> Config:
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate source name(s): {dupes}")
        return self

    def resolve(self, path: str | Path) -> Path:
        """A path from the config, resolved against the config file's directory's project root."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    def registry_path(self) -> Path:
        from pipeline.registry import DEFAULT_REGISTRY_PATH

        return self.resolve(self.registry.path) if self.registry.path else DEFAULT_REGISTRY_PATH

    def section_hash(self, *keys: str) -> str:
        """Stable hash of some top-level sections, used to decide which stages a config change affects."""
        dumped = self.model_dump(mode="json")
        payload = json.dumps({k: dumped.get(k) for k in keys}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _format_errors(path: Path, exc: ValidationError) -> str:
    lines = [f"{path}: invalid config"]
    for err in exc.errors():
        loc = ""
        for part in err["loc"]:
            loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"  {loc or '(top level)'}: {msg}")
    return "\n".join(lines)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Load and validate a YAML config. Relative paths in it resolve against the project root
    (the directory holding `lang_families.yaml` above the config), else the config's directory."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml_files.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(path, exc)) from None
    return cfg.model_copy(update={"base_dir": _project_root(path.resolve()), "source_file": path.resolve()})


def _project_root(config_path: Path) -> Path:
    for parent in config_path.parents:
        if (parent / "lang_families.yaml").is_file():
            return parent
    return config_path.parent
