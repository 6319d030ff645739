"""Stages: the DAG, the per-stage directory layout, resumption and completion markers.

Each stage lives in `OUT/<stage>/`:

    output/       the stage's records (Parquet, record schema), one file per task
    quarantine/   records set aside, with `quarantine_reason` / `quarantine_detail`
    logs/         datatrove logs, per-task stats and completion files (this is what resumes)
    summary.json  docs in/out, quarantined by reason, per language
    .done         completion marker holding the stage's effective fingerprint

The effective fingerprint hashes the stage's own config sections, the registry, the seed and the
upstream markers. A stage whose previous, unfinished attempt had another fingerprint is wiped and
started over; one with the same fingerprint resumes (datatrove skips its completed tasks).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import shutil
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import atomic, guards
from pipeline.compat import stat_totals, task_stats_files
from pipeline.config import Config
from pipeline.handoff import record_outputs, verify_outputs
from pipeline.registry import Registry, load_registry


@dataclass(frozen=True)
class StageSpec:
    name: str
    module: str
    inputs: tuple[str, ...]
    config_keys: tuple[str, ...]
    description: str
    data_files: tuple[str, ...] = ()  # files shipped with the code that shape the output (project-relative)


STAGES: tuple[StageSpec, ...] = (
    StageSpec(
        "collect",
        "stages.collect",
        (),
        ("sources", "collect"),
        "read every configured source into the record schema",
    ),
    StageSpec(
        "translate",
        "stages.translate",
        ("collect",),
        ("translate", "llm"),
        "translate into target languages (translation memory first, then an LLM)",
    ),
    StageSpec(
        "rewrite",
        "stages.rewrite",
        ("collect",),
        ("rewrite", "llm"),
        "turn passages into question-answer pairs with an LLM (optional)",
    ),
    StageSpec(
        "dedup",
        "stages.dedup",
        ("collect", "translate", "rewrite"),
        ("dedup",),
        "exact and MinHash near-duplicate removal, per language",
    ),
    StageSpec(
        "langid",
        "stages.langid",
        ("dedup",),
        ("langid",),
        "fastText language ID, verify declared languages",
        data_files=("pipeline/text/quality_languages.yaml",),  # stop-word lists: the common-word check
    ),
    StageSpec(
        "families",
        "stages.families",
        ("langid",),
        ("families",),
        "tag family, expert and tier from the registry",
    ),
    StageSpec(
        "quality",
        "stages.quality",
        ("families",),
        ("quality",),
        "heuristic + medical-domain quality score, PII scrubbing",
        data_files=("pipeline/text/quality_languages.yaml",),
    ),
    StageSpec(
        "decontam",
        "stages.decontam",
        ("quality",),
        ("decontam",),
        "remove documents sharing long n-grams with benchmarks",
    ),
    StageSpec(
        "shards",
        "stages.shards",
        ("decontam",),
        ("shards",),
        "token counts, train/validation split, sharded Parquet + dataset card",
    ),
    StageSpec(
        "train",
        "moe_train.train",
        ("shards",),
        ("train",),
        "upcycle a dense Qwen2 into family experts and train it",
    ),
    StageSpec(
        "eval",
        "moe_train.eval.evaluate",
        ("train",),
        ("eval",),
        "medical QA accuracy, perplexity and routing analysis",
    ),
    StageSpec(
        "report", "moe_train.eval.report", ("eval",), ("report",), "one HTML page that shows the whole run"
    ),
)
STAGE_BY_NAME = {s.name: s for s in STAGES}


class StageInputError(RuntimeError):
    """An upstream stage has not completed."""


@dataclass
class StageContext:
    """Everything a stage needs: config, registry and its directories."""

    spec: StageSpec
    cfg: Config
    out: Path
    registry: Registry
    fingerprint: str
    summary: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def stage_dir(self) -> Path:
        return self.out / self.spec.name

    @property
    def output_dir(self) -> Path:
        return self.stage_dir / "output"

    @property
    def quarantine_dir(self) -> Path:
        return self.stage_dir / "quarantine"

    @property
    def logs_dir(self) -> Path:
        return self.stage_dir / "logs"

    def input_dirs(self) -> list[Path]:
        return [self.out / name / "output" for name in self.spec.inputs]

    def input_readers(self, **kwargs) -> list:
        """One RecordReader per upstream output directory that holds records."""
        from pipeline.record_io import RecordReader, list_parquet

        return [RecordReader(d, **kwargs) for d in self.input_dirs() if list_parquet(d)]

    def run_pipeline(
        self, pipeline: list, name: str = "main", tasks: int | None = None, workers: int | None = None
    ):
        """Run steps under the configured executor; per-task logs/stats land in logs/<name>/.

        Returns once every task has completed; raises `TaskFailedError` otherwise."""
        from pipeline.executors import PipelineRun

        return self.run_pipelines([PipelineRun(pipeline, name, tasks, workers)])

    def run_pipelines(self, runs: list):
        """Run a chain of `PipelineRun`s, each starting once the previous one completed (on Slurm:
        array jobs chained with `afterok`), the way datatrove's MinHash stages are split."""
        from pipeline.executors import run_pipelines

        return run_pipelines(self.cfg, runs, self.logs_dir, job_prefix=self.spec.name)

    def counters(self) -> dict[str, float]:
        """Sum of every datatrove stat of every step and task of this stage (survives resumes)."""
        return merge_stats(self.logs_dir)


def merge_stats(logs_dir: Path) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for stats_file in task_stats_files(logs_dir):
        for key, value in stat_totals(json.loads(stats_file.read_text())):
            totals[key] += value
    return dict(totals)


def summarize_counters(counters: dict[str, float]) -> dict:
    """Turn flat counters (`in/en`, `out/en`, `quarantined/<reason>/<lang>`) into the summary layout."""
    summary: dict = {
        "docs_in": 0,
        "docs_out": 0,
        "quarantined": 0,
        "quarantined_by_reason": {},
        "per_language": {},
    }
    per_lang: dict[str, dict] = defaultdict(lambda: {"in": 0, "out": 0, "quarantined": {}})
    for key, value in sorted(counters.items()):
        parts = key.split("/")
        value = int(value)
        if parts[0] == "in" and len(parts) == 2:
            summary["docs_in"] += value
            per_lang[parts[1]]["in"] += value
        elif parts[0] == "out" and len(parts) == 2:
            summary["docs_out"] += value
            per_lang[parts[1]]["out"] += value
        elif parts[0] == "quarantined" and len(parts) == 2:
            summary["quarantined_by_reason"][parts[1]] = value
            summary["quarantined"] += value
        elif parts[0] == "quarantined" and len(parts) == 3:
            per_lang[parts[2]]["quarantined"][parts[1]] = value
    summary["per_language"] = dict(sorted(per_lang.items()))
    return summary


def fingerprint_inputs(cfg: Config, spec: StageSpec, registry: Registry) -> str:
    """Hash of what the stage's own config depends on (not its upstream)."""
    parts = [cfg.section_hash(*spec.config_keys), registry.content_hash(), str(cfg.run.seed)]
    root = Path(__file__).resolve().parent.parent
    parts += [hashlib.sha256((root / f).read_bytes()).hexdigest() for f in spec.data_files]
    if spec.name == "collect":
        parts.append(_sources_state(cfg))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def corpus_config_hash(cfg: Config, registry: Registry) -> str:
    """Hash of everything in the config that shapes the corpus (every stage up to shards, the seed and
    the registry), but not where or how it ran (paths on disk, executor, run name): the manifest's
    `config_hash`, equal for the same config on any machine."""
    keys = []
    for spec in STAGES:
        keys += [k for k in spec.config_keys if k not in keys]
        if spec.name == "shards":
            break
    parts = [cfg.section_hash(*keys), registry.content_hash(), str(cfg.run.seed)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _sources_state(cfg: Config) -> str:
    """Names, sizes and mtimes of source files: editing a source re-runs collection."""
    from pipeline.sources import expand_source_paths

    state = []
    for source in cfg.sources:
        for path in expand_source_paths(cfg, source, must_exist=False):
            st = path.stat()
            where = path.relative_to(cfg.base_dir) if path.is_relative_to(cfg.base_dir) else path
            state.append(f"{where}:{st.st_size}:{int(st.st_mtime)}")
    return hashlib.sha256("\n".join(state).encode()).hexdigest()[:16]


def effective_fingerprint(cfg: Config, spec: StageSpec, registry: Registry, out: Path) -> str:
    upstream = [
        marker_path(out, name).read_text().strip() if marker_path(out, name).exists() else "-"
        for name in spec.inputs
    ]
    own = fingerprint_inputs(cfg, spec, registry)
    return hashlib.sha256("|".join([own, *upstream]).encode()).hexdigest()[:16]


def marker_path(out: Path, stage: str) -> Path:
    return out / stage / ".done"


def write_fingerprint_files(cfg: Config, out: Path) -> list[str]:
    """Write OUT/.fingerprints/<stage> for every stage, touching only those that changed (make reads mtimes)."""
    registry = load_registry(cfg.registry_path())
    directory = out / ".fingerprints"
    directory.mkdir(parents=True, exist_ok=True)
    changed = []
    for spec in STAGES:
        path = directory / spec.name
        value = fingerprint_inputs(cfg, spec, registry)
        if not path.exists() or path.read_text().strip() != value:
            atomic.write_text(path, value + "\n")
            changed.append(spec.name)
    return changed


def warn_idle_tasks(spec: StageSpec, cfg: Config, out: Path) -> None:
    """Say so when `executor.tasks` exceeds the stage's input files: the extra tasks read nothing."""
    if spec.module.startswith("moe_train"):
        return
    if spec.inputs:
        from pipeline.record_io import list_parquet

        files = sum(len(list_parquet(out / name / "output")) for name in spec.inputs)
    else:
        from pipeline.sources import expand_source_paths

        files = sum(len(expand_source_paths(cfg, s, must_exist=False)) for s in cfg.sources)
    if files and cfg.executor.tasks > files:
        print(
            f"[{spec.name}] warning: executor.tasks is {cfg.executor.tasks} but there are {files} input "
            f"files; {cfg.executor.tasks - files} tasks will have nothing to read",
            file=sys.stderr,
        )


def load_stage_module(spec: StageSpec):
    return importlib.import_module(spec.module)


def run_stage(name: str, cfg: Config, out: Path, force: bool = False) -> dict:
    """Run one stage (resuming an interrupted attempt), write its summary and completion marker."""
    spec = STAGE_BY_NAME[name]
    out = Path(out)
    for upstream in spec.inputs:
        if not marker_path(out, upstream).exists():
            raise StageInputError(
                f"stage '{name}' needs '{upstream}' to complete first (run `make {upstream}`)"
            )
    registry = load_registry(cfg.registry_path())
    module = load_stage_module(spec)
    if hasattr(module, "validate"):
        module.validate(cfg, registry)  # before anything is touched: a config typo must not wipe old output
    warn_idle_tasks(spec, cfg, out)
    fingerprint = effective_fingerprint(cfg, spec, registry, out)
    stage_dir = out / name
    marker = marker_path(out, name)
    if marker.exists() and marker.read_text().strip() == fingerprint and not force:
        print(f"[{name}] up to date")
        return (
            json.loads((stage_dir / "summary.json").read_text())
            if (stage_dir / "summary.json").exists()
            else {}
        )
    started = stage_dir / ".started"
    if force or (stage_dir.exists() and (not started.exists() or started.read_text().strip() != fingerprint)):
        shutil.rmtree(
            stage_dir, ignore_errors=True
        )  # config or inputs changed: previous partial work is stale
    for upstream in spec.inputs:
        verify_outputs(out, upstream)  # before anything is touched or read
    marker.unlink(missing_ok=True)
    stage_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(started, fingerprint + "\n")

    ctx = StageContext(spec, cfg, out, registry, fingerprint)
    t0 = time.time()
    result = module.run(ctx) or {}
    counters = ctx.counters()
    summary = {"stage": name, **summarize_counters(counters), **ctx.summary, **result}
    table = guards.removal_table(counters)
    if table:  # a filtering stage: removal per language and source, and its warnings
        share = cfg.run.warn_removed_share
        summary["removal_by_language_source"] = table
        summary["removal_warnings"] = guards.warnings(table, ctx.quarantine_dir, share)
    summary["seconds"] = round(time.time() - t0, 2)
    atomic.write_json(stage_dir / "summary.json", summary, indent=2, ensure_ascii=False)
    print(format_summary(summary))
    if summary.get("removal_warnings"):
        print(guards.format_warnings(name, summary["removal_warnings"], cfg.run.warn_removed_share))
    record_outputs(stage_dir)
    atomic.write_text(marker, fingerprint + "\n")
    return summary


def format_summary(summary: dict) -> str:
    seconds = summary.get("seconds", 0)
    if not any(summary.get(k) for k in ("docs_in", "docs_out", "quarantined")):
        return f"[{summary['stage']}] done ({seconds} s); details in {summary['stage']}/summary.json"
    lines = [
        f"[{summary['stage']}] in {summary.get('docs_in', 0)}, out {summary.get('docs_out', 0)}, "
        f"quarantined {summary.get('quarantined', 0)} ({seconds} s)"
    ]
    for reason, count in sorted(summary.get("quarantined_by_reason", {}).items(), key=lambda kv: -kv[1]):
        lines.append(f"    {reason:<40} {count:>8}")
    return "\n".join(lines)
