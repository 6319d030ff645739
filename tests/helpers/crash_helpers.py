"""Pipeline steps and drivers for the crash tests, importable by executor worker processes."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def slow_copy(markers: str):
    """A pipeline step that records its pid when it starts and sleeps between documents."""

    def step(data, rank: int = 0, world_size: int = 1):
        Path(markers, f"started-{rank}-{os.getpid()}").touch()
        for doc in data:
            time.sleep(0.5)
            yield doc

    return step


def run_slow_chain(config_path: str, src: str, work: str, markers: str) -> None:
    from pipeline.config import load_config
    from pipeline.executors import PipelineRun, run_pipelines
    from pipeline.record_io import RecordReader, RecordWriter

    cfg = load_config(config_path)
    steps = [RecordReader(src), slow_copy(markers), RecordWriter(Path(work) / "out")]
    run_pipelines(cfg, [PipelineRun(steps, name="slow", tasks=2)], Path(work) / "logs", "crash")


def _call_endpoint(api_key: str) -> None:
    raise RuntimeError("the endpoint refused the request (401)")


def leaky_step(data, rank: int = 0, world_size: int = 1):
    """Fails in a call that takes the API key, as an LLM client might."""
    api_key = os.environ["MEDBABEL_TEST_API_KEY"]
    _call_endpoint(api_key)
    yield from data or []


def run_leaky(config_path: str, work: str) -> int:
    from pipeline.cli import EXIT_ERROR
    from pipeline.config import load_config
    from pipeline.executors import PipelineRun, TaskFailedError, run_pipelines

    cfg = load_config(config_path)
    try:
        run_pipelines(cfg, [PipelineRun([leaky_step], name="leaky")], Path(work) / "logs", "translate")
    except TaskFailedError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "leaky":
        sys.exit(run_leaky(*sys.argv[2:]))
    run_slow_chain(*sys.argv[1:])
