"""The one stage-funnel builder behind the dataset card and the run report."""

from __future__ import annotations

import json

from pipeline.dag import STAGES
from pipeline.funnel import FunnelRow, stage_funnel, stages_before


def _summary(out, stage, **summary):
    (out / stage).mkdir(parents=True, exist_ok=True)
    (out / stage / "summary.json").write_text(json.dumps(summary))


def test_rows_follow_the_dag_and_say_which_stages_ran(tmp_path):
    _summary(
        tmp_path,
        "dedup",
        docs_in=20,
        docs_out=8,
        quarantined=12,
        quarantined_by_reason={"exact_duplicate": 3, "near_duplicate": 9},
        seconds=1.5,
    )
    _summary(tmp_path, "translate", docs_in=4, docs_out=6, quarantined=0, quarantined_by_reason={})
    (tmp_path / "langid").mkdir()
    (tmp_path / "langid" / "summary.json").write_text("{not json")  # a torn file reads as not run

    rows = stage_funnel(tmp_path)

    assert [r.stage for r in rows] == [spec.name for spec in STAGES]
    by_stage = {r.stage: r for r in rows}
    dedup = by_stage["dedup"]
    assert (dedup.ran, dedup.docs_in, dedup.docs_out, dedup.quarantined, dedup.seconds) == (
        True,
        20,
        8,
        12,
        1.5,
    )
    assert list(dedup.removed.items()) == [("near_duplicate", 9), ("exact_duplicate", 3)]
    assert by_stage["translate"].adds and not dedup.adds
    assert not by_stage["langid"].ran and not by_stage["collect"].ran


def test_a_subset_of_stages_and_a_summary_without_totals(tmp_path):
    _summary(tmp_path, "quality", docs_in=5, docs_out=3, quarantined_by_reason={"too_short": 2})
    rows = stage_funnel(tmp_path, stages_before("decontam"))
    assert [r.stage for r in rows] == stages_before("decontam")
    quality = rows[-1]
    assert quality.quarantined == 2 and quality.saw_documents
    assert not FunnelRow("dedup").saw_documents
