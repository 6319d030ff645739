"""Collection (`make collect`): read every configured source into the record schema.

Every source is checked before any reading starts (its files exist, its language and fields make
sense); a problem stops the stage with a ConfigError naming the source. Then one reader per source
(pipeline/readers/) streams its files through the configured datatrove executor into
`OUT/collect/output/`; input that cannot become a record lands in `OUT/collect/rejected/` with
file, line and reason. docs/collect.md describes formats, options and rejects.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import Config, ConfigError, SourceSection
from pipeline.dag import StageContext
from pipeline.readers import READERS, HFSourceReader, open_hf_dataset, required_fields, source_root
from pipeline.record_io import RecordWriter, list_parquet, read_table
from pipeline.registry import Registry, UnknownLanguageError
from pipeline.sources import expand_source_paths


@dataclass(frozen=True)
class ResolvedSource:
    source: SourceSection
    files: list[Path]
    root: Path


def validate_sources(
    cfg: Config, registry: Registry, hf_cache_dir: Path | None = None
) -> list[ResolvedSource]:
    """Check every source and list its files; raise ConfigError naming the source on the first problem."""
    if not cfg.sources:
        raise ConfigError(
            f"{cfg.source_file or 'config'}: no sources configured (the `sources:` list is empty)"
        )
    resolved = []
    for source in cfg.sources:
        where = f"source '{source.name}'"
        if source.language is not None:
            try:
                registry.normalize_code(source.language)
            except UnknownLanguageError as exc:
                raise ConfigError(f"{where}: language: {exc}") from None
        if source.format == "hf":
            try:
                dataset = open_hf_dataset(cfg, source, hf_cache_dir)
            except Exception as exc:  # datasets raises many kinds; all mean "cannot load it"
                raise ConfigError(
                    f"{where}: cannot load Hugging Face dataset '{source.path}' "
                    f"(not a local dataset directory, and not in the hub cache or reachable): {exc}"
                ) from None
            _check_columns(where, source, set(dataset.column_names))
            resolved.append(ResolvedSource(source, [], Path(".")))
            continue
        files = [p.resolve() for p in expand_source_paths(cfg, source)]
        for path in files:
            if not os.access(path, os.R_OK):
                raise ConfigError(f"{where}: file {path} is not readable")
        resolved.append(ResolvedSource(source, files, source_root(cfg, source)))
    return resolved


def _check_columns(where: str, source: SourceSection, columns: set[str]) -> None:
    """A dataset with a fixed schema must have the fields the source names."""
    missing = [f for f in required_fields(source) if f not in columns]
    if missing:
        raise ConfigError(f"{where}: field(s) {missing} not in the dataset's columns {sorted(columns)}")


def validate(cfg: Config, registry: Registry) -> None:
    """Called by the stage runner before it touches OUT/collect, and by `medbabel check-config`."""
    validate_sources(cfg, registry)


def run(ctx: StageContext) -> dict:
    rejected_dir = ctx.stage_dir / "rejected"
    hf_cache = ctx.stage_dir / "hf_cache"
    sources = validate_sources(ctx.cfg, ctx.registry, hf_cache)
    readers = []
    for item in sources:
        if item.source.format == "hf":
            readers.append(
                HFSourceReader(ctx.cfg, item.source, ctx.cfg.collect, ctx.registry, rejected_dir, hf_cache)
            )
        else:
            reader_class = READERS[item.source.format]
            readers.append(
                reader_class(item.source, item.files, item.root, ctx.cfg.collect, ctx.registry, rejected_dir)
            )
    ctx.run_pipeline([*readers, RecordWriter(ctx.output_dir)])
    counters = ctx.counters()
    return {
        "sources": {
            item.source.name: {
                "format": item.source.format,
                "files": len(item.files),
                "records": int(counters.get(f"source/{item.source.name}", 0)),
            }
            for item in sources
        },
        "rejected_dir": str(rejected_dir),
        "rejected_by_source": rejected_counts(rejected_dir),
    }


def rejected_counts(rejected_dir: Path) -> dict[str, dict[str, int]]:
    """source -> reason -> number of rejected inputs, from the rejected/ files."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for path in list_parquet(rejected_dir):
        table = read_table(path, columns=["source", "reason"])
        for source, reason in zip(table["source"].to_pylist(), table["reason"].to_pylist(), strict=True):
            counts[source][reason] += 1
    return {s: dict(sorted(r.items())) for s, r in sorted(counts.items())}
