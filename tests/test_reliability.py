"""Reliability guards outside the data path: where the LLM cache may live, idle-task warnings,
verified hand-offs between stages and into training."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.config import LLMSection
from pipeline.llm.session import cache_path

ROOT = Path(__file__).resolve().parent.parent


def test_the_llm_cache_lies_inside_out_unless_given_an_absolute_path(tmp_path):
    out = tmp_path / "out"
    assert cache_path(LLMSection(), out) == out / "llm_cache.sqlite"
    assert cache_path(LLMSection(cache_path="cache/llm.sqlite"), out) == out / "cache" / "llm.sqlite"
    shared = tmp_path / "shared" / "llm.sqlite"
    assert cache_path(LLMSection(cache_path=str(shared)), out) == shared


def test_more_tasks_than_input_files_is_warned_about(tmp_path):
    source = tmp_path / "a.jsonl"
    source.write_text('{"text": "Fever and cough."}\n')
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "executor": {"tasks": 5, "workers": 1},
                "sources": [
                    {"name": "a", "path": str(source), "format": "jsonl", "source_type": "paper"}
                    | {"license": "CC0", "language": "en"}
                ],
            }
        )
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "run",
            "collect",
            "--config",
            str(config),
            "--out",
            str(tmp_path / "o"),
        ],
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "[collect] warning: executor.tasks is 5 but there are 1 input files; 4 tasks" in result.stderr
