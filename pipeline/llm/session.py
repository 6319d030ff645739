"""What both LLM stages share: checked answers through the cache, the client and the accounting.

`LLMSession.ask(key, build, check)` returns an answer that passed `check`: replayed from the
request cache when this exact request completed before (no request sent), otherwise requested
from the endpoint. An answer that fails its check is asked once more with the reason in the
prompt; a second failure raises `CheckFailed`. Offline (no `llm.base_url`), a request that would
be needed raises `WaitingForEndpoint` instead of being skipped silently. Identical requests in
flight at the same time are sent once.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

from pipeline.config import LLMSection
from pipeline.llm.accounting import Accounting
from pipeline.llm.cache import CacheKey, RequestCache
from pipeline.llm.client import LLMClient, endpoint_label
from pipeline.llm.redaction import redact
from pipeline.record_io import Rejection

T = TypeVar("T")


class WaitingForEndpoint(Exception):
    """The answer is not cached and no endpoint is configured."""


class CheckFailed(Exception):
    """The answer failed its check twice (the second time with the reason in the prompt)."""

    def __init__(self, rejection: Rejection, output: str):
        super().__init__(f"{rejection.reason}: {rejection.detail}")
        self.rejection = rejection
        self.output = output


def cache_path(llm: LLMSection, out: Path) -> Path:
    """OUT/llm_cache.sqlite, or `llm.cache_path`: relative to OUT, or absolute (shared between runs)."""
    return Path(out) / Path(llm.cache_path or "llm_cache.sqlite").expanduser()


class LLMSession:
    def __init__(self, llm: LLMSection, cache_file: Path, stage_key: str):
        self.llm = llm
        self.cache = RequestCache(cache_file)
        price = llm.prices.get(llm.model)
        self.accounting = Accounting(
            price.input if price else None,
            price.output if price else None,
            llm.budget_usd,
            spent_before=self.cache.spent(stage_key),
            # A usable reply is stored by `_answer` right after (no await in between): one commit.
            on_usage=lambda language, p, c, cost, usable: self.cache.add_usage(
                stage_key, language, p, c, cost, commit=not usable
            ),
        )
        self.loop = asyncio.new_event_loop()
        self.client = LLMClient(llm, self.accounting) if llm.base_url else None
        self._inflight: dict[str, asyncio.Future] = {}

    @property
    def online(self) -> bool:
        return self.client is not None

    @property
    def endpoint(self) -> str | None:
        return endpoint_label(self.llm.base_url)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def close(self) -> None:
        if self.client is not None:
            self.loop.run_until_complete(self.client.close())
        self.loop.close()
        self.cache.close()

    async def ask(
        self,
        key: CacheKey,
        build: Callable[[str | None], list[dict]],
        check: Callable[[str], Rejection | None],
    ) -> str:
        """A checked answer; `build(reason)` makes the messages (reason: why the first try failed)."""
        output, problem = await self._answer(key, build, None, check)
        if problem is None:
            return output
        output, second = await self._answer(
            key.with_context(f"retry:{problem.reason}"), build, problem, check
        )
        if second is None:
            return output
        raise CheckFailed(Rejection(second.reason, redact(second.detail or "")), output)

    async def _answer(
        self,
        key: CacheKey,
        build: Callable[[str | None], list[dict]],
        previous: Rejection | None,
        check: Callable[[str], Rejection | None],
    ) -> tuple[str, Rejection | None]:
        cached = self.cache.get(key)
        if cached is not None:
            self.accounting.cache_hit(key.language)
            return cached.output, check(cached.output)
        if self.client is None:
            raise WaitingForEndpoint()
        digest = key.digest
        if digest in self._inflight:
            return await asyncio.shield(self._inflight[digest])
        future = self.loop.create_future()
        self._inflight[digest] = future
        try:
            completion = await self.client.complete(
                build(previous.reason if previous else None), key.language
            )
            problem = check(completion.text)
            if problem is not None:
                self.accounting.failure(key.language, problem.reason)
            self.cache.put(
                key, completion.text, problem is None, completion.prompt_tokens, completion.completion_tokens
            )
            future.set_result((completion.text, problem))
            return completion.text, problem
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here: only concurrent duplicates of this request await it
            raise
        finally:
            del self._inflight[digest]

    async def gather_in_order(
        self,
        coroutines: list[Coroutine[Any, Any, T]],
        on_done: Callable[[T], None] | None = None,
        in_flight: int | None = None,
    ) -> list[T]:
        """Run the coroutines concurrently, at most `in_flight` at a time (default: 4 x concurrency,
        enough to keep every request slot busy without doing all the items' preparation up front);
        results in input order; `on_done` sees each as it ends."""
        gate = asyncio.Semaphore(in_flight or 4 * self.llm.concurrency)

        async def tracked(coroutine: Coroutine[Any, Any, T]) -> T:
            async with gate:
                result = await coroutine
            if on_done is not None:
                on_done(result)
            return result

        return await asyncio.gather(*(tracked(c) for c in coroutines))

    def postfix(self) -> dict[str, str | int]:
        """Progress-bar postfix: requests sent, failed attempts, money spent."""
        return {
            "requests": self.accounting.total_requests,
            "failures": self.accounting.total_failures,
            "cost": f"${self.accounting.spent:.4f}",
        }


def progress_bar(total: int | None, description: str) -> tqdm:
    return tqdm(
        total=total,
        desc=description,
        unit="item",
        file=sys.stderr,
        mininterval=0.5,
        dynamic_ncols=True,
    )
