"""Run a stage's datatrove pipelines under the executor the config asks for: local, Ray or Slurm.

A stage hands over one pipeline (`ctx.run_pipeline`) or a chain of them (`ctx.run_pipelines`, the
shape of datatrove's MinHash dedup: signatures -> buckets -> cluster -> filter). Whatever the
engine, the call returns only once every task of every pipeline has completed, and raises
`TaskFailedError` (naming the stage, the pipeline, the failed ranks and where their logs are) when
one has not. That keeps `run_stage` simple and safe on every engine: the code a stage runs after
its pipelines (summaries, manifests, dataset cards) sees finished data, and the stage's `.done`
marker is written only after the last task of the last job has finished.

- local: `LocalPipelineExecutor`, `workers` tasks at a time on this machine (with one worker, the
  tasks run one after the other in this process).
- ray: `RayPipelineExecutor` on the cluster at `executor.ray.address` (or a local one started by
  `ray.init()` when unset). Every node must see OUT and the project at the same paths.
- slurm: `SlurmPipelineExecutor`. The chain is submitted at once as sbatch array jobs, each
  depending (`afterok`) on the one before, and this process then waits for the last one, polling the
  tasks' completion files. The submitted job ids are kept in `logs/<name>/slurm_jobs.json`: a
  re-run whose previous waiting process died re-attaches to jobs still queued instead of
  submitting them twice.

Resume is datatrove's: each task writes `logs/<name>/completions/<rank>` when it has finished, and a
re-run skips completed ranks.
"""

from __future__ import annotations

import ctypes
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from datatrove.utils.stats import PipelineStats

from pipeline import atomic
from pipeline.compat import LocalExecutorWithHooks, completion_file
from pipeline.config import Config, ExecutorSection

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class TaskFailedError(RuntimeError):
    """Some tasks of a pipeline did not complete; the message names them and their logs."""


@dataclass
class PipelineRun:
    """One datatrove pipeline of a stage: its steps, a name (its logs go to `logs/<name>/`), and
    optionally its own task/worker counts (a global step such as clustering runs as one task)."""

    steps: list
    name: str = "main"
    tasks: int | None = None
    workers: int | None = None


@dataclass
class ChainResult:
    """What ran: per pipeline, its logging dir, and for Slurm the submitted job ids."""

    logging_dirs: list[Path]
    slurm_job_ids: list[list[str]] = field(default_factory=list)


def run_pipelines(cfg: Config, runs: Sequence[PipelineRun], logs_dir: Path, job_prefix: str) -> ChainResult:
    """Run pipelines in order on the configured engine; each one's tasks start after the previous
    pipeline has completed. Returns once all have completed, else raises TaskFailedError."""
    if not runs:
        return ChainResult([])
    names = [run.name for run in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"pipeline names of one stage must differ (their logs go to logs/<name>): {names}")
    kind = cfg.executor.kind
    if kind == "local":
        return _run_local(cfg.executor, runs, Path(logs_dir), job_prefix)
    if kind == "ray":
        return _run_ray(cfg.executor, runs, Path(logs_dir), job_prefix)
    return _run_slurm(cfg, runs, Path(logs_dir), job_prefix)


def _tasks_and_workers(ex: ExecutorSection, run: PipelineRun) -> tuple[int, int]:
    tasks = run.tasks or ex.tasks
    workers = run.workers if run.workers is not None else ex.workers
    workers = tasks if workers <= 0 else min(workers, tasks)
    return tasks, workers


def incomplete_ranks(logging_dir: Path, tasks: int) -> list[int]:
    """Ranks without a datatrove completion file (the same test datatrove uses to skip them)."""
    return [rank for rank in range(tasks) if not completion_file(logging_dir, rank).is_file()]


def _check_complete(logging_dir: Path, tasks: int, job: str, cause: BaseException | None = None) -> None:
    missing = incomplete_ranks(logging_dir, tasks)
    if not missing and cause is None:
        return
    what = f"{len(missing)} of {tasks} task(s) of {job} did not complete (ranks {_ranks(missing)})"
    if cause is not None:
        what += f": {type(cause).__name__}: {cause}"
    raise TaskFailedError(f"{what}. Task logs: {logging_dir / 'logs'}. Re-run to resume the missing tasks.")


def _ranks(ranks: list[int]) -> str:
    shown = ", ".join(map(str, ranks[:20]))
    return shown + (f", ... ({len(ranks)} in all)" if len(ranks) > 20 else "")


# --- local -----------------------------------------------------------------------------------------

_ORPHANED_EXIT = 70


class GuardedLocalExecutor(LocalExecutorWithHooks):
    """datatrove's local executor whose worker processes die with the process that started them.

    Killing `python -m pipeline run` (kill -9, the OOM killer) would otherwise leave its pool
    workers running their tasks to the end, racing the re-run that resumes the same ranks.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.driver_pid = os.getpid()

    def before_rank(self) -> None:
        if os.getpid() != self.driver_pid:
            _exit_when_gone(self.driver_pid)

    def run(self) -> PipelineStats | None:
        """With one worker, the ranks run in this process (compat.LocalExecutorWithHooks.run_in_process):
        datatrove would start a multiprocess Manager only to hand that one worker its slot, a server
        process forked from this one, which costs most once the stage holds its models."""
        if self.workers != 1 or self.depends:
            return super().run()
        return self.run_in_process()


_guarded: set[int] = set()


def _exit_when_gone(pid: int) -> None:
    """In a worker: a daemon thread that ends this process as soon as `pid` has died."""
    if pid in _guarded:
        return
    _guarded.add(pid)

    def watch() -> None:
        while _alive(pid):
            time.sleep(0.2)
        os._exit(_ORPHANED_EXIT)

    threading.Thread(target=watch, name="medbabel-orphan-guard", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (macOS): ask the kernel whether the pid exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")  # a zombie has died


def _die_with_parent() -> None:
    """In a child forked by the stage process (datatrove's multiprocess Manager): die with it."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


_fork_guard_installed = False


def _install_fork_guard() -> None:
    global _fork_guard_installed
    if not _fork_guard_installed:
        os.register_at_fork(after_in_child=_die_with_parent)
        _fork_guard_installed = True


def _preload_in_forkserver(steps: list) -> None:
    """Import the steps' modules in datatrove's forkserver before it starts, so each worker forked
    from it starts warm instead of importing the stage's dependencies again (seconds per worker)."""
    import multiprocess.forkserver

    modules = {"pipeline.executors", *(type(step).__module__ for step in steps)}
    modules = {m for m in modules if m.split(".")[0] in ("pipeline", "stages", "moe_train", "datatrove")}
    multiprocess.forkserver.set_forkserver_preload(sorted(modules))


def _run_local(ex: ExecutorSection, runs: Sequence[PipelineRun], logs_dir: Path, prefix: str) -> ChainResult:
    _install_fork_guard()
    _preload_in_forkserver([step for run in runs for step in run.steps])
    dirs = []
    for run in runs:
        tasks, workers = _tasks_and_workers(ex, run)
        logging_dir = logs_dir / run.name
        executor = GuardedLocalExecutor(
            pipeline=run.steps, tasks=tasks, workers=workers, logging_dir=str(logging_dir)
        )
        try:
            executor.run()
        except Exception as exc:  # a task raised: report which ranks are missing, and why
            _check_complete(logging_dir, tasks, f"{prefix}-{run.name}", cause=exc)
        _check_complete(logging_dir, tasks, f"{prefix}-{run.name}")
        dirs.append(logging_dir)
    return ChainResult(dirs)


# --- ray -------------------------------------------------------------------------------------------


def ensure_ray(address: str | None) -> None:
    """Connect this process to the Ray cluster (once). Workers import this project's code."""
    import ray

    if ray.is_initialized():
        return
    pythonpath = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)
    ray.init(
        address=address,
        runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
        log_to_driver=False,
        logging_level="WARNING",
    )


def _run_ray(ex: ExecutorSection, runs: Sequence[PipelineRun], logs_dir: Path, prefix: str) -> ChainResult:
    from datatrove.executor import RayPipelineExecutor

    try:
        import ray  # noqa: F401
    except ImportError:
        raise TaskFailedError(
            "executor.kind is 'ray' but ray is not installed: pip install -e '.[ray]'"
        ) from None
    ensure_ray(ex.ray.address)
    dirs = []
    # Pipelines of a chain run one after the other from here rather than through datatrove's
    # `depends=`, which polls an unfinished dependency every two minutes and never gives up.
    for run in runs:
        tasks, workers = _tasks_and_workers(ex, run)
        logging_dir = logs_dir / run.name
        executor = RayPipelineExecutor(
            pipeline=run.steps,
            tasks=tasks,
            workers=workers,
            logging_dir=str(logging_dir),
            cpus_per_task=ex.ray.cpus_per_task,
            mem_per_cpu_gb=ex.ray.mem_per_task_gb / ex.ray.cpus_per_task,
            time=ex.ray.time_s,
        )
        try:
            executor.run()
        except Exception as exc:
            _check_complete(logging_dir, tasks, f"{prefix}-{run.name}", cause=exc)
        # datatrove's Ray executor logs failed tasks and returns: check completions ourselves.
        _check_complete(logging_dir, tasks, f"{prefix}-{run.name}")
        dirs.append(logging_dir)
    return ChainResult(dirs)


# --- slurm -----------------------------------------------------------------------------------------

SLURM_JOBS_FILE = "slurm_jobs.json"


class JobIdRecorder:
    """datatrove's `job_id_retriever`: parses `sbatch` output and records every id at once in
    `<logging_dir>/slurm_jobs.json`, so a re-run knows what is already queued."""

    def __init__(self, logging_dir: Path) -> None:
        self.logging_dir = logging_dir
        self.ids: list[str] = []

    def __call__(self, sbatch_output: str) -> str:
        words = sbatch_output.split()
        if not words:
            raise TaskFailedError(f"sbatch printed no job id: {sbatch_output!r}")
        job_id = words[-1].split(";")[0]  # `--parsable` prints "id;cluster"
        self.ids.append(job_id)
        _write_job_ids(self.logging_dir, self.ids)
        return job_id


def slurm_env_command(cfg: Config) -> str:
    """Shell lines that make a Slurm job run this project's code in the configured environment."""
    slurm = cfg.executor.slurm
    if slurm.env_command:
        return slurm.env_command
    lines = [f"cd {shlex.quote(str(PROJECT_ROOT))}"]
    lines.append(f"export PYTHONPATH={shlex.quote(str(PROJECT_ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}")
    venv = cfg.resolve(slurm.venv_path) if slurm.venv_path else Path(sys.prefix)
    if slurm.condaenv:
        lines.append(f"conda activate {shlex.quote(slurm.condaenv)}")
    elif (venv / "bin" / "activate").is_file() or slurm.venv_path:
        lines.append(f"source {shlex.quote(str(venv / 'bin' / 'activate'))}")
    else:  # not a venv: put this interpreter (and datatrove's launcher next to it) first on PATH
        lines.append(f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:$PATH")
    return "\n".join(lines)


def _slurm_memory(mem_per_cpu_gb: float) -> tuple[int, dict[str, str]]:
    """datatrove writes `--mem-per-cpu=<n>G`; Slurm wants an integer, so fractions go in megabytes."""
    if float(mem_per_cpu_gb).is_integer():
        return int(mem_per_cpu_gb), {}
    return 1, {"mem-per-cpu": f"{round(mem_per_cpu_gb * 1024)}M"}


def squeue_active(job_ids: list[str]) -> set[str]:
    """Which of these jobs (or their array tasks) Slurm still has queued or running."""
    if not job_ids:
        return set()
    try:
        result = subprocess.run(
            ["squeue", "-h", "-o", "%A %i", "-j", ",".join(job_ids)],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as exc:
        raise TaskFailedError(f"cannot ask Slurm about jobs {job_ids}: {exc}") from None
    if result.returncode != 0 and "Invalid job id" not in result.stderr:
        raise TaskFailedError(f"squeue failed ({result.returncode}): {result.stderr.strip()}")
    active: set[str] = set()
    for line in result.stdout.split():
        active.add(line.split("_")[0])
    return active & set(job_ids)


def _run_slurm(cfg: Config, runs: Sequence[PipelineRun], logs_dir: Path, prefix: str) -> ChainResult:
    from datatrove.executor import SlurmPipelineExecutor

    slurm = cfg.executor.slurm
    mem_gb, mem_args = _slurm_memory(slurm.mem_per_cpu_gb)
    env_command = slurm_env_command(cfg)
    plan = []
    for run in runs:
        tasks, workers = _tasks_and_workers(cfg.executor, run)
        plan.append((run, tasks, workers, logs_dir / run.name))

    # Re-attach: jobs a previous (killed) waiting process submitted and Slurm still runs.
    recorded = {d: _read_job_ids(d) for _, _, _, d in plan}
    still_active = squeue_active([i for ids in recorded.values() for i in ids])
    job_ids: list[list[str]] = []
    previous = None
    for run, tasks, workers, logging_dir in plan:
        name = f"{prefix}-{run.name}"
        ours = [i for i in recorded[logging_dir] if i in still_active]
        if ours and previous is not None and previous not in still_active:
            # An earlier pipeline was just (re)submitted: these jobs wait on its old, failed job.
            _scancel(ours)
            ours = []
        if ours:
            print(f"[{prefix}] {run.name}: re-attaching to running Slurm job(s) {', '.join(ours)}")
            job_ids.append(ours)
            previous = ours[-1]
            continue
        recorder = JobIdRecorder(logging_dir)
        executor = SlurmPipelineExecutor(
            pipeline=run.steps,
            tasks=tasks,
            workers=workers if workers < tasks else -1,
            time=slurm.time,
            partition=slurm.partition,
            cpus_per_task=slurm.cpus_per_task,
            mem_per_cpu_gb=mem_gb,
            job_name=name,
            qos=slurm.qos,
            env_command=env_command,
            sbatch_args={**mem_args, **slurm.sbatch_args},
            max_array_size=slurm.max_array_size,
            depends_job_id=previous,
            job_id_retriever=recorder,
            logging_dir=str(logging_dir),
            slurm_logs_folder=str(logging_dir / "slurm_logs"),
        )
        try:
            executor.launch_job()
        except (OSError, subprocess.CalledProcessError) as exc:
            raise TaskFailedError(f"could not submit {name} to Slurm: {exc}") from None
        job_ids.append(recorder.ids)
        if recorder.ids:
            print(f"[{prefix}] {run.name}: submitted Slurm job(s) {', '.join(recorder.ids)} ({tasks} tasks)")
            # The array job(s) come first; the last id is datatrove's small merge-stats job.
            previous = executor.job_id
    for index, ((run, tasks, _, logging_dir), ids) in enumerate(zip(plan, job_ids, strict=True)):
        try:
            _wait_for_slurm(logging_dir, tasks, ids, f"{prefix}-{run.name}", slurm.poll_s)
        except TaskFailedError:
            # Later jobs of the chain wait on this one (`afterok`) and would stay pending forever.
            _scancel([i for later in job_ids[index + 1 :] for i in later])
            raise
    return ChainResult([d for *_, d in plan], job_ids)


def _wait_for_slurm(logging_dir: Path, tasks: int, job_ids: list[str], job: str, poll_s: float) -> None:
    """Block until every rank completed, or raise once the jobs left the queue with ranks missing."""
    while incomplete_ranks(logging_dir, tasks):
        if not squeue_active(job_ids):
            # Completion files land on a shared filesystem: look once more after the queue empties.
            time.sleep(min(poll_s, 5.0))
            if incomplete_ranks(logging_dir, tasks):
                raise TaskFailedError(
                    f"Slurm job(s) {', '.join(job_ids)} of {job} left the queue but ranks "
                    f"{_ranks(incomplete_ranks(logging_dir, tasks))} of {tasks} did not complete. "
                    f"Slurm logs: {logging_dir / 'slurm_logs'}; task logs: {logging_dir / 'logs'}. "
                    "Re-run to resubmit the missing tasks."
                )
            return
        time.sleep(poll_s)


def _scancel(job_ids: list[str]) -> None:
    if job_ids:
        subprocess.run(["scancel", *job_ids], capture_output=True, check=False)


def _read_job_ids(logging_dir: Path) -> list[str]:
    path = logging_dir / SLURM_JOBS_FILE
    try:
        return [str(i) for i in json.loads(path.read_text())]
    except (OSError, ValueError):
        return []


def _write_job_ids(logging_dir: Path, ids: list[str]) -> None:
    logging_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_json(logging_dir / SLURM_JOBS_FILE, ids)
