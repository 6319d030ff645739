"""LLM client throughput against the loopback chat-completions server with a fixed 200 ms latency.

The server runs in its own process (tests/helpers/llm_server.py), so the client's CPU time is its own.
For each concurrency the ideal rate is concurrency / latency; the goal is >= 90% of it at 64.
Each case runs three times and reports its best run (all three are in the JSON): on a shared
machine the slower runs measure the other processes.
Side by side at concurrency 64: the client as built (the SDK's generic POST over its aiohttp
transport, reply parsed as plain JSON) against the SDK's typed path (`chat.completions.create`
over its default httpx2 transport, reply parsed into its response models), aiohttp alone with no
SDK (what the machine and the Python server allow at best), and the whole translate stage (cache
writes, checks with language ID, datatrove) on TICO-19 sentences.

    .venv/bin/python bench/bench_llm.py [--out X.json]   # prints a table, writes bench/results/llm.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "helpers")]

import httpx2  # noqa: E402
import openai  # noqa: E402
from provenance import write_result  # noqa: E402

from pipeline.config import LLMSection  # noqa: E402
from pipeline.llm.accounting import Accounting  # noqa: E402
from pipeline.llm.client import LLMClient  # noqa: E402

LATENCY_S = 0.2
REPEATS = 3
CASES = {
    "client": "client (SDK post, aiohttp, JSON)",
    "typed": "SDK typed create (httpx2, models)",
    "aiohttp": "aiohttp alone, no SDK (reference)",
}
TICO = ROOT.parent / "shared" / "data" / "tico19_health_sentences.jsonl.gz"
RESULTS = ROOT / "bench" / "results" / "llm.json"
SYSTEM = "You are a professional medical translator.\nTarget language: French (fr)"


def start_server() -> tuple[subprocess.Popen, str]:
    args = [sys.executable, str(ROOT / "tests" / "helpers" / "llm_server.py"), "--latency", str(LATENCY_S)]
    if TICO.exists():
        args += ["--parallel", str(TICO)]
    server = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    return server, server.stdout.readline().strip()


def messages(i: int) -> list[dict]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Patient {i} has a fever of 39 C."},
    ]


async def run_aiohttp(base_url: str, concurrency: int, n: int) -> tuple[float, float]:
    """The same requests with aiohttp alone (no SDK, no checks): what this machine and the loopback
    server allow at best."""
    import aiohttp

    slots = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def one(i: int) -> str:
            async with slots, session.post(f"{base_url}/chat/completions", json=payload(i)) as reply:
                return json.loads(await reply.read())["choices"][0]["message"]["content"]

        await one(-1)
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return time.perf_counter() - wall, time.process_time() - cpu


def payload(i: int) -> dict:
    return {"model": "bench", "messages": messages(i), "max_tokens": 256}


async def run_client(base_url: str, concurrency: int, n: int, typed_sdk: bool) -> tuple[float, float]:
    section = LLMSection(base_url=base_url, model="bench", concurrency=concurrency, api_key_env="BENCH_KEY")
    client = LLMClient(section, Accounting())
    await client.complete(messages(-1), "fr")  # connect once before timing
    typed = openai.AsyncOpenAI(
        api_key="unused",
        base_url=base_url,
        max_retries=0,
        http_client=openai.DefaultAsyncHttpxClient(
            limits=httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        ),
    )

    async def typed_request(i: int) -> str:
        async with client.slots:
            reply = await typed.chat.completions.create(model="bench", messages=messages(i), max_tokens=256)
            return reply.choices[0].message.content

    cpu, wall = time.process_time(), time.perf_counter()
    if typed_sdk:
        await asyncio.gather(*(typed_request(i) for i in range(n)))
    else:
        await asyncio.gather(*(client.complete(messages(i), "fr") for i in range(n)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    await client.close()
    await typed.close()
    return wall, cpu


def client_row(base_url: str, concurrency: int, case: str = "client", waves: int = 20) -> dict:
    n = concurrency * waves
    if case == "aiohttp":
        runs = [asyncio.run(run_aiohttp(base_url, concurrency, n)) for _ in range(REPEATS)]
    else:
        runs = [asyncio.run(run_client(base_url, concurrency, n, case == "typed")) for _ in range(REPEATS)]
    return rate_row(CASES[case], concurrency, n, runs)


def rate_row(case: str, concurrency: int, requests: int, runs: list[tuple[float, float]]) -> dict:
    """A table row from (wall, cpu) seconds of each run; best of the runs: the machine is shared, the
    slow runs measure other load."""
    wall, cpu = min(runs)
    ideal = concurrency / LATENCY_S
    return {
        "case": case,
        "concurrency": concurrency,
        "requests": requests,
        "seconds": round(wall, 3),
        "requests_per_s": round(requests / wall, 1),
        "ideal_per_s": ideal,
        "efficiency": round(requests / wall / ideal, 3),
        "efficiency_runs": sorted(round(requests / w / ideal, 3) for w, _ in runs),
        "client_cpu_ms_per_request": round(cpu / requests * 1000, 3),
    }


def stage_row(base_url: str, concurrency: int) -> dict:
    """The whole translate stage (startup included): TICO-19 English sentences into six languages,
    fresh cache."""
    from conftest import fake_upstream, record
    from llm_server import tico_parallel

    from pipeline.config import load_config
    from pipeline.dag import run_stage

    sentences = (
        list(tico_parallel(TICO)) if TICO.exists() else [f"Patient {i} has a fever." for i in range(320)]
    )
    docs = [record(f"d{i}", sentence) for i, sentence in enumerate(sentences[:320])]
    runs = []
    for _ in range(REPEATS):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out"
            fake_upstream(out, "collect", docs)
            config = Path(tmp) / "bench.yaml"
            settings = {
                "llm": {"base_url": base_url, "model": "bench", "concurrency": concurrency},
                "translate": {"targets": ["fr", "sw", "ru", "ar", "hi", "zh"]},
            }
            config.write_text(json.dumps(settings))
            cfg = load_config(config)
            cpu, wall = time.process_time(), time.perf_counter()
            with open(os.devnull, "w") as devnull:
                stdout, stderr = sys.stdout, sys.stderr
                sys.stdout = sys.stderr = devnull
                try:
                    summary = run_stage("translate", cfg, out)
                finally:
                    sys.stdout, sys.stderr = stdout, stderr
            runs.append((time.perf_counter() - wall, time.process_time() - cpu))
    return rate_row(
        "translate stage (cache, checks, datatrove)", concurrency, summary["llm"]["requests"], runs
    )


LOAD_AT_START = [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if LOAD_AT_START[0] > (os.cpu_count() or 1) / 2:
        print(
            f"warning: load average {LOAD_AT_START[0]} on {os.cpu_count()} CPUs: timings will be pessimistic"
        )
    server, base_url = start_server()
    try:
        rows = [client_row(base_url, c) for c in (1, 16, 64, 128)]
        rows.append(client_row(base_url, 64, "typed"))
        rows.append(client_row(base_url, 64, "aiohttp"))
        rows.append(stage_row(base_url, 64))
    finally:
        server.terminate()
        server.wait()
    header = f"{'case':<44} {'conc':>5} {'req':>6} {'req/s':>8} {'ideal':>7} {'eff':>6} {'eff runs':>18} {'cpu ms/req':>11}"
    print(f"LLM client against a loopback server with {LATENCY_S * 1000:.0f} ms latency")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['case']:<44} {r['concurrency']:>5} {r['requests']:>6} {r['requests_per_s']:>8.1f} "
            f"{r['ideal_per_s']:>7.0f} {r['efficiency']:>6.1%} "
            f"{' '.join(f'{e:.0%}' for e in r['efficiency_runs']):>18} {r['client_cpu_ms_per_request']:>11.3f}"
        )
    at64 = next(r for r in rows if r["concurrency"] == 64 and r["case"].startswith("client"))
    goal = {"concurrency": 64, "min_efficiency": 0.9, "met": at64["efficiency"] >= 0.9}
    print(f"goal: >= 90% of the ideal rate at concurrency 64: {'met' if goal['met'] else 'NOT met'}")
    result = {
        "benchmark": "llm_client_throughput",
        "latency_s": LATENCY_S,
        "load_average_at_start": LOAD_AT_START,
        "cpus": os.cpu_count(),
        "goal": goal,
        "rows": rows,
    }
    write_result(result, "bench_llm.py", argv, args.out)


if __name__ == "__main__":
    main()
