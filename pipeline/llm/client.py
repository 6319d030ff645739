"""One async chat-completions client for every OpenAI-compatible endpoint.

Built on the `openai` SDK's AsyncOpenAI with the SDK's own retries switched off: this module owns
retrying, so that every attempt is counted, bounded and visible. It adds bounded concurrency,
optional RPM/TPM limits, exponential backoff with jitter on 429/5xx/timeouts/connection errors
(honouring `Retry-After`, which also pauses every other request), and treats an empty, truncated
(`finish_reason == "length"`) or malformed reply as a failed attempt. When the attempts run out the
caller gets an `LLMFailure` naming the kind of failure; an endpoint that refuses the key or does
not know the model raises `EndpointError`, which stops the stage (every item would fail alike).

Requests go through the SDK's generic `post` (auth, base URL, timeouts, typed errors) with the
body serialised here, over the SDK's aiohttp transport, and the reply is parsed as plain JSON:
the typed `chat.completions.create` path costs about twice the client CPU per request, which at
high concurrency turns into latency (bench/bench_llm.py).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import random
import re
import time
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx2
import openai

from pipeline.config import ConfigError, LLMSection
from pipeline.llm.accounting import Accounting
from pipeline.llm.ratelimit import RateLimiter
from pipeline.llm.redaction import install_log_redaction, redact, register_secret

# Kinds of failed attempt that are worth another try.
RETRYABLE = frozenset(
    {"rate_limited", "server_error", "timeout", "connection_error", "truncated", "malformed", "empty"}
)
_MAX_RETRY_AFTER_S = 600.0
_THINK = re.compile(r"^\s*<think>.*?</think>\s*", re.S)


class LLMFailure(Exception):
    """A request that failed for good (after retries where the kind is retryable)."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class EndpointError(ConfigError):
    """The endpoint refuses every request (wrong key, unknown model or path): stop the stage."""


class BudgetReached(Exception):
    """`llm.budget_usd` is spent: no new request is sent."""


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class _Attempt:
    completion: Completion | None = None
    kind: str | None = None
    detail: str = ""
    retry_after: float | None = None


def endpoint_label(base_url: str | None) -> str | None:
    """The endpoint URL without any user:password part, for summaries and logs."""
    if not base_url:
        return None
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def parse_retry_after(headers) -> float | None:
    """Seconds to wait from `retry-after-ms` or `Retry-After` (seconds or an HTTP date), if given."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def parse_reply(body: bytes) -> _Attempt:
    """A chat-completion body -> a completion, or the kind of failure it represents."""
    try:
        data = json.loads(body)
        choice = data["choices"][0]
        message = choice.get("message") or {}
        content = message.get("content")
        finish = choice.get("finish_reason")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        return _Attempt(
            kind="malformed", detail=redact(f"unreadable reply ({type(exc).__name__}): {body[:120]!r}")
        )
    if content is not None and not isinstance(content, str):
        return _Attempt(kind="malformed", detail=f"message content is {type(content).__name__}, not text")
    text = redact(_THINK.sub("", content or "").strip())  # an endpoint may echo the key back
    usage = data.get("usage") if isinstance(data, dict) else None
    usage = usage if isinstance(usage, dict) else {}
    completion = Completion(
        text,
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or len(content or "") // 4),
    )
    if finish == "length":
        return _Attempt(completion, "truncated", f"reply cut at max_tokens after {len(text)} characters")
    if finish == "content_filter":
        return _Attempt(completion, "content_filter", "the endpoint's content filter stopped the reply")
    if not text:
        return _Attempt(completion, "empty", "the reply had no text")
    return _Attempt(completion)


class LLMClient:
    """`await complete(messages, language)` -> Completion, or LLMFailure / BudgetReached / EndpointError."""

    def __init__(self, section: LLMSection, accounting: Accounting):
        if not section.base_url:
            raise ValueError("LLMClient needs llm.base_url")
        self.section = section
        self.accounting = accounting
        api_key = os.environ.get(section.api_key_env)
        register_secret(api_key)
        install_log_redaction()
        self.key_missing = not api_key
        self._sdk = openai.AsyncOpenAI(
            # Local servers (vLLM, Ollama, llama.cpp) accept any key; the SDK insists on one.
            api_key=api_key or "no-key-set",
            base_url=section.base_url,
            max_retries=0,
            timeout=section.timeout_s,
            http_client=_http_client(section),
        )
        self._slots: asyncio.Semaphore | None = None
        self._limiter = RateLimiter(section.requests_per_minute, section.tokens_per_minute)
        self._resume_at = 0.0  # set by a 429's Retry-After: every request waits until then

    @property
    def slots(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.section.concurrency)
        return self._slots

    async def close(self) -> None:
        await self._sdk.close()

    def _estimate_tokens(self, messages: list[dict]) -> int:
        prompt = sum(len(m["content"]) for m in messages) // 4 + 8
        return prompt + min(self.section.max_tokens, prompt)

    async def complete(self, messages: list[dict], language: str) -> Completion:
        section = self.section
        for attempt in range(section.max_retries + 1):
            pause = self._resume_at - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            estimate = self._estimate_tokens(messages)
            await self._limiter.acquire(estimate)
            async with self.slots:
                # Checked with a slot held: at most `concurrency` requests can overshoot the budget.
                if self.accounting.budget_reached:
                    raise BudgetReached()
                result = await self._attempt(messages, language)
            if result.completion is not None:
                used = result.completion.prompt_tokens + result.completion.completion_tokens
                self._limiter.settle(estimate, used)
            if result.kind is None:
                return result.completion
            self.accounting.failure(language, result.kind)
            if result.kind not in RETRYABLE or attempt == section.max_retries:
                tries = f" after {attempt + 1} attempts" if attempt else ""
                raise LLMFailure(result.kind, redact(f"{result.detail}{tries}"))
            delay = min(section.backoff_max_s, section.backoff_base_s * 2**attempt) * random.uniform(0.5, 1)
            if result.retry_after is not None:
                delay = min(result.retry_after, _MAX_RETRY_AFTER_S)
                self._resume_at = max(self._resume_at, time.monotonic() + delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _attempt(self, messages: list[dict], language: str) -> _Attempt:
        section = self.section
        self.accounting.request(language)
        payload = {
            **section.extra_body,
            "model": section.model,
            "messages": messages,
            "temperature": section.temperature,
            section.max_tokens_param: section.max_tokens,
        }
        try:
            # The SDK's generic POST (auth, base URL, timeouts, error types) with a body serialised
            # here: the typed `chat.completions.create` validates and transforms every message,
            # which costs more CPU than the whole rest of a request.
            response = await self._sdk.post(
                "/chat/completions",
                cast_to=httpx2.Response,
                content=json.dumps(payload, ensure_ascii=False).encode(),
                options={"headers": {"Content-Type": "application/json"}},
            )
        except openai.APIStatusError as exc:
            return self._status_failure(exc)
        except openai.APITimeoutError:
            return _Attempt(kind="timeout", detail=f"no reply within {section.timeout_s:g} s")
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            return _Attempt(kind="connection_error", detail=redact(f"{type(cause).__name__}: {cause}"))
        try:
            body = response.content
        finally:
            await response.aclose()
        result = parse_reply(body)
        if result.completion is not None:
            c = result.completion
            self.accounting.usage(language, c.prompt_tokens, c.completion_tokens, usable=result.kind is None)
        return result

    def _status_failure(self, exc: openai.APIStatusError) -> _Attempt:
        status = exc.status_code
        message = redact(_error_message(exc))
        if status in (401, 403):
            hint = f"set the environment variable {self.section.api_key_env}"
            if not self.key_missing:
                hint = f"check the key in the environment variable {self.section.api_key_env}"
            raise EndpointError(
                f"{endpoint_label(self.section.base_url)} refused the request (HTTP {status}: {message}); {hint}"
            )
        if status == 404:
            raise EndpointError(
                f"{endpoint_label(self.section.base_url)} answered HTTP 404 ({message}): check llm.base_url "
                f"(it usually ends in /v1) and that llm.model '{self.section.model}' is served there"
            )
        if status == 429:
            return _Attempt(
                kind="rate_limited", detail=message, retry_after=parse_retry_after(exc.response.headers)
            )
        if status >= 500 or status in (408, 409):
            retry_after = parse_retry_after(exc.response.headers)
            return _Attempt(kind="server_error", detail=f"HTTP {status}: {message}", retry_after=retry_after)
        return _Attempt(kind=f"http_{status}", detail=message)


def _http_client(section: LLMSection) -> httpx2.AsyncClient:
    """The SDK's aiohttp transport (several times less CPU per request than the default under
    concurrency; bench/bench_llm.py), or its default httpx2 client where aiohttp is missing."""
    limits = httpx2.Limits(max_connections=section.concurrency, max_keepalive_connections=section.concurrency)
    try:
        return openai.DefaultAioHttpClient(limits=limits, timeout=section.timeout_s)
    except RuntimeError:
        return openai.DefaultAsyncHttpxClient(limits=limits, timeout=section.timeout_s)


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:300]
    return str(exc.message)[:300]
