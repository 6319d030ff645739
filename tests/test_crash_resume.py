"""Crash safety: `kill -9` at any point, then re-run: the same output, nothing partial, no orphans."""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import record, write_records
from helpers import demo_runs

from pipeline.record_io import list_parquet

pytestmark = pytest.mark.slow  # runs stages, subprocesses or training: not in `make test-fast`

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _session_processes(sid: int) -> list[tuple[int, str]]:
    """Live (non-zombie) processes of a session."""
    listing = subprocess.run(["ps", "-eo", "pid=,sid=,stat=,args="], capture_output=True, text=True).stdout
    found = []
    for line in listing.splitlines():
        pid, session, stat, args = line.split(None, 3)
        if int(session) == sid and not stat.startswith("Z"):
            found.append((int(pid), args))
    return found


def test_killed_stage_process_takes_its_workers_with_it(tmp_path):
    src = tmp_path / "src"
    for f in range(2):
        write_records(src, [record(f"d{f}-{i}", f"text {i}") for i in range(20)], name=f"{f:05d}.parquet")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"executor": {"kind": "local", "tasks": 2, "workers": 2}}))
    markers = tmp_path / "markers"
    markers.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE)]))
    driver = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "helpers" / "crash_helpers.py"),
            str(config),
            str(src),
            str(tmp_path / "w"),
            str(markers),
        ],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 60
        while len(list(markers.iterdir())) < 2 and time.time() < deadline:
            time.sleep(0.1)
        workers = [int(p.name.rsplit("-", 1)[1]) for p in markers.iterdir()]
        assert len(workers) == 2 and driver.pid not in workers  # two pool processes are working
        driver.send_signal(signal.SIGKILL)  # only the stage process, as the OOM killer would
        driver.wait()
        deadline = time.time() + 10
        while _session_processes(driver.pid) and time.time() < deadline:
            time.sleep(0.1)
        assert _session_processes(driver.pid) == []  # workers, forkserver and manager are gone
        time.sleep(1.5)  # long enough for a surviving worker to have finished a task
        assert list_parquet(tmp_path / "w" / "out") == []
        assert not (tmp_path / "w" / "logs" / "slow" / "completions").exists()
    finally:
        for pid, _ in _session_processes(driver.pid):
            os.kill(pid, signal.SIGKILL)


# --- kill -9 at random points of every stage of the demo ------------------------------------------


def _visible_files_are_whole(stage_dir: Path) -> list[str]:
    """Every file under a final (non-hidden) name is complete: Parquet readable, JSON parseable."""
    broken = []
    for path in stage_dir.rglob("*"):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(stage_dir).parts):
            continue
        try:
            if path.suffix == ".parquet":
                pq.read_table(path)
            elif path.suffix == ".json" and "logs" not in path.relative_to(stage_dir).parts:
                json.loads(path.read_text())
        except Exception as exc:  # any failure to read means a partial file is visible
            broken.append(f"{path}: {type(exc).__name__}: {exc}")
    return broken


def _kill_after(command: list[str], cwd: Path, delay: float) -> bool:
    """Start the stage, SIGKILL it (the stage process only) after `delay`; True if it was killed."""
    process = subprocess.Popen(
        command, cwd=cwd, env=demo_runs.cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        process.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        time.sleep(0.3)  # the orphan guard ends its workers within 0.2 s
        return True


def _stages_with_work(reference: Path, stages: list[str]) -> list[str]:
    """The implemented stages that had records to process in the reference run."""
    return [s for s in stages if json.loads((reference / s / "summary.json").read_text())["docs_in"] > 0]


def test_kill_9_at_random_points_then_resume_gives_the_uninterrupted_output(tmp_path, tmp_path_factory):
    """One seed per stage of the demo that has work to do: SIGKILL the stage process after a random
    delay (every other seed kills the resumed run a second time), check no partial file is visible,
    re-run, and compare with the uninterrupted run. The seed that kills the stage before the shards
    goes on through the shards, as `make all` would."""
    config, reference = demo_runs.reference_run(tmp_path_factory)
    all_stages = demo_runs.cpu_stages()
    targets = _stages_with_work(reference, all_stages)
    project = config.parent.parent
    durations = {
        s: json.loads((reference / s / "summary.json").read_text())["seconds"] + 1.5 for s in targets
    }
    rows = []
    for seed, stage in enumerate(targets):
        rng = random.Random(seed)
        out = tmp_path / f"seed{seed}"
        for upstream in all_stages[: all_stages.index(stage)]:
            shutil.copytree(reference / upstream, out / upstream, symlinks=True)
        command = demo_runs.stage_command(stage, config, out)
        kills = []
        for _ in range(1 + seed % 2):
            delay = rng.uniform(0.3, durations[stage])
            kills.append((round(delay, 2), _kill_after(command, project, delay)))
            assert _visible_files_are_whole(out / stage) == [], f"seed {seed}: partial file after kill"
            if (out / stage / ".done").exists():  # marked complete (maybe killed while exiting): it is
                assert demo_runs.file_digests(out, [stage]) == demo_runs.file_digests(reference, [stage])
        to_the_end = len(targets) > 1 and stage == targets[-2]
        later = all_stages[all_stages.index(stage) :] if to_the_end else [stage]
        demo_runs.run_all(config, out, later)
        for name in later:
            assert demo_runs.file_digests(out, [name]) == demo_runs.file_digests(reference, [name]), (
                f"seed {seed}: {name} differs from the uninterrupted run after kills at {kills}"
            )
            assert demo_runs.record_digests(out, name) == demo_runs.record_digests(reference, name)
        rows.append(f"seed {seed}  {stage:<10} kills at {kills} -> {' + '.join(later)} same as uninterrupted")
    assert len(rows) >= 2
    print("\n" + "\n".join(rows))


# --- disk full and write errors -------------------------------------------------------------------

TMPFS_SIZE = 256 * 1024 * 1024


def _mount(args: list[str]) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def _limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_write_error_stops_the_stage_clearly_and_keeps_earlier_outputs(tmp_path, tmp_path_factory):
    """A stage runs out of space mid-write (a real tmpfs filled up where one can be mounted, else a
    file size limit): it stops with a message naming the cause, earlier stages' outputs are
    untouched, nothing partial is visible, and once there is space again a re-run completes with
    the uninterrupted run's output."""
    config, reference = demo_runs.reference_run(tmp_path_factory)
    stages = demo_runs.cpu_stages()
    target = "dedup" if "dedup" in stages else stages[-1]
    upstream = stages[: stages.index(target)]
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = _mount(["-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(disk)])
    try:
        out = disk / "out"
        for stage in upstream:
            shutil.copytree(reference / stage, out / stage, symlinks=True)
        before = demo_runs.file_digests(out, upstream)
        needed = sum(p.stat().st_size for p in demo_runs.data_files(reference, target))
        assert needed > 64 * 1024, "the stage writes too little to run out of space"
        if mounted:
            stat = os.statvfs(disk)
            used = (stat.f_blocks - stat.f_bfree) * stat.f_frsize
            assert _mount(["-o", f"remount,size={used + 32 * 1024}", str(disk)])
            kwargs, cause = {}, "No space left on device"
        else:
            kwargs, cause = {"preexec_fn": _limit_file_size(16 * 1024)}, "File too large"
        result = demo_runs.run_stage_cli(target, config, out, **kwargs)
        assert result.returncode == 2, result.stderr[-3000:]
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and cause in last, last
        print(f"\n{'disk full (tmpfs)' if mounted else 'file size limit'}: {last}")
        assert not (out / target / ".done").exists()
        assert _visible_files_are_whole(out / target) == []
        assert demo_runs.file_digests(out, upstream) == before  # earlier outputs intact
        if mounted:
            assert _mount(["-o", f"remount,size={TMPFS_SIZE}", str(disk)])
        result = demo_runs.run_stage_cli(target, config, out)
        assert result.returncode == 0, result.stderr[-3000:]
        assert demo_runs.file_digests(out, [target]) == demo_runs.file_digests(reference, [target])
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)


# --- two runs on one OUT --------------------------------------------------------------------------

_HOLD_LOCK = """
import sys, time
from pipeline.run_lock import run_lock
with run_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def _hold_lock(out: Path, env: dict) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(out)], env=env, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_run_on_the_same_out_exits_at_once_naming_the_holder(tmp_path):
    """`make shards` twice on one OUT: the second stops at once with the first one's PID and
    command instead of both failing on each other's files; with --wait it queues behind it."""
    config = demo_runs.make_project(tmp_path)
    out = tmp_path / "out"
    env = {k: v for k, v in demo_runs.cli_env().items() if k != "MEDBABEL_RUN"}
    holder = _hold_lock(out, env)
    try:
        started = time.time()
        result = demo_runs.run_stage_cli("collect", config, out, env=env)
        assert result.returncode == 2
        assert time.time() - started < 30
        last = result.stderr.strip().splitlines()[-1]
        assert f"PID {holder.pid}" in last and "run_lock" in last and "--wait" in last, last
        assert not (out / "collect").exists()  # nothing was touched

        fingerprint = [sys.executable, "-m", "pipeline", "fingerprint", "--config", str(config)]
        waiter = subprocess.Popen(
            [*fingerprint, "--out", str(out), "--wait"], env=env, stderr=subprocess.PIPE, text=True
        )
        assert f"waiting for PID {holder.pid}" in waiter.stderr.readline()
        time.sleep(1)
        assert waiter.poll() is None and not (out / ".fingerprints").exists()  # still queued
    finally:
        holder.kill()
        holder.wait()
    assert waiter.wait(timeout=60) == 0
    assert (out / ".fingerprints" / "collect").is_file()


def test_stages_of_one_make_run_wait_for_each_other(tmp_path):
    """`make -j` starts sibling stages of one run at once: they share a run token and queue."""
    config = demo_runs.make_project(tmp_path)
    out = tmp_path / "out"
    env = demo_runs.cli_env({"MEDBABEL_RUN": "run-a"})
    holder = _hold_lock(out, env)
    fingerprint = [
        sys.executable,
        "-m",
        "pipeline",
        "fingerprint",
        "--config",
        str(config),
        "--out",
        str(out),
    ]
    sibling = subprocess.Popen(fingerprint, env=env, stderr=subprocess.PIPE, text=True)
    other = subprocess.run(
        fingerprint, env=demo_runs.cli_env({"MEDBABEL_RUN": "run-b"}), capture_output=True, text=True
    )
    assert other.returncode == 2 and f"PID {holder.pid}" in other.stderr
    time.sleep(1)
    assert sibling.poll() is None
    holder.kill()
    holder.wait()
    assert sibling.wait(timeout=60) == 0


_TRAIN_CLASSIFIER = """
import resource, sys
from pathlib import Path
from pipeline.text import medical_classifier as mc
limit = int(sys.argv[3])
if limit:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
settings = mc.TrainingSettings(max_docs=200, min_docs=5, epochs=5, seed=0)
try:
    mc.train([Path(sys.argv[1])], Path(sys.argv[2]), settings)
except RuntimeError as exc:
    print("failed:", str(exc).splitlines()[0])
"""


def test_a_classifier_model_cut_short_by_a_full_disk_never_appears(tmp_path):
    """fastText does not report a failed write: on a full disk (here a file size limit) it leaves a
    truncated model and says nothing. The model is read back before it is moved into place, so the
    training fails, nothing stands under the model's name, and training again once there is room
    gives the model of an uninterrupted run (a re-run after a disk-full stop gives the same output)."""
    sample = tmp_path / "sample.jsonl"
    rows = []
    for i in range(300):
        label = "medical" if i % 2 else "general"
        text = "fever cough dose patient" if label == "medical" else "train coast river sunrise"
        rows.append(json.dumps({"h": i, "fold": (i // 2) % 2, "label": label, "text": f"{text} {i}"}))
    sample.write_text("\n".join(rows) + "\n")

    def train(model_dir: Path, limit: int) -> str:
        result = subprocess.run(
            [sys.executable, "-c", _TRAIN_CLASSIFIER, str(sample), str(model_dir), str(limit)],
            env=demo_runs.cli_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    reference = tmp_path / "reference"
    assert train(reference, 0) == ""
    models = sorted(p.name for p in reference.glob("*.bin"))
    assert models == ["medical-fold0.bin", "medical-fold1.bin"]

    interrupted = tmp_path / "interrupted"
    assert "failed: fastText training" in train(interrupted, 1 << 20)  # the models are ~17 MB
    assert not list(interrupted.glob("*.bin"))  # no truncated model under a final name
    assert train(interrupted, 0) == ""
    for name in models:
        assert (interrupted / name).read_bytes() == (reference / name).read_bytes()
