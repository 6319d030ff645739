"""A stand-in for the Slurm command-line tools (the true external boundary of the Slurm executor).

`install(bin_dir, state_dir)` writes `sbatch`, `srun`, `squeue`, `scancel` and `scontrol` into
`bin_dir`. `sbatch` records each submission (arguments and the script's text) under `state_dir`,
prints a job id like real sbatch, and then runs the job the way Slurm would: once per array index
with `SLURM_ARRAY_TASK_ID` set, honouring `--dependency=afterok:<id>` (a job whose dependency failed
stays PENDING, as on a cluster). datatrove's merge-stats jobs are recorded but not run. Jobs run
synchronously, so when `sbatch` returns the job has finished. With `FAKE_SLURM_HOLD=1` in the
environment, submissions are only recorded (PENDING) until `run_held` plays the scheduler.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

TOOLS = ("sbatch", "srun", "squeue", "scancel", "scontrol")


def install(bin_dir: Path, state_dir: Path) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "jobs").mkdir(parents=True, exist_ok=True)
    here = Path(__file__).resolve().parent
    for tool in TOOLS:
        path = bin_dir / tool
        path.write_text(
            f"#!{sys.executable}\n"
            "import sys\n"
            f"sys.path.insert(0, {str(here)!r})\n"
            "from fake_slurm import main\n"
            f"sys.exit(main({tool!r}, {str(state_dir)!r}, sys.argv[1:]))\n"
        )
        path.chmod(0o755)


def jobs(state_dir: Path) -> list[dict]:
    """Every recorded submission, in submission order."""
    files = sorted((Path(state_dir) / "jobs").glob("*.json"), key=lambda p: int(p.stem))
    return [json.loads(p.read_text()) for p in files]


def main(tool: str, state_dir: str, argv: list[str]) -> int:
    state = Path(state_dir)
    return {"sbatch": _sbatch, "srun": _srun, "squeue": _squeue, "scancel": _scancel, "scontrol": _scontrol}[
        tool
    ](state, argv)


def _save(state: Path, job: dict) -> None:
    path = state / "jobs" / f"{job['id']}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(job, indent=1))
    tmp.replace(path)


def _load(state: Path, job_id: str) -> dict | None:
    path = state / "jobs" / f"{job_id}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _sbatch(state: Path, argv: list[str]) -> int:
    *options, script_path = argv
    script = Path(script_path).read_text()
    counter = state / "next_id"
    job_id = str(int(counter.read_text()) if counter.exists() else 1000)
    counter.write_text(str(int(job_id) + 1))
    directives = dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(.*))?$", script, flags=re.M))
    job = {"id": job_id, "options": options, "directives": directives, "script": script, "state": "PENDING"}
    for option in options:
        if option.startswith("--dependency="):
            for dep in option.split("=", 1)[1].split(","):
                if _load(state, dep.split(":", 1)[1]) is None:
                    print(f"sbatch: error: Batch job submission failed: Job dependency problem ({dep})")
                    return 1
    _save(state, job)
    print(f"Submitted batch job {job_id}")
    sys.stdout.flush()
    if os.environ.get("FAKE_SLURM_HOLD") != "1":
        _execute(state, job)
    return 0


def _is_merge_stats(job: dict) -> bool:
    """datatrove's small job that merges per-task stats into stats.json (medbabel reads the
    per-task files): recorded and marked done, not run, to keep the tests quick."""
    return "merge_stats " in job["script"] and "launch_pickled_pipeline" not in job["script"]


def run_held(state_dir: Path) -> None:
    """Let "Slurm" run every job still PENDING whose dependencies allow it, in submission order."""
    for job in jobs(Path(state_dir)):
        if job["state"] == "PENDING":
            _execute(Path(state_dir), job)


def _execute(state: Path, job: dict) -> None:
    for option in job["options"]:
        if option.startswith("--dependency="):
            for dep in option.split("=", 1)[1].split(","):
                kind, dep_id = dep.split(":", 1)
                if kind == "afterok" and _load(state, dep_id)["state"] != "COMPLETED":
                    return  # never satisfied: stays PENDING until cancelled
    if _is_merge_stats(job):
        job["state"] = "COMPLETED"
        _save(state, job)
        return
    job_id = job["id"]
    env = dict(os.environ, SLURM_JOB_ID=job_id, SLURM_NODELIST="localhost", SLURM_NODEID="0")
    env.pop("FAKE_SLURM_HOLD", None)
    for option in job["options"]:
        if option.startswith("--export="):
            for item in option.split("=", 1)[1].split(","):
                if "=" in item:
                    key, value = item.split("=", 1)
                    env[key] = value
    array = job["directives"].get("array")
    indices: list[int | None] = [None]
    if array:
        first, last = re.match(r"(\d+)-(\d+)", array).groups()
        indices = list(range(int(first), int(last) + 1))
    job["state"] = "RUNNING"
    _save(state, job)
    script_path = state / f"job-{job_id}.sh"
    script_path.write_text(job["script"])
    codes = []
    for index in indices:
        task_env = dict(env)
        log = job["directives"].get("output", str(state / "%A_%a.out")).replace("%A", job_id)
        if index is not None:
            task_env.update(SLURM_ARRAY_TASK_ID=str(index), SLURM_ARRAY_JOB_ID=job_id)
            log = log.replace("%a", str(index))
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as out:
            run = subprocess.run(["bash", str(script_path)], env=task_env, stdout=out, stderr=out)
        codes.append(run.returncode)
    job["exit_codes"] = codes
    job["state"] = "COMPLETED" if not any(codes) else "FAILED"
    _save(state, job)


def _srun(state: Path, argv: list[str]) -> int:
    command: list[str] = []
    args = iter(argv)
    for arg in args:
        if command:
            command.append(arg)
        elif arg in ("-n", "-N"):
            next(args)
        elif not arg.startswith("-"):
            command.append(arg)
    return subprocess.run(command).returncode


def _squeue(state: Path, argv: list[str]) -> int:
    calls = state / "squeue_calls"
    calls.write_text(str(int(calls.read_text()) + 1 if calls.exists() else 1))
    wanted = None
    if "-j" in argv:
        wanted = set(argv[argv.index("-j") + 1].split(","))
    for job in jobs(state):
        if job["state"] in ("PENDING", "RUNNING") and (wanted is None or job["id"] in wanted):
            print(f"{job['id']} {job['id']}")
    return 0


def _scancel(state: Path, argv: list[str]) -> int:
    for job_id in argv:
        job = _load(state, job_id)
        if job is not None and job["state"] in ("PENDING", "RUNNING"):
            job["state"] = "CANCELLED"
            _save(state, job)
    return 0


def _scontrol(state: Path, argv: list[str]) -> int:
    if argv[:2] == ["show", "hostnames"]:
        print("localhost")
    return 0
