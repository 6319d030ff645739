"""translate: translate selected records into the configured target languages.

Translation memory first (TMX files, then earlier runs' accepted translations), then an
OpenAI-compatible endpoint for what memory does not cover, every output checked before it is
accepted. The stage writes only the new rows (origin `translated` or `translation_memory`, with
`parent_id`, `group_id`, the target `language`, `llm_model` and `prompt_version`). With no
endpoint configured it still completes with what memory covers and reports what is waiting.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from datatrove.data import DocumentsPipeline

from pipeline.config import Config, ConfigError, TranslateSection
from pipeline.dag import StageContext
from pipeline.llm.checks import OutputChecker
from pipeline.llm.glossary import Glossary
from pipeline.llm.memory import TranslationMemory
from pipeline.llm.prompts import translate_prompt
from pipeline.llm.session import LLMSession
from pipeline.llm.step import (
    WORK,
    LLMStep,
    Outcome,
    failure_outcome,
    llm_summary,
    nest_counters,
    report_unfinished,
)
from pipeline.llm.translation import Translator
from pipeline.record_io import RecordWriter, document_to_record, list_parquet, read_table
from pipeline.registry import Registry, load_registry
from pipeline.schema import derived_record
from pipeline.text.fasttext_lid import LanguageIdentifier

DERIVED_KIND = "tr"


class Selection:
    """Which records are translated into which targets, and the per-target budgets."""

    def __init__(self, section: TranslateSection, registry: Registry):
        self.sources = set(section.sources)
        self.source_types = set(section.source_types)
        self.from_languages = {registry.normalize_code(c) for c in section.from_languages}
        self.targets = list(dict.fromkeys(registry.normalize_code(c) for c in section.targets))
        self.docs_budget: dict[str, int | None] = {}
        self.tokens_budget: dict[str, int | None] = {}
        overrides = {registry.normalize_code(c): b for c, b in section.target_budgets.items()}
        unknown = set(overrides) - set(self.targets)
        if unknown:
            raise ConfigError(f"translate.target_budgets: {sorted(unknown)} not among translate.targets")
        for target in self.targets:
            override = overrides.get(target)
            docs = override.docs if override and override.docs is not None else section.budget_docs_per_target
            tokens = (
                override.tokens
                if override and override.tokens is not None
                else section.budget_tokens_per_target
            )
            self.docs_budget[target], self.tokens_budget[target] = docs, tokens

    def wants(self, source: str, source_type: str, language: str) -> bool:
        return (
            language in self.from_languages
            and (not self.sources or source in self.sources)
            and (not self.source_types or source_type in self.source_types)
        )

    def targets_for(self, language: str) -> list[str]:
        return [t for t in self.targets if t != language]


def count_items(input_dirs: list[Path], selection: Selection) -> int:
    """How many (record, target) items the stage will work on (token budgets not applied)."""
    per_target: Counter[str] = Counter()
    for directory in input_dirs:
        for path in list_parquet(directory):
            table = read_table(path, columns=["source", "source_type", "language"])
            for source, source_type, language in zip(
                *(table[c].to_pylist() for c in table.column_names), strict=True
            ):
                if selection.wants(source, source_type, language):
                    per_target.update(selection.targets_for(language))
    return sum(
        min(n, selection.docs_budget[t]) if selection.docs_budget[t] is not None else n
        for t, n in per_target.items()
    )


class TranslateStep(LLMStep):
    name = "🌐 translate"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.translator: Translator | None = None
        self.over_budget: Counter[str] = Counter()

    def setup(self, session: LLMSession) -> None:
        cfg, section = self.cfg, self.cfg.translate
        registry = load_registry(cfg.registry_path())
        self.selection = Selection(section, registry)
        model_path = cfg.resolve(cfg.langid.model_path) if cfg.langid.model_path else None
        lid = LanguageIdentifier(registry, cfg.langid.model, model_path)
        checker = OutputChecker(
            registry,
            lid,
            tuple(section.length_ratio),
            section.lid_min_score,
            second_opinion=cfg.langid.second_opinion == "cld2",
        )
        memory = TranslationMemory()
        for path in section.translation_memories:
            memory.load_tmx(cfg.resolve(path), registry, self.selection.from_languages)
        glossary = None
        if section.glossaries:
            glossary = Glossary(registry, set(self.selection.targets))
            for path in section.glossaries:
                glossary.load(cfg.resolve(path))
        self.translator = Translator(
            session,
            registry,
            checker,
            translate_prompt(section.prompt_version),
            memory,
            glossary,
            section.max_segment_chars,
            section.max_glossary_terms,
            section.memory_from_cache,
        )
        self.used_docs: Counter[str] = Counter()
        self.used_tokens: Counter[str] = Counter()

    def _tokens(self, text: str) -> int:
        from pipeline.text.tokenizer import qwen2_token_counter

        return qwen2_token_counter().count(text)

    def _within_budget(self, record: dict, target: str) -> bool:
        docs = self.selection.docs_budget[target]
        if docs is not None and self.used_docs[target] >= docs:
            return False
        tokens = self.selection.tokens_budget[target]
        if tokens is not None:
            n = self._tokens(record["text"])
            if self.used_tokens[target] + n > tokens:
                return False
            self.used_tokens[target] += n
        self.used_docs[target] += 1
        return True

    def items(self, docs: DocumentsPipeline) -> Iterator[tuple[dict, str]]:
        for doc in docs:
            record = document_to_record(doc)
            if not self.selection.wants(record["source"], record["source_type"], record["language"]):
                continue
            for target in self.selection.targets_for(record["language"]):
                if self._within_budget(record, target):
                    yield record, target
                else:
                    self.over_budget[target] += 1

    async def process(self, item: tuple[dict, str]) -> Outcome:
        record, target = item
        row = derived_record(record, DERIVED_KIND, target, "translated")
        try:
            result = await self.translator.translate_record(record, target)
        except Exception as exc:
            return failure_outcome(target, row, exc)
        if result.used_llm:
            row.update(llm_model=self.cfg.llm.model, prompt_version=self.cfg.translate.prompt_version)
        else:
            row.update(origin="translation_memory")
        row.update(text=result.text, messages=result.messages, exam=result.exam)
        return Outcome(target, "translated" if result.used_llm else "from_memory", rows=[row])

    def extra_counters(self) -> dict[str, float]:
        counters = {f"{WORK}/over_target_budget/{t}": n for t, n in self.over_budget.items()}
        if self.translator is not None:
            counters.update(
                {f"{WORK}/memory_segments/{t}": n for t, n in self.translator.memory_hits.items()}
            )
        return counters


def validate(cfg: Config, registry: Registry) -> None:
    """Called by the stage runner before it touches OUT/translate, and by `medbabel check-config`:
    language codes, the prompt version and the memory/glossary files."""
    section = cfg.translate
    if not section.enabled:
        return
    translate_prompt(section.prompt_version)
    Selection(section, registry)
    for setting, paths in (
        ("translation_memories", section.translation_memories),
        ("glossaries", section.glossaries),
    ):
        for path in paths:
            if not cfg.resolve(path).is_file():
                raise ConfigError(
                    f"translate.{setting}: file not found: {path} (resolved to {cfg.resolve(path)})"
                )


def run(ctx: StageContext) -> dict:
    cfg: Config = ctx.cfg
    section = cfg.translate
    if not section.enabled or not section.targets:
        why = "disabled" if not section.enabled else "no translate.targets configured"
        print(f"[translate] nothing to do: {why}")
        return {"translate": why}
    validate(cfg, ctx.registry)
    total = count_items(ctx.input_dirs(), Selection(section, ctx.registry))
    step = TranslateStep(cfg, ctx.out, ctx.name, ctx.fingerprint, total)
    ctx.run_pipeline([*ctx.input_readers(), step, RecordWriter(ctx.output_dir)], tasks=1, workers=1)
    counters = ctx.counters()
    work = nest_counters(counters, WORK)
    return {
        "llm": llm_summary(cfg, counters, section.prompt_version),
        "work": work,
        "notes": report_unfinished(ctx.name, work),
    }
