"""The client against a real HTTP server on loopback: retries, Retry-After, limits, fatal errors."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time

import pytest
from helpers.llm_server import FakeLLM, LoopbackServer

from pipeline.config import LLMSection
from pipeline.llm.accounting import Accounting
from pipeline.llm.client import BudgetReached, EndpointError, LLMClient, LLMFailure

MESSAGES = [
    {"role": "system", "content": "Translate.\nTarget language: French (fr)"},
    {"role": "user", "content": "and are you having a fever now?"},
]
PARALLEL = {"and are you having a fever now?": {"fr": "et avez-vous de la fièvre actuellement ?"}}


@pytest.fixture(scope="module")
def server():
    with LoopbackServer(FakeLLM(PARALLEL, hang_s=1.0, api_key="sk-client-test-key")) as running:
        yield running


@pytest.fixture
def fake(server, monkeypatch):
    server.llm.set_faults({})
    server.llm.reset_counters()
    server.llm.latency_s = 0.0
    monkeypatch.setenv("CLIENT_TEST_KEY", "sk-client-test-key")
    return server.llm


def make_client(server, accounting=None, **overrides) -> tuple[LLMClient, Accounting]:
    settings = dict(
        base_url=server.base_url,
        model="fake",
        api_key_env="CLIENT_TEST_KEY",
        backoff_base_s=0.001,
        backoff_max_s=0.01,
        timeout_s=0.3,
        max_retries=4,
    )
    settings.update(overrides)
    accounting = accounting or Accounting(1.0, 2.0)
    return LLMClient(LLMSection(**settings), accounting), accounting


def complete(client, messages=MESSAGES, language="fr"):
    async def go():
        try:
            return await client.complete(messages, language)
        finally:
            await client.close()

    return asyncio.run(go())


def _body_key(messages):
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()


def _seed_for(fake, body_key, fault):
    """A seed whose first draw for `body_key` is `fault` and second is clean."""
    for seed in range(1000):
        fake.seed = seed
        fake.seen.clear()
        if fake._draw(body_key)[0] == fault and fake._draw(body_key)[0] is None:
            fake.seen.clear()
            return seed
    raise AssertionError("no seed found")


@pytest.mark.parametrize(
    "fault", ["rate_limit", "server_error", "timeout", "truncated", "malformed", "empty"]
)
def test_transient_faults_are_retried_until_success(server, fake, fault):
    fake.set_faults({fault: 0.5})
    fake.seed = _seed_for(fake, _body_key(MESSAGES), fault)
    client, accounting = make_client(server)
    completion = complete(client)
    assert completion.text == "et avez-vous de la fièvre actuellement ?"
    kind = {"rate_limit": "rate_limited", "server_error": "server_error"}.get(fault, fault)
    assert accounting.languages["fr"].failures == {kind: 1}
    assert accounting.languages["fr"].requests == 2
    assert fake.outcomes == {fault: 1, "ok": 1}


def test_retry_after_is_honoured_and_pauses_everyone(server, fake):
    fake.retry_after = "0.4"
    fake.set_faults({"rate_limit": 0.5})
    fake.seed = _seed_for(fake, _body_key(MESSAGES), "rate_limit")
    client, accounting = make_client(server)
    started = time.monotonic()
    complete(client)
    assert time.monotonic() - started >= 0.4
    assert accounting.languages["fr"].failures["rate_limited"] == 1
    fake.retry_after = "0.01"


def test_persistent_faults_end_in_a_failure_naming_the_kind(server, fake):
    fake.set_faults({"server_error": 1.0})
    client, accounting = make_client(server, max_retries=2)
    with pytest.raises(LLMFailure) as err:
        complete(client)
    assert err.value.kind == "server_error" and "after 3 attempts" in err.value.detail
    assert fake.outcomes["server_error"] == 3 and accounting.languages["fr"].requests == 3


def test_client_errors_are_not_retried_and_never_show_the_key(server, fake):
    fake.set_faults({"echo_key": 1.0})
    client, _ = make_client(server)
    with pytest.raises(LLMFailure) as err:
        complete(client)
    assert err.value.kind == "http_400" and fake.outcomes["echo_key"] == 1
    assert "sk-client-test-key" not in str(err.value) and "***" in err.value.detail


def test_a_refused_key_stops_with_a_clear_message(server, fake, monkeypatch):
    monkeypatch.setenv("CLIENT_TEST_KEY", "sk-wrong-key-000")
    client, _ = make_client(server)
    with pytest.raises(EndpointError, match="HTTP 401.*CLIENT_TEST_KEY") as err:
        complete(client)
    assert "sk-wrong-key-000" not in str(err.value)
    monkeypatch.delenv("CLIENT_TEST_KEY")
    client, _ = make_client(server)
    with pytest.raises(EndpointError, match="set the environment variable CLIENT_TEST_KEY"):
        complete(client)


def test_wrong_path_is_a_clear_endpoint_error(server, fake):
    client, _ = make_client(server, base_url=server.base_url.removesuffix("/v1") + "/nope")
    with pytest.raises(EndpointError, match="HTTP 404.*llm.base_url"):
        complete(client)


def test_concurrency_is_bounded(server, fake):
    fake.latency_s = 0.05
    client, _ = make_client(server, concurrency=4)

    async def many():
        try:
            await asyncio.gather(
                *(
                    client.complete([MESSAGES[0], {"role": "user", "content": f"item {i}"}], "fr")
                    for i in range(24)
                )
            )
        finally:
            await client.close()

    asyncio.run(many())
    assert 1 < fake.max_in_flight <= 4 and fake.outcomes["ok"] == 24


def test_requests_per_minute_limit_paces_requests(server, fake):
    client, _ = make_client(server, requests_per_minute=600)  # a 600-request burst, then 10/s

    async def many():
        bucket = client._limiter.requests
        bucket.level = 0  # start empty: every request waits for a refill
        started = time.monotonic()
        try:
            await asyncio.gather(*(client.complete(MESSAGES, "fr") for _ in range(3)))
        finally:
            await client.close()
        return time.monotonic() - started

    assert 0.25 <= asyncio.run(many()) < 5


def test_budget_stops_new_requests(server, fake):
    accounting = Accounting(1e6, 1e6, budget_usd=0.000001)
    client, _ = make_client(server, accounting=accounting)
    complete(client)  # the first request spends the budget
    client, _ = make_client(server, accounting=accounting)
    with pytest.raises(BudgetReached):
        complete(client)
    assert fake.outcomes["ok"] == 1
