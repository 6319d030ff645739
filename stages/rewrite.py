"""rewrite: turn passages into question-answer pairs (the Apollo recipe); off unless enabled.

For each selected passage (a book, paper, guideline or encyclopedia text, cut at paragraph and
sentence boundaries into passages of at most `max_passage_chars`), one call writes a question the
passage answers, a second call answers it with the passage as a hidden reference. Answers shorter
than `min_answer_chars` are quarantined (`answer_too_short`). Rows carry `messages` (user question,
assistant answer), `origin = rewritten` and `parent_id`; the text is the question and the answer.
Same client, cache, accounting and checks as translation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pyarrow.compute as pc
from datatrove.data import DocumentsPipeline

from pipeline.config import Config
from pipeline.dag import StageContext
from pipeline.llm.cache import CacheKey, normalize_segment
from pipeline.llm.checks import OutputChecker
from pipeline.llm.prompts import answer_messages, question_messages, rewrite_prompt
from pipeline.llm.segments import chunk_text, pack, sentence_pieces
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
from pipeline.record_io import RecordWriter, Rejection, document_to_record, list_parquet, read_table
from pipeline.registry import Registry, load_registry
from pipeline.schema import derived_record
from pipeline.text.fasttext_lid import LanguageIdentifier


def passages(text: str, max_chars: int, limit: int) -> list[str]:
    """The first `limit` passages of `text`, cut at sentence boundaries to at most `max_chars`."""
    _, pieces = sentence_pieces(text, max_chars)
    return [chunk_text(chunk).strip() for chunk in pack(pieces, max_chars)][:limit]


def render_conversation(question: str, answer: str) -> str:
    """The `text` of a rewritten row: question and answer, no role labels (they would skew language ID)."""
    return f"{question}\n\n{answer}"


def wanted(cfg: Config, languages: set[str], record: dict) -> bool:
    """Plain-text records of the configured sources, source types and languages (conversations and
    exam items are already question-answer shaped)."""
    section = cfg.rewrite
    return (
        not record.get("messages")
        and not record.get("exam")
        and (not section.sources or record["source"] in section.sources)
        and (not section.source_types or record["source_type"] in section.source_types)
        and (not languages or record["language"] in languages)
    )


def count_items(cfg: Config, languages: set[str], input_dirs: list[Path]) -> int:
    """How many records the stage will work on (for the progress bar)."""
    n = 0
    for directory in input_dirs:
        for path in list_parquet(directory):
            table = read_table(path, columns=["source", "source_type", "language", "messages", "exam"])
            rows = table.select(["source", "source_type", "language"]).to_pylist()
            has_messages = pc.is_valid(table["messages"]).to_pylist()
            has_exam = pc.is_valid(table["exam"]).to_pylist()
            n += sum(
                wanted(cfg, languages, {**row, "messages": m, "exam": e})
                for row, m, e in zip(rows, has_messages, has_exam, strict=True)
            )
    return n if cfg.rewrite.max_docs is None else min(n, cfg.rewrite.max_docs)


class RewriteStep(LLMStep):
    name = "✍️ rewrite"

    def setup(self, session: LLMSession) -> None:
        cfg = self.cfg
        self.registry = load_registry(cfg.registry_path())
        model_path = cfg.resolve(cfg.langid.model_path) if cfg.langid.model_path else None
        self.checker = OutputChecker(
            self.registry,
            LanguageIdentifier(self.registry, cfg.langid.model, model_path),
            second_opinion=cfg.langid.second_opinion == "cld2",
        )
        self.prompt = rewrite_prompt(cfg.rewrite.prompt_version)
        self.languages = {self.registry.normalize_code(c) for c in cfg.rewrite.languages}

    def items(self, docs: DocumentsPipeline) -> Iterator[dict]:
        taken = 0
        for doc in docs:
            if self.cfg.rewrite.max_docs is not None and taken >= self.cfg.rewrite.max_docs:
                return
            record = document_to_record(doc)
            if wanted(self.cfg, self.languages, record):
                taken += 1
                yield record

    async def process(self, record: dict) -> Outcome:
        section = self.cfg.rewrite
        language = record["language"]
        texts = passages(record["text"], section.max_passage_chars, section.max_passages_per_doc)
        results = await asyncio.gather(*(self._passage(record, i, text) for i, text in enumerate(texts)))
        outcome = Outcome(language, "rewritten")
        unfinished = set()
        for result in results:
            if isinstance(result, Outcome):  # the passage did not finish: quarantined, waiting or stopped
                outcome.quarantined += result.quarantined
                if result.kind != "quarantined":
                    unfinished.add(result.kind)
            elif isinstance(result, tuple):
                outcome.quarantined.append(result)
            else:
                outcome.rows.append(result)
        if unfinished:
            outcome.kind = (
                "waiting_for_endpoint" if "waiting_for_endpoint" in unfinished else "stopped_by_budget"
            )
        elif not outcome.rows:
            outcome.kind = "quarantined"
        return outcome

    async def _passage(
        self, record: dict, index: int, passage: str
    ) -> dict | tuple[dict, Rejection] | Outcome:
        """A QA row, a (row, rejection) pair for a short answer, or the outcome of a failure."""
        section = self.cfg.rewrite
        language = record["language"]
        row = derived_record(
            record,
            f"qa{index}",
            language,
            "rewritten",
            llm_model=self.cfg.llm.model,
            prompt_version=section.prompt_version,
        )
        try:
            question, answer = await self._qa(passage, language)
        except Exception as exc:
            return failure_outcome(language, row, exc)
        row.update(
            text=render_conversation(question, answer),
            messages=[{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
        )
        if len(answer) < section.min_answer_chars:
            detail = f"answer has {len(answer)} characters, fewer than {section.min_answer_chars}"
            return row, Rejection("answer_too_short", detail)
        return row

    async def _qa(self, passage: str, language: str) -> tuple[str, str]:
        session = self.session
        source = normalize_segment(passage)
        pair = (language, self.registry.get(language).name)
        model, version = self.cfg.llm.model, self.prompt.version
        question = await session.ask(
            CacheKey(model, version, "question", language, language, source),
            lambda reason: question_messages(self.prompt, source, pair, reason),
            lambda output: self.checker.check_question(source, output, language),
        )
        answer = await session.ask(
            CacheKey(model, version, "answer", language, language, source, context=question),
            lambda reason: answer_messages(self.prompt, source, question, pair, reason),
            lambda output: self.checker.check_answer(source, output, language),
        )
        return question.strip(), answer.strip()


def validate(cfg: Config, registry: Registry) -> None:
    """Called by the stage runner before it touches OUT/rewrite, and by `medbabel check-config`."""
    if cfg.rewrite.enabled:
        rewrite_prompt(cfg.rewrite.prompt_version)
        for code in cfg.rewrite.languages:
            registry.normalize_code(code)


def run(ctx: StageContext) -> dict:
    cfg: Config = ctx.cfg
    section = cfg.rewrite
    if not section.enabled:
        print("[rewrite] disabled (set rewrite.enabled: true to turn passages into QA pairs)")
        return {"rewrite": "disabled"}
    validate(cfg, ctx.registry)
    languages = {ctx.registry.normalize_code(code) for code in section.languages}
    step = RewriteStep(cfg, ctx.out, ctx.name, ctx.fingerprint, count_items(cfg, languages, ctx.input_dirs()))
    ctx.run_pipeline([*ctx.input_readers(), step, RecordWriter(ctx.output_dir)], tasks=1, workers=1)
    counters = ctx.counters()
    work = nest_counters(counters, WORK)
    return {
        "llm": llm_summary(cfg, counters, section.prompt_version),
        "work": work,
        "notes": report_unfinished(ctx.name, work),
    }
