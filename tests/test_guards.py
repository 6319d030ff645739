"""Guards a user sees: removal per language and source in the summary and on the console, a warning
with examples above `run.warn_removed_share`, and `medbabel explain <id>`."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT, fake_upstream, record, run_stage_cli

from pipeline.dag import run_stage
from pipeline.guards import removal_table

SW = [
    "Homa ni dalili ya kawaida ya maambukizi, na mtoto mwenye homa kali anapaswa kuonwa na daktari.",
    "Kunywa maji mengi na kupumzika ni muhimu sana kwa mtu aliye na mafua au homa ya kawaida.",
    "Chanjo husaidia mwili kujikinga dhidi ya magonjwa hatari kama surua, polio na kifaduro.",
    "Osha mikono yako kwa sabuni na maji safi kabla ya kula na baada ya kutoka chooni kila siku.",
]
EN = [
    "Fever is a common sign of infection, and a child with a high fever should be seen by a doctor.",
    "Drinking plenty of water and resting are very important for anyone with a cold or a fever.",
    "Vaccines help the body protect itself against dangerous diseases such as measles and polio.",
]


def _rows() -> list[dict]:
    rows = [record(f"sw-{i}", SW[i % 4] + f" ({i})", "sw", source="clinic_leaflets") for i in range(20)]
    rows += [record(f"en-as-sw-{i}", text, "sw", source="clinic_leaflets") for i, text in enumerate(EN)]
    rows += [record(f"book-{i}", SW[i % 4] + f" [{i}]", "sw", source="books") for i in range(10)]
    return rows


def test_removal_per_language_and_source_with_a_warning_and_examples(tmp_path, write_config, capsys):
    fake_upstream(tmp_path, "dedup", _rows())
    cfg = write_config({"executor": {"tasks": 1, "workers": 1}})[1]
    summary = run_stage("langid", cfg, tmp_path)
    table = summary["removal_by_language_source"]["sw"]
    assert table["clinic_leaflets"] == {
        "in": 23,
        "removed": 3,
        "share": round(3 / 23, 4),
        "by_reason": {"wrong_language": 3},
    }
    assert table["books"]["removed"] == 0
    [warning] = summary["removal_warnings"]  # 13% of clinic_leaflets' Swahili; books lost nothing
    assert (warning["language"], warning["source"], warning["rule"]) == (
        "sw",
        "clinic_leaflets",
        "wrong_language",
    )
    assert sorted(e["id"] for e in warning["examples"]) == [f"en-as-sw-{i}" for i in range(3)]
    assert all(e["detail"].startswith("declared sw, detected en") for e in warning["examples"])
    console = capsys.readouterr().out
    assert "WARNING: removed 13.0% of sw from source 'clinic_leaflets' (3 of 23; more than 5%)" in console
    assert "en-as-sw-0: 'Fever is a common sign" in console
    assert json.loads((tmp_path / "langid" / "summary.json").read_text())["removal_warnings"] == [warning]


def test_warning_share_is_configurable(tmp_path, write_config):
    fake_upstream(tmp_path, "dedup", _rows())
    cfg = write_config({"executor": {"tasks": 1, "workers": 1}, "run": {"warn_removed_share": 0.2}})[1]
    summary = run_stage("langid", cfg, tmp_path)
    assert summary["removal_by_language_source"]["sw"]["clinic_leaflets"]["removed"] == 3
    assert summary["removal_warnings"] == []


def test_removal_table_keeps_source_names_with_slashes():
    counters = {
        "guard_in/sw/tico19-terms/facebook": 10,
        "guard_removed/sw/low_quality:n_words/tico19-terms/facebook": 2,
    }
    row = removal_table(counters)["sw"]["tico19-terms/facebook"]
    assert row == {"in": 10, "removed": 2, "share": 0.2, "by_reason": {"low_quality:n_words": 2}}


def explain_cli(config, out, *args) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pipeline", "explain", *args, "--config", str(config), "--out", str(out)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True)


def test_explain_shows_provenance_decision_and_every_signal(tmp_path, write_config):
    rows = _rows()
    rows[20]["source_file"], rows[20]["source_position"] = "leaflets/2024.jsonl", 7
    fake_upstream(tmp_path, "dedup", rows)
    config = write_config({"executor": {"tasks": 1, "workers": 1}})[0]
    assert run_stage_cli("langid", config, tmp_path).returncode == 0
    result = explain_cli(config, tmp_path, "en-as-sw-0")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "source_file=leaflets/2024.jsonl, source_position=7" in text
    assert "seen in:    dedup:output -> langid:quarantine" in text
    assert "removed by: langid: wrong_language (declared sw, detected en" in text
    assert "predictions: en " in text and "min_stopwords" in text and "max_top_ngram_fraction" in text
    assert "second opinion (CLD2): en" in text
    as_json = json.loads(explain_cli(config, tmp_path, "sw-3", "--json").stdout)
    assert as_json["removed_by"] is None and as_json["langid"]["keep"]
    assert as_json["langid"]["second_opinion"] == "sw"
    assert {r["rule"] for r in as_json["quality"]["rules"]} >= {"min_stopwords", "max_mojibake_ratio"}
    missing = explain_cli(config, tmp_path, "no-such-id")
    assert missing.returncode == 2 and "no-such-id" in missing.stderr
