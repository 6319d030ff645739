"""The whole run config (`Config`) and `load_config`, which validates a YAML file into it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from pipeline import yaml_files
from pipeline.config.base import ConfigError, Section
from pipeline.config.curation import (
    CollectSection,
    DecontamSection,
    DedupSection,
    FamiliesSection,
    LangIdSection,
    LLMSection,
    QualitySection,
    RewriteSection,
    ShardsSection,
    SourceSection,
    TranslateSection,
)
from pipeline.config.execution import ExecutorSection, RegistrySection, RunSection
from pipeline.config.training import EvalSection, ExperimentsSection, ReportSection, TrainSection


class Config(Section):
    run: RunSection = RunSection()
    registry: RegistrySection = RegistrySection()
    executor: ExecutorSection = ExecutorSection()
    sources: list[SourceSection] = Field(default_factory=list)
    collect: CollectSection = CollectSection()
    llm: LLMSection = LLMSection()
    translate: TranslateSection = TranslateSection()
    rewrite: RewriteSection = RewriteSection()
    dedup: DedupSection = DedupSection()
    langid: LangIdSection = LangIdSection()
    families: FamiliesSection = FamiliesSection()
    quality: QualitySection = QualitySection()
    decontam: DecontamSection = DecontamSection()
    shards: ShardsSection = ShardsSection()
    train: TrainSection = TrainSection()
    eval: EvalSection = EvalSection()
    report: ReportSection = ReportSection()
    experiments: ExperimentsSection = ExperimentsSection()

    # Set by load_config: where the file lives (relative paths resolve against it).
    base_dir: Path = Field(default=Path("."), exclude=True)
    source_file: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _unique_source_names(self) -> Config:
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate source name(s): {dupes}")
        return self

    def resolve(self, path: str | Path) -> Path:
        """A path from the config, resolved against the config file's directory's project root."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    def registry_path(self) -> Path:
        from pipeline.registry import DEFAULT_REGISTRY_PATH

        return self.resolve(self.registry.path) if self.registry.path else DEFAULT_REGISTRY_PATH

    def section_hash(self, *keys: str) -> str:
        """Stable hash of some top-level sections, used to decide which stages a config change affects."""
        dumped = self.model_dump(mode="json")
        payload = json.dumps({k: dumped.get(k) for k in keys}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _format_errors(path: Path, exc: ValidationError) -> str:
    lines = [f"{path}: invalid config"]
    for err in exc.errors():
        loc = ""
        for part in err["loc"]:
            loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"  {loc or '(top level)'}: {msg}")
    return "\n".join(lines)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Load and validate a YAML config. Relative paths in it resolve against the project root
    (the directory holding `lang_families.yaml` above the config), else the config's directory."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml_files.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(path, exc)) from None
    return cfg.model_copy(update={"base_dir": _project_root(path.resolve()), "source_file": path.resolve()})


def _project_root(config_path: Path) -> Path:
    for parent in config_path.parents:
        if (parent / "lang_families.yaml").is_file():
            return parent
    return config_path.parent
