"""Stages run unchanged under datatrove's local, Ray and Slurm executors, with the same output.

Ray: a real cluster on this machine (`ray start --head`), stopped at the end.
Slurm: the sbatch/srun/squeue tools are faked (tests/fake_slurm.py) at the command-line boundary;
datatrove writes the real launch scripts and pickled executors, and the fake runs them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from conftest import record, write_records
from helpers import demo_runs, fake_slurm

from pipeline.config import load_config
from pipeline.dag import run_stage
from pipeline.executors import PROJECT_ROOT, PipelineRun, TaskFailedError, run_pipelines
from pipeline.manifest import load_manifest
from pipeline.record_io import RecordReader, RecordWriter, list_parquet, read_records

pytestmark = pytest.mark.slow  # runs stages, subprocesses or training: not in `make test-fast`

LANGS = ["en", "fr", "de", "zh", "sw"]


def _corpus(directory: Path, files: int = 5, per_file: int = 8) -> None:
    for f in range(files):
        rows = [
            record(f"doc-{f}-{i}", f"Document {i} of file {f}: fever, cough and rest.", LANGS[(f + i) % 5])
            for i in range(per_file)
        ]
        write_records(directory, rows, name=f"{f:05d}.parquet")


def _config(tmp_path: Path, executor: dict, name: str = "config.yaml"):
    import yaml

    path = tmp_path / name
    path.write_text(yaml.safe_dump({"executor": executor}))
    return load_config(path)


def _chain(src: Path, work: Path) -> list[PipelineRun]:
    """Two pipelines like a split global stage: a wide per-file step, then a single gathering task."""
    return [
        PipelineRun([RecordReader(src), RecordWriter(work / "mid")], name="spread", tasks=3),
        PipelineRun([RecordReader(work / "mid"), RecordWriter(work / "final")], name="gather", tasks=1),
    ]


def _digests(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in list_parquet(directory)
    }


def _ids(directory: Path) -> list[str]:
    return sorted(r["id"] for p in list_parquet(directory) for r in read_records(p, columns=["id"]))


@pytest.fixture
def corpus(tmp_path):
    _corpus(tmp_path / "input")
    return tmp_path / "input"


def test_local_chain_runs_every_task_and_resumes(tmp_path, corpus):
    cfg = _config(tmp_path, {"kind": "local", "tasks": 2, "workers": 1})
    result = run_pipelines(cfg, _chain(corpus, tmp_path / "w"), tmp_path / "logs", "demo")
    assert [d.name for d in result.logging_dirs] == ["spread", "gather"]
    assert sorted(p.name for p in list_parquet(tmp_path / "w" / "mid")) == [
        f"{r:05d}.parquet" for r in range(3)
    ]
    assert _ids(tmp_path / "w" / "final") == _ids(corpus) and len(_ids(corpus)) == 40
    before = _digests(tmp_path / "w")
    # A second run finds every task's completion file and does nothing.
    stamp = {p: p.stat().st_mtime_ns for p in list_parquet(tmp_path / "w")}
    run_pipelines(cfg, _chain(corpus, tmp_path / "w"), tmp_path / "logs", "demo")
    assert {p: p.stat().st_mtime_ns for p in list_parquet(tmp_path / "w")} == stamp
    assert _digests(tmp_path / "w") == before


def test_one_worker_runs_in_process_without_a_manager(tmp_path, corpus, monkeypatch):
    """One worker: the ranks run in this process, one after the other, with no multiprocess Manager
    (a forked server per pipeline); the merged stats of all ranks still land in stats.json."""
    import multiprocess

    def no_manager(*_, **__):
        raise AssertionError("a Manager was started for a one-worker run")

    monkeypatch.setattr(multiprocess, "Manager", no_manager)
    cfg = _config(tmp_path, {"kind": "local", "tasks": 3, "workers": 1})
    run_pipelines(cfg, _chain(corpus, tmp_path / "w"), tmp_path / "logs", "demo")
    assert _ids(tmp_path / "w" / "final") == _ids(corpus)
    merged = json.loads((tmp_path / "logs" / "spread" / "stats.json").read_text())
    writer = next(step for step in merged if step["name"].endswith(RecordWriter.name))
    assert writer["stats"]["out"]["total"] == 40


def test_tasks_without_files_stay_quiet_on_the_console(tmp_path, capfd):
    """More tasks than files is normal: the console shows no warning and no empty progress bar for
    the idle tasks; their task logs still say that they found no file."""
    _corpus(tmp_path / "one", files=1)
    cfg = _config(tmp_path, {"kind": "local", "tasks": 3, "workers": 1})
    runs = [PipelineRun([RecordReader(tmp_path / "one"), RecordWriter(tmp_path / "out")], name="read")]
    run_pipelines(cfg, runs, tmp_path / "logs", "demo")
    console = capfd.readouterr().err
    assert "No files found" not in console
    # a bar redraws itself after \r, so each bar is one \n-terminated line
    bars = [line for line in console.split("\n") if "Document progress" in line]
    assert len(bars) == 1 and bars[0].endswith("doc/s]") and "8doc" in bars[0]  # only the task with a file
    idle_log = (tmp_path / "logs" / "read" / "logs" / "task_00002.log").read_text()
    assert "No files found on" in idle_log


def test_local_task_failure_names_ranks_and_logs(tmp_path, corpus):
    (corpus / "00002.parquet").write_bytes(b"PAR1 this is not parquet")
    cfg = _config(tmp_path, {"kind": "local", "tasks": 3, "workers": 1})
    with pytest.raises(TaskFailedError) as err:
        run_pipelines(cfg, _chain(corpus, tmp_path / "w"), tmp_path / "logs", "demo")
    message = str(err.value)
    assert "1 of 3 task(s) of demo-spread did not complete (ranks 2)" in message
    assert str(tmp_path / "logs" / "spread" / "logs") in message
    # Nothing of the failed task is visible under a final name; the next pipeline never started.
    assert not (tmp_path / "w" / "mid" / "00002.parquet").exists()
    assert not (tmp_path / "w" / "final").exists()


# --- Slurm -----------------------------------------------------------------------------------------


@pytest.fixture
def slurm(tmp_path, monkeypatch):
    """Fake Slurm tools first on PATH (the venv's bin next, for datatrove's launch_pickled_pipeline)."""
    bin_dir, state = tmp_path / "slurm-bin", tmp_path / "slurm-state"
    fake_slurm.install(bin_dir, state)
    monkeypatch.setenv(
        "PATH", f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    )
    return state


def _slurm_config(tmp_path):
    return _config(
        tmp_path,
        {
            "kind": "slurm",
            "tasks": 2,
            "workers": 2,
            "slurm": {
                "partition": "medcpu",
                "time": "01:30:00",
                "cpus_per_task": 2,
                "mem_per_cpu_gb": 1.5,
                "qos": "high",
                "sbatch_args": {"account": "medbabel"},
                "poll_s": 0.05,
            },
        },
    )


def test_slurm_scripts_and_dependency_chain(tmp_path, corpus, slurm):
    cfg = _slurm_config(tmp_path)
    result = run_pipelines(cfg, _chain(corpus, tmp_path / "w"), tmp_path / "logs", "dedup")
    jobs = fake_slurm.jobs(slurm)
    # Per pipeline: its array job, then datatrove's merge-stats job depending on it.
    assert [j["directives"]["job-name"] for j in jobs] == ["dedup-spread"] * 2 + ["dedup-gather"] * 2
    spread, spread_stats, gather, gather_stats = jobs
    assert result.slurm_job_ids == [[spread["id"], spread_stats["id"]], [gather["id"], gather_stats["id"]]]
    d = spread["directives"]
    assert d["array"] == "0-2%2"  # three tasks, two at a time (this pipeline's own task count)
    assert gather["directives"]["array"] == "0-0"
    assert (d["partition"], d["time"], d["cpus-per-task"], d["qos"], d["account"]) == (
        "medcpu",
        "01:30:00",
        "2",
        "high",
        "medbabel",
    )
    assert d["mem-per-cpu"] == "1536M"  # Slurm wants an integer: 1.5 GB goes in megabytes
    assert d["output"] == str(tmp_path / "logs" / "spread" / "slurm_logs" / "%A_%a.out")
    # The chain: gather starts only after every spread task succeeded.
    assert f"--dependency=afterok:{spread['id']}" in gather["options"]
    assert not any(o.startswith("--dependency") for o in spread["options"])
    assert spread_stats["directives"]["dependency"] == f"afterok:{spread['id']}"
    # The job runs this project's code in the running venv, then datatrove's pickled executor.
    script = spread["script"]
    assert f"cd {PROJECT_ROOT}" in script and f"export PYTHONPATH={PROJECT_ROOT}" in script
    assert f"source {Path(sys.prefix) / 'bin' / 'activate'}" in script
    assert f"launch_pickled_pipeline {tmp_path / 'logs' / 'spread' / 'executor.pik'}" in script
    assert all(j["state"] == "COMPLETED" for j in jobs)
    # Same data as the local executor.
    local = _config(tmp_path, {"kind": "local", "tasks": 2, "workers": 1}, name="local.yaml")
    run_pipelines(local, _chain(corpus, tmp_path / "lw"), tmp_path / "llogs", "dedup")
    assert _digests(tmp_path / "w") == _digests(tmp_path / "lw")
    # A re-run submits nothing: every task has its completion file.
    run_pipelines(cfg, _chain(corpus, tmp_path / "w"), tmp_path / "logs", "dedup")
    assert len(fake_slurm.jobs(slurm)) == 4


def test_slurm_failed_task_stops_and_cancels_the_rest_of_the_chain(tmp_path, corpus, slurm):
    (corpus / "00001.parquet").write_bytes(b"PAR1 this is not parquet")
    cfg = _slurm_config(tmp_path)
    with pytest.raises(TaskFailedError) as err:
        run_pipelines(cfg, _chain(corpus, tmp_path / "w"), tmp_path / "logs", "dedup")
    message = str(err.value)
    jobs = fake_slurm.jobs(slurm)
    spread, _, gather, _ = jobs
    assert spread["state"] == "FAILED" and spread["exit_codes"][1] != 0
    assert f"Slurm job(s) {spread['id']}" in message and "ranks 1 of 3 did not complete" in message
    assert str(tmp_path / "logs" / "spread" / "slurm_logs") in message
    assert gather["state"] == "CANCELLED"  # it waited on `afterok` and would have stayed pending
    # Had the waiting process died before cancelling it, the gather job would still be queued:
    gather["state"] = "PENDING"
    (slurm / "jobs" / f"{gather['id']}.json").write_text(json.dumps(gather))
    # Fix the input and re-run: only the failed rank is resubmitted; the stale gather job is
    # cancelled (it waits on the failed job) and the gather is submitted again.
    _corpus(tmp_path / "fixed")
    (corpus / "00001.parquet").write_bytes((tmp_path / "fixed" / "00001.parquet").read_bytes())
    run_pipelines(cfg, _chain(corpus, tmp_path / "w"), tmp_path / "logs", "dedup")
    jobs = fake_slurm.jobs(slurm)
    assert jobs[2]["state"] == "CANCELLED"
    # spread for rank 1 only, its merge-stats job, gather, its merge-stats job
    assert [j["directives"]["job-name"] for j in jobs[4:]] == ["dedup-spread"] * 2 + ["dedup-gather"] * 2
    assert jobs[4]["directives"]["array"] == "0-0%2" and "launch_pickled_pipeline" in jobs[4]["script"]
    assert f"--dependency=afterok:{jobs[4]['id']}" in jobs[6]["options"]
    assert _ids(tmp_path / "w" / "final") == _ids(corpus)


def test_slurm_rerun_reattaches_to_jobs_still_queued(tmp_path, corpus, slurm, monkeypatch):
    """The waiting process died (say, the login shell was killed) while its jobs were queued. A
    re-run must wait for those jobs instead of submitting the same tasks a second time."""
    cfg = _slurm_config(tmp_path)
    monkeypatch.setenv("FAKE_SLURM_HOLD", "1")  # the "cluster" is busy: jobs stay queued
    code = (
        "import sys; sys.path[:0] = sys.argv[1:3]; import test_executors as t; t._slurm_waiter(*sys.argv[3:])"
    )
    args = [str(PROJECT_ROOT), str(Path(__file__).parent), str(cfg.source_file), str(corpus), str(tmp_path)]
    waiter = subprocess.Popen([sys.executable, "-c", code, *args])
    recorded = [tmp_path / "logs" / name / "slurm_jobs.json" for name in ("spread", "gather")]
    deadline = time.time() + 120
    while not all(p.exists() and len(json.loads(p.read_text())) == 2 for p in recorded):
        assert time.time() < deadline and waiter.poll() is None
        time.sleep(0.1)
    waiter.kill()
    waiter.wait()
    held = fake_slurm.jobs(slurm)
    assert len(held) == 4 and all(j["state"] == "PENDING" for j in held)

    calls = slurm / "squeue_calls"
    calls_before = int(calls.read_text()) if calls.exists() else 0
    rerun = threading.Thread(
        target=lambda: run_pipelines(cfg, _chain(corpus, tmp_path / "w"), tmp_path / "logs", "dedup")
    )
    rerun.start()
    while (int(calls.read_text()) if calls.exists() else 0) <= calls_before and rerun.is_alive():
        time.sleep(0.05)  # the re-run has looked at the queue and found its jobs there
    fake_slurm.run_held(slurm)  # now the scheduler runs them
    rerun.join(timeout=120)
    assert not rerun.is_alive()
    assert len(fake_slurm.jobs(slurm)) == 4  # nothing submitted twice
    assert all(j["state"] == "COMPLETED" for j in fake_slurm.jobs(slurm))
    assert _ids(tmp_path / "w" / "final") == _ids(corpus)


def _slurm_waiter(config_path: str, corpus: str, tmp_path: str) -> None:
    cfg = load_config(config_path)
    run_pipelines(cfg, _chain(Path(corpus), Path(tmp_path) / "w"), Path(tmp_path) / "logs", "dedup")


# --- Ray -------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster():
    """A real one-node Ray cluster on this machine, started for these tests and stopped after."""
    try:
        import ray
    except ImportError:
        pytest.fail("ray is not installed; `make setup` installs the ray extra (pip install -e '.[ray]')")
    port = _free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    log = open(Path(temp_dir) / "ray-start.log", "w")  # noqa: SIM115 - closed at teardown
    head = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "ray"),
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--object-store-memory=100000000",
            "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
        ],
        start_new_session=True,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            if head.poll() is not None:
                pytest.fail(f"ray start exited with {head.returncode}: {Path(log.name).read_text()[-2000:]}")
            try:
                ray.init(address=address, logging_level="WARNING")
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(1)
        ray.shutdown()
        yield address
    finally:
        ray.shutdown()
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops what it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        _kill_session(head.pid)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _kill_session(sid: int) -> None:
    """Kill stragglers of the session we started for Ray (workers that outlived their raylet)."""
    listing = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        pid, session = (int(x) for x in line.split())
        if session == sid and pid != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_demo_pipeline_on_ray_equals_local(tmp_path, tmp_path_factory, ray_cluster):
    """Every CPU stage of the demo through the Ray executor, with another number of tasks than the
    local reference run: the same records (ids and content hashes) at every stage, the same counts,
    and the same shards and manifest totals. Files are per task, so only they may differ."""
    config, reference = demo_runs.reference_run(tmp_path_factory)
    stages = demo_runs.cpu_stages()
    executor = {"kind": "ray", "tasks": 2, "ray": {"address": ray_cluster, "mem_per_task_gb": 0.5}}
    cfg = load_config(demo_runs.make_project(config.parent.parent.parent, executor=executor, name="ray"))
    assert cfg.executor.tasks != demo_runs.REFERENCE_EXECUTOR["tasks"]
    out = tmp_path / "out"
    for stage in stages:
        run_stage(stage, cfg, out)
    counts = ("docs_in", "docs_out", "quarantined", "quarantined_by_reason")
    for stage in stages:
        assert demo_runs.record_digests(out, stage) == demo_runs.record_digests(reference, stage), stage
        on_ray, local = (json.loads((o / stage / "summary.json").read_text()) for o in (out, reference))
        assert {k: on_ray[k] for k in counts} == {k: local[k] for k in counts}, stage
    assert any(demo_runs.record_digests(out, s) for s in stages)
    if "shards" in stages:
        assert demo_runs.file_digests(out, ["shards"]) == demo_runs.file_digests(reference, ["shards"])
        assert load_manifest(out / "shards").totals == load_manifest(reference / "shards").totals
