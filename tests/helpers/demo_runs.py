"""Running the demo pipeline the way `make all` does, in a scratch copy of the project, for the
executor, crash, determinism and disk-full tests.

`make_project(tmp, executor=...)` builds `tmp/project`: symlinks to this checkout's files (so
relative paths in the config resolve as in the real project) and a real `configs/<name>.yaml`:
the demo config with the given executor section. `run_stage_cli` runs `python -m pipeline run` there.
The stages run are the CPU stages `make all` runs: in DAG order up to `shards`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from pipeline.dag import STAGES
from pipeline.record_io import list_parquet

ROOT = Path(__file__).resolve().parents[2]
LAST_CPU_STAGE = "shards"
SKIP_IN_SNAPSHOT = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache"}
SKIP_IN_PROJECT = {".git", ".venv", "out", "configs", "__pycache__", ".pytest_cache", ".ruff_cache"}


def cpu_stages() -> list[str]:
    """The stages `make all` runs up to the shards (training is not a datatrove stage)."""
    names = [spec.name for spec in STAGES]
    return names[: names.index(LAST_CPU_STAGE) + 1]


def make_project(
    tmp: Path, executor: dict | None = None, name: str = "run", overrides: dict | None = None
) -> Path:
    """`tmp/project`: symlinks to this checkout's files plus `configs/<name>.yaml`, the demo config
    with the given executor and whole top-level sections replaced by `overrides`. Returns the
    config's path. Configs of one `tmp` share the project, so their fingerprints agree."""
    project = tmp / "project"
    project.mkdir(parents=True, exist_ok=True)
    for entry in ROOT.iterdir():
        if entry.name not in SKIP_IN_PROJECT and not (project / entry.name).exists():
            (project / entry.name).symlink_to(entry)
    config = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    if executor is not None:
        config["executor"] = executor
    config.update(overrides or {})
    (project / "configs").mkdir(exist_ok=True)
    path = project / "configs" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return path


def cli_env(extra: dict | None = None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.update(extra or {})
    return env


def stage_command(stage: str, config: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline", "run", stage, "--config", str(config), "--out", str(out)]


def run_stage_cli(stage: str, config: Path, out: Path, timeout: float = 300, **kwargs):
    return subprocess.run(
        stage_command(stage, config, out),
        cwd=config.parent.parent,
        env=cli_env(kwargs.pop("env", None)),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def run_all(config: Path, out: Path, stages: list[str] | None = None, env: dict | None = None) -> str:
    """Run the stages in order, like `make all`; fail with the stage's stderr. Returns the console."""
    console = []
    for stage in stages or cpu_stages():
        result = run_stage_cli(stage, config, out, env=env)
        assert result.returncode == 0, f"{stage} failed:\n{result.stderr[-4000:]}"
        console += [result.stdout, result.stderr]
    return "".join(console)


def data_files(out: Path, stage: str) -> list[Path]:
    """The files a stage produces as data (records, quarantine, rejects, shards and manifest)."""
    stage_dir = out / stage
    files = [p for p in list_parquet(stage_dir) if "logs" not in p.relative_to(stage_dir).parts]
    files += [p for p in (stage_dir / "manifest.json",) if p.exists()]
    return sorted(files)


def file_digests(out: Path, stages: list[str]) -> dict[str, str]:
    """relative path -> sha256 of every data file of the stages (byte identity)."""
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for stage in stages
        for p in data_files(out, stage)
    }


def record_digests(out: Path, stage: str) -> dict[str, list[str]]:
    """Per data directory of a stage: the sorted (id, content hash) of every row, whatever file
    it is in; duplicates show up as repeated entries."""
    result: dict[str, list[str]] = {}
    stage_dir = out / stage
    for path in data_files(out, stage):
        if path.suffix != ".parquet":
            continue
        top = path.relative_to(stage_dir).parts[0]
        for row in pq.read_table(path).to_pylist():
            content = json.dumps(row, sort_keys=True, default=str, ensure_ascii=False)
            key = row.get("id") or row.get("file")
            result.setdefault(top, []).append(f"{key}:{hashlib.sha256(content.encode()).hexdigest()[:16]}")
    return {k: sorted(v) for k, v in result.items()}


REFERENCE_EXECUTOR = {"kind": "local", "tasks": 3, "workers": 1}


def reference_run(tmp_path_factory) -> tuple[Path, Path]:
    """One uninterrupted local run of the demo per test session, shared by the tests that compare
    against it: (config, OUT). Its executor runs 3 tasks, one at a time."""
    base = tmp_path_factory.getbasetemp() / "demo-reference"
    config, out = base / "project" / "configs" / "run.yaml", base / "out"
    stages = cpu_stages()
    if not all((out / stage / ".done").exists() for stage in stages):
        config = make_project(base, executor=REFERENCE_EXECUTOR)
        shutil.rmtree(out, ignore_errors=True)
        run_all_in_process(config, out, stages)
    return config, out


def run_all_in_process(config: Path, out: Path, stages: list[str]) -> None:
    """Like run_all, in this process (no interpreter start per stage); the tests that compare
    against it run their stages in fresh processes, so per-process variation still shows."""
    from pipeline.config import load_config
    from pipeline.dag import run_stage

    cfg = load_config(config)
    for stage in stages:
        run_stage(stage, cfg, out)


def snapshot(root: Path, skip: set[Path] = frozenset()) -> dict[str, tuple[int, int]]:
    """path -> (size, mtime) of every file under root (VCS, venv and caches aside)."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d not in skip and d not in SKIP_IN_SNAPSHOT]
        for name in filenames:
            st = (here / name).lstat()
            state[str(here / name)] = (st.st_size, st.st_mtime_ns)
    return state
