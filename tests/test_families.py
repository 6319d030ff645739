"""Family tagging: both schemes, and languages a scheme leaves without an expert."""

import pytest
from conftest import fake_upstream, record

from pipeline.dag import run_stage
from pipeline.record_io import list_parquet, read_records
from pipeline.registry import UnassignedLanguageError

pytestmark = pytest.mark.slow  # runs stages, subprocesses or training: not in `make test-fast`

SERIAL = {"executor": {"tasks": 1, "workers": 1}}


def _rows():
    return [
        record("a", "Fever and cough.", "en"),
        record("b", "发烧和咳嗽。", "zh"),
        record("c", "Homa na kikohozi.", "sw"),
        record("d", "Fièvre et toux.", "fr"),
    ]


def _output(out):
    return {r["id"]: r for path in list_parquet(out / "families" / "output") for r in read_records(path)}


def test_family7_tags_every_language(tmp_path, write_config):
    _, cfg = write_config({**SERIAL, "registry": {"scheme": "family7"}})
    fake_upstream(tmp_path, "langid", _rows())
    summary = run_stage("families", cfg, tmp_path)
    rows = _output(tmp_path)
    assert (rows["a"]["family"], rows["a"]["expert_id"], rows["a"]["tier"]) == ("indo_european", 4, "major")
    assert (rows["b"]["family"], rows["b"]["expert_id"], rows["b"]["tier"]) == ("sino_tibetan", 0, "major")
    assert (rows["c"]["family"], rows["c"]["expert_id"], rows["c"]["tier"]) == ("kongolese", 6, "minor")
    assert summary["docs_in"] == summary["docs_out"] == 4
    assert summary["docs_per_family"] == {"indo_european": 2, "kongolese": 1, "sino_tibetan": 1}


def test_major12_unassigned_language_is_an_error_naming_language_and_scheme(tmp_path, write_config):
    _, cfg = write_config({**SERIAL, "registry": {"scheme": "major12"}})
    fake_upstream(tmp_path, "langid", _rows())
    with pytest.raises(UnassignedLanguageError, match=r"'sw' \(1 records\).*scheme 'major12'"):
        run_stage("families", cfg, tmp_path)
    assert not (tmp_path / "families" / ".done").exists()


def test_major12_unassigned_language_quarantined_when_configured(tmp_path, write_config):
    _, cfg = write_config(
        {**SERIAL, "registry": {"scheme": "major12"}, "families": {"on_unassigned": "quarantine"}}
    )
    fake_upstream(tmp_path, "langid", _rows())
    summary = run_stage("families", cfg, tmp_path)
    rows = _output(tmp_path)
    assert set(rows) == {"a", "b", "d"}
    assert (rows["a"]["family"], rows["a"]["expert_id"]) == ("en", 2)
    assert (rows["d"]["family"], rows["d"]["expert_id"]) == ("fr", 4)
    assert summary["quarantined_by_reason"] == {"unassigned_language": 1}
    assert summary["per_language"]["sw"]["quarantined"] == {"unassigned_language": 1}
    quarantined = [r for p in list_parquet(tmp_path / "families" / "quarantine") for r in read_records(p)]
    assert [(r["id"], r["quarantine_reason"]) for r in quarantined] == [("c", "unassigned_language")]
    assert "scheme 'major12'" in quarantined[0]["quarantine_detail"]
