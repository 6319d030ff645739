"""The datatrove step both LLM stages are built on, and the summary they report.

An `LLMStep` turns the upstream records it selects into work items, runs them through an
`LLMSession` in chunks (up to 4 x `llm.concurrency` items of a chunk at once, requests bounded by
`llm.concurrency`), and yields the new records in input order. Every item ends in exactly one of: output, quarantine
(with its reason), waiting for an endpoint (offline), or stopped by the budget. Counts per
language land in the stage summary; the LLM accounting too.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from pipeline.config import Config
from pipeline.llm.accounting import summary_from_counters
from pipeline.llm.client import BudgetReached, EndpointError, LLMFailure
from pipeline.llm.redaction import redact
from pipeline.llm.session import CheckFailed, LLMSession, WaitingForEndpoint, cache_path, progress_bar
from pipeline.llm.translation import FieldFailure
from pipeline.record_io import QuarantineSink, Rejection, batched, record_to_document

WORK = "work"  # counter prefix: work/<outcome>/<language>


@dataclass
class Outcome:
    """What became of one work item."""

    language: str
    # translated, from_memory, rewritten; or quarantined, waiting_for_endpoint, stopped_by_budget
    kind: str
    rows: list[dict] = field(default_factory=list)
    quarantined: list[tuple[dict, Rejection]] = field(default_factory=list)


def failure_outcome(language: str, row: dict, exc: BaseException) -> Outcome:
    """Map why an item could not finish onto its outcome (quarantine reason, waiting, budget)."""
    where = ""
    if isinstance(exc, FieldFailure):
        where, exc = exc.where, exc.cause
    if isinstance(exc, EndpointError):
        raise exc
    if isinstance(exc, WaitingForEndpoint):
        return Outcome(language, "waiting_for_endpoint")
    if isinstance(exc, BudgetReached):
        return Outcome(language, "stopped_by_budget")
    if isinstance(exc, CheckFailed):
        reason, detail, text = exc.rejection.reason, exc.rejection.detail, exc.output
    elif isinstance(exc, LLMFailure):
        reason, detail, text = f"llm_{exc.kind}", exc.detail, ""
    else:
        raise exc
    detail = f"{where}: {detail}" if where else detail
    rejection = Rejection(reason, redact(detail))
    return Outcome(language, "quarantined", quarantined=[({**row, "text": redact(text)}, rejection)])


class LLMStep(PipelineStep):
    """Subclasses implement `setup(session)`, `items(docs)` and `async process(item) -> Outcome`."""

    type = "🤖 - LLM"

    def __init__(self, cfg: Config, out: Path, stage: str, stage_key: str, total: int | None = None):
        super().__init__()
        self.cfg = cfg
        self.out = Path(out)
        self.stage = stage
        self.stage_key = stage_key
        self.total = total
        self.session: LLMSession | None = None

    # ---- to implement ----------------------------------------------------------------------------
    def setup(self, session: LLMSession) -> None:
        raise NotImplementedError

    def items(self, docs: DocumentsPipeline) -> Iterator:
        raise NotImplementedError

    async def process(self, item) -> Outcome:
        raise NotImplementedError

    def extra_counters(self) -> dict[str, float]:
        return {}

    # ---- the loop ------------------------------------------------------------------------------
    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        cache_file = cache_path(self.cfg.llm, self.out)
        if rank == 0 and not cache_file.resolve().is_relative_to(Path(self.out).resolve()):
            print(f"[{self.stage}] LLM cache outside OUT (llm.cache_path): {cache_file}", file=sys.stderr)
        session = LLMSession(self.cfg.llm, cache_file, self.stage_key)
        self.session = session
        if session.client is not None and session.client.key_missing:
            print(
                f"[{self.stage}] warning: the environment variable {self.cfg.llm.api_key_env} (llm.api_key_env) "
                f"is not set; requests to {session.endpoint} go without a key (fine for local servers)",
                file=sys.stderr,
            )
        sink = QuarantineSink(self.out / self.stage / "quarantine", self.stage, self.stage, rank)
        bar = progress_bar(self.total, self.stage)
        counts: Counter[str] = Counter()

        def on_done(outcome: Outcome) -> None:
            counts[outcome.kind] += 1
            bar.update(1)
            bar.set_postfix(
                {**session.postfix(), "quarantined": counts["quarantined"]},
                refresh=False,
            )

        chunk = max(1000, 16 * self.cfg.llm.concurrency)
        try:
            self.setup(session)
            for items in batched(self.items(data or []), chunk):
                outcomes = session.run(session.gather_in_order([self.process(i) for i in items], on_done))
                for outcome in outcomes:
                    self.stat_update(f"{WORK}/{outcome.kind}/{outcome.language}")
                    for row in outcome.rows:
                        yield record_to_document(row)
                    for row, rejection in outcome.quarantined:
                        sink.add(record_to_document(row), rejection)
                        self.stat_update(
                            f"quarantined/{rejection.reason}",
                            f"quarantined/{rejection.reason}/{row['language']}",
                        )
        except BaseException:
            sink.file.abort()
            raise
        finally:
            bar.close()
            for key, value in {**session.accounting.counters(), **self.extra_counters()}.items():
                self.stat_update(key, value=value)
            session.close()
        sink.close()


def nest_counters(counters: dict[str, float], prefix: str) -> dict[str, dict]:
    """`<prefix>/<metric>/<language>` counters -> {metric: {"total": n, "per_language": {...}}}."""
    out: dict[str, dict] = {}
    for key, value in sorted(counters.items()):
        parts = key.split("/")
        if len(parts) != 3 or parts[0] != prefix:
            continue
        block = out.setdefault(parts[1], {"total": 0, "per_language": {}})
        block["total"] += int(value)
        block["per_language"][parts[2]] = int(value)
    return out


def llm_summary(cfg: Config, counters: dict[str, float], prompt_version: str) -> dict:
    llm = cfg.llm
    from pipeline.llm.client import endpoint_label

    return {
        "endpoint": endpoint_label(llm.base_url),
        "model": llm.model,
        "prompt_version": prompt_version,
        "budget_usd": llm.budget_usd,
        **summary_from_counters(counters),
    }


def report_unfinished(stage: str, work: dict) -> list[str]:
    """Messages for items left waiting for an endpoint or stopped by the budget (also printed)."""
    lines = []
    waiting = work.get("waiting_for_endpoint")
    if waiting and waiting["total"]:
        per = ", ".join(f"{lang}: {n}" for lang, n in waiting["per_language"].items())
        lines.append(
            f"[{stage}] {waiting['total']} item(s) need an LLM endpoint ({per}) and were not produced. "
            "Set llm.base_url (and llm.model, llm.api_key_env) in the config to an OpenAI-compatible "
            f"endpoint (OpenAI, vLLM, SGLang, Ollama, llama.cpp; see docs/llm.md), then re-run `make {stage}`."
        )
    stopped = work.get("stopped_by_budget")
    if stopped and stopped["total"]:
        lines.append(
            f"[{stage}] llm.budget_usd was reached: {stopped['total']} item(s) were not produced. "
            "Everything finished so far is in the output and the cache; raise the budget and re-run "
            f"`make {stage}` to continue (finished requests are not sent again)."
        )
    for line in lines:
        print(line, file=sys.stderr)
    return lines
