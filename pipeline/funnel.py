"""The stage funnel: what each stage received, kept and set aside, read from `OUT/<stage>/summary.json`.

One builder for the two pages that show it, the dataset card (pipeline/dataset_card.py) and the run
report (moe_train/report.py), so both count the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.dag import STAGES

# Stages whose output joins another stage's main input (translate, rewrite): they add documents.
ADDING_STAGES = frozenset(name for spec in STAGES for name in spec.inputs[1:])


@dataclass(frozen=True)
class FunnelRow:
    stage: str
    ran: bool = True  # False when the stage has no readable summary.json
    docs_in: int = 0
    docs_out: int = 0
    quarantined: int = 0
    removed: dict[str, int] = field(default_factory=dict)  # reason -> records, most frequent first
    seconds: float | None = None
    warnings: list[dict] = field(default_factory=list)  # removal guards (pipeline.guards), if any

    @property
    def adds(self) -> bool:
        return self.stage in ADDING_STAGES

    @property
    def saw_documents(self) -> bool:
        return bool(self.docs_in or self.docs_out or self.removed)

    @classmethod
    def from_summary(cls, stage: str, summary: dict) -> FunnelRow:
        """A row from a stage summary (the layout of `pipeline.dag.summarize_counters`)."""
        reasons = summary.get("quarantined_by_reason") or {}
        removed = dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))
        return cls(
            stage,
            docs_in=int(summary.get("docs_in", 0)),
            docs_out=int(summary.get("docs_out", 0)),
            quarantined=int(summary.get("quarantined", sum(removed.values()))),
            removed=removed,
            seconds=summary.get("seconds"),
            warnings=list(summary.get("removal_warnings") or []),
        )


def stage_funnel(out: Path, stages: list[str] | None = None) -> list[FunnelRow]:
    """One row per stage in DAG order (every stage, or the ones named); a stage without a readable
    summary gets a row with `ran=False`."""
    rows = []
    for stage in stages if stages is not None else [spec.name for spec in STAGES]:
        try:
            summary = json.loads((Path(out) / stage / "summary.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            summary = None
        ran = isinstance(summary, dict)
        rows.append(FunnelRow.from_summary(stage, summary) if ran else FunnelRow(stage, ran=False))
    return rows


def stages_before(stage: str) -> list[str]:
    """The DAG's stages that come before `stage`."""
    names = [spec.name for spec in STAGES]
    return names[: names.index(stage)]
