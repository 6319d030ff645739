"""Run configuration: one YAML file per run, validated at load.

Every option lives here, with its default. Unknown keys are errors, and every error names the file
and the key path (`sources[2].format`). `configs/example_full.yaml` shows every option.

The sections live by concern: base (shared), execution (run, registry, executor), curation (the
data stages), training (train, eval, report); load (the whole `Config` and `load_config`).
"""

from pipeline.config.base import ConfigError, Section, unit_interval
from pipeline.config.curation import (
    APOLLO_SOURCE_TYPES,
    BenchmarkRef,
    CollectSection,
    DecontamSection,
    DedupSection,
    FamiliesSection,
    LangIdSection,
    LLMSection,
    MedicalGateBootstrap,
    ModelPrice,
    QualityRuleBounds,
    QualitySection,
    RewriteSection,
    ShardsSection,
    SourceFormat,
    SourceSection,
    SourceType,
    TargetBudget,
    TranslateSection,
)
from pipeline.config.execution import ExecutorSection, RaySection, RegistrySection, RunSection, SlurmSection
from pipeline.config.load import Config, load_config
from pipeline.config.training import (
    EvalSection,
    ExperimentsSection,
    PackingSection,
    ReportSection,
    SamplingSection,
    SpreadSection,
    TrainSection,
)

__all__ = [
    "ConfigError",
    "Section",
    "unit_interval",
    "ExecutorSection",
    "RaySection",
    "RegistrySection",
    "RunSection",
    "SlurmSection",
    "APOLLO_SOURCE_TYPES",
    "BenchmarkRef",
    "CollectSection",
    "DecontamSection",
    "DedupSection",
    "FamiliesSection",
    "LLMSection",
    "LangIdSection",
    "MedicalGateBootstrap",
    "ModelPrice",
    "QualityRuleBounds",
    "QualitySection",
    "RewriteSection",
    "ShardsSection",
    "SourceFormat",
    "SourceSection",
    "SourceType",
    "TargetBudget",
    "TranslateSection",
    "EvalSection",
    "ExperimentsSection",
    "PackingSection",
    "ReportSection",
    "SamplingSection",
    "SpreadSection",
    "TrainSection",
    "Config",
    "load_config",
]
