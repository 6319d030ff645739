"""Where and how a run executes: its name and seed, the language registry, the executor."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from pipeline.config.base import Section, unit_interval

MAX_TASKS = 10_000  # more tasks than this is a typo (10^26) or a run of mostly empty tasks
MAX_WORKERS = 4_096


class RunSection(Section):
    name: str = "medbabel"
    seed: int = 0
    warn_removed_share: float = unit_interval(
        0.05, "a filtering stage that removes more than this share of one language of one source warns"
    )


class RegistrySection(Section):
    path: str | None = Field(None, description="registry file; the project's lang_families.yaml when unset")
    scheme: str | None = Field(None, description="expert scheme; the registry's default_scheme when unset")


class SlurmSection(Section):
    partition: str = "cpu"
    time: str = Field("04:00:00", description="time limit of each array job")
    cpus_per_task: int = Field(1, ge=1)
    mem_per_cpu_gb: float = Field(2.0, gt=0)
    qos: str | None = None
    sbatch_args: dict[str, str] = Field(default_factory=dict, description="extra #SBATCH directives")
    condaenv: str | None = Field(None, description="conda environment the jobs activate")
    venv_path: str | None = Field(None, description="venv the jobs activate; the running one when unset")
    env_command: str | None = Field(None, description="shell lines replacing the activation entirely")
    max_array_size: int = Field(1001, description="the cluster's MaxArraySize; more tasks split into jobs")
    poll_s: float = Field(30.0, gt=0, description="how often the waiting process checks task completions")


class RaySection(Section):
    address: str | None = Field(
        None, description="ray cluster address ('auto', 'host:port'); a local cluster is started when unset"
    )
    cpus_per_task: int = Field(1, ge=1)
    mem_per_task_gb: float = Field(2.0, gt=0)
    time_s: int | None = Field(None, description="kill and retry a task running longer than this")


class ExecutorSection(Section):
    kind: Literal["local", "ray", "slurm"] = "local"
    tasks: int = Field(
        2, ge=1, le=MAX_TASKS, description="how many tasks (input shards) each stage is split into"
    )
    workers: int = Field(
        -1, ge=-1, le=MAX_WORKERS, description="tasks running at once (-1: all); on Slurm the array's %limit"
    )
    slurm: SlurmSection = SlurmSection()
    ray: RaySection = RaySection()

    @field_validator("workers")
    @classmethod
    def _workers_not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("0 workers would run nothing; -1 runs every task at once")
        return value
