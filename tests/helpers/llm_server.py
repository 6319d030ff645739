"""A real OpenAI-compatible chat-completions server on loopback, for the LLM tests and benchmark.

It speaks HTTP/1.1 (keep-alive) on 127.0.0.1 and answers `POST /v1/chat/completions` like an LLM
would, deterministically:

- translation requests (system prompt names a `Target language: <name> (<code>)`) are answered
  from a parallel-text dictionary (English sentence -> {language: human translation}), built by the
  tests from TICO-19; text it does not know gets real target-language sentences of about the same
  length, with the source's numbers kept, so language ID and the checks behave as on real output;
- question requests get the passage's first sentence as the question; answer requests (the passage
  inside `<passage>` tags) get the passage back as the answer.

Faults are injected at configurable rates: 429 with `Retry-After`, 500, a hang past the client's
timeout, a truncated reply (`finish_reason: length`), a malformed body, an empty reply, a reply in
another language, chatter around the translation, and an error body or a completion echoing the
caller's `Authorization` header (the API key).
Whether a request gets a fault depends only on (seed, request body, how often that body was seen),
so runs are reproducible whatever the concurrency.

Run standalone (the benchmark does): `python tests/helpers/llm_server.py --latency 0.2` prints the base URL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import hashlib
import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

FAULT_KINDS = (
    "rate_limit",
    "server_error",
    "timeout",
    "truncated",
    "malformed",
    "empty",
    "wrong_language",
    "chatter",
    "echo_key",
    "echo_key_in_reply",
)

_TARGET = re.compile(r"Target language: [^\n]*\((?P<code>[A-Za-z-]+)\)")
_PASSAGE = re.compile(r"<passage>\n?(?P<text>.*?)\n?</passage>", re.S)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
# Medical-relevance labelling (pipeline/medical_gate.py): the rubric's first words identify the request;
# the answer is "medical" when the document uses at least two of these words, as an annotator might.
_RELEVANCE_RUBRIC = "You judge whether a document belongs in a corpus of medical text."
_MEDICAL_WORDS = re.compile(
    r"\b(patients?|disease|infection|symptoms?|treatment|clinical|diagnosis|hospital|vaccine|doctor|"
    r"medicine|therapy|fever|blood|dose|nurse|antibiotics?|chronic|surgery|health|virus|covid-19|"
    r"coronavirus|sars-cov-2|pandemic|epidemic|outbreak|respiratory|pneumonia|immune|cough|illness|"
    r"medical|deaths|transmission|infected|masks?|pain)\b",
    re.I,
)


def medical_label(text: str) -> str:
    return "medical" if len(set(m.lower() for m in _MEDICAL_WORDS.findall(text))) >= 2 else "not medical"


@dataclass
class Faults:
    """Probability of each fault per request (their sum must stay <= 1)."""

    rates: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.rates) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kind(s) {sorted(unknown)}; known: {FAULT_KINDS}")
        if sum(self.rates.values()) > 1:
            raise ValueError("fault rates sum to more than 1")

    def pick(self, draw: float) -> str | None:
        cumulative = 0.0
        for kind in FAULT_KINDS:
            cumulative += self.rates.get(kind, 0.0)
            if draw < cumulative:
                return kind
        return None


def _normalize(text: str) -> str:
    return " ".join(text.split())


def tico_parallel(path: str | Path) -> dict[str, dict[str, str]]:
    """English TICO-19 sentence -> {language: its human translation} (placeholders left out)."""
    units: dict[str, dict[str, str]] = {}
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            if row["text"].strip() != "{NS}":
                units.setdefault(row["id"].rsplit(":", 1)[0], {})[row["lang"]] = row["text"]
    return {unit.pop("en"): unit for unit in units.values() if "en" in unit}


class FakeLLM:
    """The server's behaviour: one reply per request body, plus counters the tests assert on."""

    def __init__(
        self,
        parallel: dict[str, dict[str, str]] | None = None,
        faults: dict[str, float] | None = None,
        seed: int = 0,
        latency_s: float = 0.0,
        retry_after: str = "0.01",
        hang_s: float = 5.0,
        api_key: str | None = None,
        record_bodies: bool = False,
    ):
        self.parallel = {_normalize(k): v for k, v in (parallel or {}).items()}
        self.faults = Faults(dict(faults or {}))
        self.seed = seed
        self.latency_s = latency_s
        self.retry_after = retry_after
        self.hang_s = hang_s
        self.api_key = api_key
        self.record_bodies = record_bodies
        self.by_language: dict[str, list[str]] = {}
        for translations in self.parallel.values():
            for lang, text in translations.items():
                self.by_language.setdefault(lang, []).append(text)
        self._lock = threading.Lock()
        self.seen: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.completed: Counter[str] = Counter()  # body hash -> successful (fault-free) replies
        self.bodies: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0

    # ---- bookkeeping ---------------------------------------------------------------------------
    @property
    def requests(self) -> int:
        with self._lock:
            return sum(self.outcomes.values())

    def reset_counters(self) -> None:
        with self._lock:
            self.outcomes.clear()
            self.completed.clear()
            self.bodies.clear()
            self.max_in_flight = 0

    def set_faults(self, rates: dict[str, float] | None = None, seed: int | None = None) -> None:
        self.faults = Faults(dict(rates or {}))
        if seed is not None:
            self.seed = seed

    def _draw(self, body_key: str) -> tuple[str | None, int]:
        with self._lock:
            self.seen[body_key] += 1
            nth = self.seen[body_key]
        digest = hashlib.sha256(f"{self.seed}:{body_key}:{nth}".encode()).digest()
        return self.faults.pick(int.from_bytes(digest[:8], "big") / 2**64), nth

    # ---- replies -------------------------------------------------------------------------------
    def reply(self, body: dict, authorization: str | None) -> tuple[int, dict[str, str], bytes] | None:
        """(status, headers, body) for a request, or None to hang up without answering."""
        if self.api_key is not None and authorization != f"Bearer {self.api_key}":
            return self._finish("unauthorized", 401, _error("invalid api key", "invalid_request_error"))
        messages = body.get("messages") or []
        body_key = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()
        if self.record_bodies:
            with self._lock:
                self.bodies.append(body)
        fault, _ = self._draw(body_key)
        if fault == "rate_limit":
            return self._finish(
                fault, 429, _error("rate limited", "rate_limit_error"), {"Retry-After": self.retry_after}
            )
        if fault == "server_error":
            return self._finish(fault, 500, _error("internal error", "server_error"))
        if fault == "timeout":
            self._count(fault)
            return None
        if fault == "malformed":
            return self._finish(fault, 200, b'{"id": "x", "choices": [{"message": ')
        if fault == "echo_key":
            return self._finish(fault, 400, _error(f"bad request from {authorization}", "invalid_request"))

        content, finish = self._answer(messages), "stop"
        if fault == "truncated":
            content, finish = content[: max(1, len(content) // 3)], "length"
        elif fault == "empty":
            content = ""
        elif fault == "wrong_language":
            content = self._wrong_language(messages, content)
        elif fault == "chatter":
            content = f"Here is the translation:\n\n{content}"
        elif fault == "echo_key_in_reply":
            content = f"{content} (Authorization: {authorization})"
        if fault is None:
            with self._lock:
                self.completed[body_key] += 1
        prompt_chars = sum(len(str(m.get("content", ""))) for m in messages)
        payload = {
            "id": f"chatcmpl-{body_key[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}
            ],
            "usage": {
                "prompt_tokens": prompt_chars // 4 + 1,
                "completion_tokens": len(content) // 4 + 1,
                "total_tokens": prompt_chars // 4 + len(content) // 4 + 2,
            },
        }
        return self._finish(fault or "ok", 200, json.dumps(payload, ensure_ascii=False).encode())

    def _count(self, outcome: str) -> None:
        with self._lock:
            self.outcomes[outcome] += 1

    def _finish(self, outcome: str, status: int, payload: bytes, headers: dict | None = None):
        self._count(outcome)
        return status, dict(headers or {}), payload

    def _answer(self, messages: list[dict]) -> str:
        system = "\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "system")
        user = next((str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), "")
        if _RELEVANCE_RUBRIC in system:
            return medical_label(user)
        target = _TARGET.search(system)
        if target:
            return self.translate(user, target.group("code"))
        passage = _PASSAGE.search(system)
        if passage:
            return passage.group("text").strip()
        # Question writing: the passage's first sentence, made a question.
        first = _SENTENCE_END.split(user.strip(), maxsplit=1)[0].rstrip(".!?")
        return f"{first}?"

    def translate(self, text: str, target: str) -> str:
        """Line by line: known sentences (greedily, longest first) from the dictionary, else filler."""
        lines = []
        for line in text.split("\n"):
            if not line.strip():
                lines.append(line)
                continue
            pieces, out, i = _SENTENCE_END.split(line.strip()), [], 0
            while i < len(pieces):
                for j in range(len(pieces), i, -1):
                    known = self.parallel.get(_normalize(" ".join(pieces[i:j])), {}).get(target)
                    if known is not None:
                        out.append(known)
                        i = j
                        break
                else:
                    out = None
                    break
            lines.append(" ".join(out) if out is not None else self._filler(line, target))
        return "\n".join(lines)

    def _filler(self, text: str, target: str) -> str:
        """Real sentences of the target language, about as long as `text`, with its numbers kept."""
        pool = self.by_language.get(target) or [text]
        start = int(hashlib.sha256(text.encode()).hexdigest(), 16) % len(pool)
        out: list[str] = []
        i = start
        while sum(len(p) + 1 for p in out) < 0.9 * len(text) and len(out) < len(pool):
            out.append(pool[i % len(pool)])
            i += 1
        numbers = " ".join(_NUMBER.findall(text))
        return " ".join(out) + (f" {numbers}" if numbers else "")

    def _wrong_language(self, messages: list[dict], content: str) -> str:
        user = next((str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), "")
        system = "\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "system")
        target = _TARGET.search(system)
        if target is None:  # rewriting: answer in Russian
            return self._filler(content, "ru")
        other = "ru" if target.group("code") != "ru" else "fr"
        return self.translate(user, other)


def _error(message: str, kind: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "code": None}}).encode()


class LoopbackServer:
    """Serves a FakeLLM on 127.0.0.1 from a background thread (its own asyncio loop)."""

    def __init__(self, llm: FakeLLM, port: int = 0):
        self.llm = llm
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LoopbackServer:
        self._thread = threading.Thread(target=self._serve, name="fake-llm", daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("fake LLM server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *_) -> None:
        self.stop()

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port, backlog=1024)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._started.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(self._server.wait_closed())
            self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for line in header_lines:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                method, path, _ = request_line.split(" ", 2)
                self.llm.in_flight += 1
                self.llm.max_in_flight = max(self.llm.max_in_flight, self.llm.in_flight)
                try:
                    if self.llm.latency_s:
                        await asyncio.sleep(self.llm.latency_s)
                finally:
                    self.llm.in_flight -= 1
                if method != "POST" or path.rstrip("/") != "/v1/chat/completions":
                    status, extra, payload = 404, {}, _error(f"no route {method} {path}", "not_found")
                else:
                    try:
                        request = json.loads(body)
                    except ValueError:
                        request = None
                    if not isinstance(request, dict):
                        status, extra, payload = (
                            400,
                            {},
                            _error("body is not a JSON object", "invalid_request"),
                        )
                    else:
                        answer = self.llm.reply(request, headers.get("authorization"))
                        if answer is None:  # hang past the client's timeout, then hang up
                            await asyncio.sleep(self.llm.hang_s)
                            return
                        status, extra, payload = answer
                reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}.get(
                    status, "Too Many Requests" if status == 429 else "Error"
                )
                lines = [
                    f"HTTP/1.1 {status} {reason}",
                    "Content-Type: application/json",
                    f"Content-Length: {len(payload)}",
                    "Connection: keep-alive",
                    *(f"{k}: {v}" for k, v in extra.items()),
                ]
                writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each reply")
    parser.add_argument("--parallel", help="TICO-19 sentences (jsonl.gz) to translate from")
    args = parser.parse_args()
    parallel = tico_parallel(args.parallel) if args.parallel else {}
    server = LoopbackServer(FakeLLM(parallel, latency_s=args.latency), port=args.port).start()
    print(server.base_url, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()


if __name__ == "__main__":
    main()
