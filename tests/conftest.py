"""Shared fixtures: the registry, paths to ../shared data, temporary configs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.config import load_config
from pipeline.registry import load_registry

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


def run_stage_cli(stage: str, config: str | Path, out: str | Path, **kwargs) -> subprocess.CompletedProcess:
    """`python -m pipeline run <stage> --config ... --out ...` from the project root, as a user runs it."""
    command = [sys.executable, "-m", "pipeline", "run", stage, "--config", str(config), "--out", str(out)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="session")
def registry():
    return load_registry()


def require_shared_data() -> Path:
    """The real third-party data under ../shared/data. Missing, a test skips on a laptop but fails in
    CI (CI=true), where the data is provisioned and a silent skip would hide lost coverage."""
    if not SHARED_DATA.is_dir():
        message = f"shared data not found at {SHARED_DATA}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message} (CI=true: tests on real data must run in CI)", pytrace=False)
        pytest.skip(message)
    return SHARED_DATA


@pytest.fixture
def shared_data() -> Path:
    return require_shared_data()


@pytest.fixture
def write_config(tmp_path):
    """Write a config dict as YAML next to a copy-free project layout and load it."""

    def _write(data: dict, name: str = "config.yaml"):
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path, load_config(path)

    return _write


def write_records(directory: Path, rows: list[dict], name: str = "00000.parquet") -> Path:
    """Write schema rows (missing columns null) to a record Parquet file."""
    from pipeline.record_io import AtomicParquetFile
    from pipeline.schema import RECORD_SCHEMA, empty_record

    directory.mkdir(parents=True, exist_ok=True)
    with AtomicParquetFile(directory / name, RECORD_SCHEMA) as out:
        for row in rows:
            out.write(empty_record(**row))
    return directory / name


def fake_upstream(out: Path, stage: str, rows: list[dict]) -> None:
    """Make `stage` look complete with `rows` as its output, so the next stage can run in a test."""
    write_records(out / stage / "output", rows)
    (out / stage / ".done").write_text("test-fixture\n")


def record(id: str, text: str, language: str = "en", **kw) -> dict:
    """A minimal valid record for tests."""
    base = dict(
        id=id,
        text=text,
        language=language,
        source="test",
        source_type="paper",
        origin="original",
        license="CC0",
    )
    base.update(kw)
    return base


@pytest.fixture(autouse=True)
def progress_bar_state():
    """A test that runs the CLI in this process switches progress bars off for the process (stderr is
    no terminal under pytest): put that state back, so tests that look at the bars see them."""
    from tqdm import std

    saved_env = {k: os.environ.get(k) for k in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS")}
    saved_init = std.tqdm.__init__
    yield
    std.tqdm.__init__ = saved_init
    for key, value in saved_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
