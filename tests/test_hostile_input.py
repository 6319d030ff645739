"""Hostile input: every kind of bad input is set aside with its reason or stops the run with a clear
message, never a traceback. The test prints the table `input kind -> outcome`; every row must match.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import run_stage_cli
from helpers.hostile_corpus import build_cases, build_stops

from pipeline.cli import main as cli_main
from pipeline.record_io import list_parquet

pytestmark = pytest.mark.slow  # runs stages, subprocesses or training: not in `make test-fast`

ROOT = Path(__file__).resolve().parent.parent


def _table(rows: list[tuple[str, str, str, bool]]) -> str:
    width = max(len(r[0]) for r in rows)
    lines = [f"{'input kind':<{width}}  ok  outcome", f"{'-' * width}  --  {'-' * 60}"]
    for kind, expected, got, ok in rows:
        lines.append(
            f"{kind:<{width}}  {'✓' if ok else '✗'}   {got}" + ("" if ok else f"   (expected: {expected})")
        )
    return "\n".join(lines)


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    """One collection run over every hostile source, through the CLI as a user runs it."""
    tmp = tmp_path_factory.mktemp("hostile")
    cases = build_cases(tmp / "inputs")
    config = tmp / "config.yaml"
    config.write_text(
        yaml.safe_dump({"executor": {"tasks": 2, "workers": 1}, "sources": [c.source for c in cases]})
    )
    result = run_stage_cli(
        "collect", config, tmp / "out", timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT))
    )
    return cases, tmp / "out", result


def test_hostile_inputs_are_rejected_with_their_reason(collected):
    cases, out, result = collected
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    rejects: dict[str, list[dict]] = defaultdict(list)
    for path in list_parquet(out / "collect" / "rejected"):
        for row in pq.read_table(path).to_pylist():
            rejects[row["source"]].append(row)
    kept: dict[str, list[dict]] = defaultdict(list)
    for path in list_parquet(out / "collect" / "output"):
        for row in pq.read_table(path, columns=["source", "text", "language"]).to_pylist():
            kept[row["source"]].append(row)

    rows = []
    for case in cases:
        name = case.source["name"]
        got_rejects = sorted(
            ((r["reason"], r["line"]) for r in rejects[name]), key=lambda x: (x[1] or 0, x[0])
        )
        want = sorted(case.expect_rejects, key=lambda x: (x[1] or 0, x[0]))
        if any(line is None for _, line in case.expect_rejects):  # the line of a break varies with the file
            got_cmp = [(reason, None) for reason, _ in got_rejects]
        else:
            got_cmp = got_rejects
        problems = []
        if got_cmp != want:
            problems.append(f"rejects {got_rejects}")
        n_kept = len(kept[name])
        if case.expect_kept >= 0 and n_kept != case.expect_kept:
            problems.append(f"{n_kept} kept, expected {case.expect_kept}")
        if case.expect_kept < 0 and n_kept == 0:
            problems.append("nothing kept before the break")
        if case.check_kept and not problems and (why := case.check_kept(kept[name])):
            problems.append(why)
        for r in rejects[name]:
            if r["raw"] is not None and len(r["raw"]) > 300:
                problems.append(f"raw snippet of {len(r['raw'])} chars")
        reasons = ", ".join(sorted({r for r, _ in got_rejects})) or "no rejects"
        got = f"{reasons}; {n_kept} kept" + (f" -- {'; '.join(problems)}" if problems else "")
        rows.append((case.kind, case.outcome, got, not problems))
    table = _table(rows)
    print("\n" + table)
    assert all(ok for *_, ok in rows), "\n" + table


def test_hostile_configs_stop_with_a_message(tmp_path, capsys):
    rows = []
    for stop in build_stops(tmp_path / "inputs"):
        config = tmp_path / f"{stop.kind.replace(' ', '_')}.yaml"
        config.write_text(stop.yaml_text if stop.yaml_text is not None else yaml.safe_dump(stop.config))
        out = stop.extra.get("out", str(tmp_path / "out"))
        code = cli_main(["run", "collect", "--config", str(config), "--out", out])
        captured = capsys.readouterr()
        err = captured.err.strip()
        ok = code == 2 and stop.message in err and "Traceback" not in captured.out + captured.err
        last = err.splitlines()[-1] if err else "(no message)"
        rows.append((stop.kind, f"exit 2, '{stop.message}'", f"exit {code}: {last[:110]}", ok))
    table = _table(rows)
    print("\n" + table)
    assert all(ok for *_, ok in rows), "\n" + table


def test_html_soup_is_quarantined_before_the_shards(tmp_path):
    """Collection keeps markup verbatim (it only normalises); the curation stages must set it aside."""
    from pipeline.config import load_config
    from pipeline.dag import run_stage

    soups = [
        "<html><body><div class='nav'><a href='/'>Home</a> | <a href='/x'>x</a></div>" * 20
        + "</body></html>",
        "<div><span style='color:red'>&nbsp;</span><script>var a=1;</script><table><tr><td>&lt;&gt;</td></tr></table></div>"
        * 15,
    ]
    (tmp_path / "soup.jsonl").write_text("\n".join(json.dumps({"text": s}) for s in soups) + "\n")
    source = {"name": "web", "path": str(tmp_path / "soup.jsonl"), "format": "jsonl", "source_type": "web"}
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "executor": {"tasks": 1, "workers": 1},
                "sources": [{**source, "license": "CC0", "language": "en"}],
            }
        )
    )
    cfg, out = load_config(config), tmp_path / "out"
    for stage in ("collect", "translate", "rewrite", "dedup", "langid", "families", "quality"):
        run_stage(stage, cfg, out)
    quarantined = [
        row
        for path in list_parquet(out)
        if "quarantine" in path.parts
        for row in pq.read_table(path, columns=["text", "quarantine_stage", "quarantine_reason"]).to_pylist()
    ]
    reasons = sorted(
        f"{r['quarantine_stage']}: {r['quarantine_reason']}" for r in quarantined if r["text"] in soups
    )
    print(f"\nHTML soup -> {'; '.join(reasons)}")
    assert len(reasons) == len(soups)
    assert all(r.startswith(("langid: wrong_language", "quality: low_quality")) for r in reasons)
    assert not list_parquet(out / "quality" / "output")


# --- decompression bombs in bounded memory ------------------------------------------------------

_PEAK_RSS = """
import resource, subprocess, sys
result = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stderr.write(result.stderr[-3000:])
print(result.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)
"""


def _collect_peak_mb(tmp: Path, name: str, source: dict, collect: dict) -> tuple[int, int, Path]:
    """(exit code, peak RSS in MB of the collect run and its workers, OUT)."""
    config = tmp / f"{name}.yaml"
    settings = {"executor": {"tasks": 1, "workers": 1}, "collect": collect, "sources": [source]}
    config.write_text(yaml.safe_dump(settings))
    out = tmp / f"out-{name}"
    command = [sys.executable, "-m", "pipeline", "run", "collect", "--config", str(config), "--out", str(out)]
    result = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, *command],
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    code, peak = result.stdout.split()
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr, result.stderr
    return int(code), int(peak), out


def test_bomb_inputs_stay_within_a_few_hundred_mb(tmp_path):
    """Each bomb (built small on disk) is read in bounded memory: stopped by the per-file limits by
    default, and, with those lifted, by the per-record byte cap (each huge line/segment read to its
    end a piece at a time). Peak RSS is measured on the collect process and its workers, next to a
    run over a one-line file."""
    from helpers.hostile_corpus import (
        _source,
        gzip_one_line_bomb,
        tmx_segment_bomb,
        zstd_many_records_bomb,
        zstd_one_line_bomb,
    )

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    small = inputs / "small.jsonl"
    small.write_text('{"text": "Fever and cough."}\n')
    lifted = {"max_compression_ratio": 1e12, "max_decompressed_bytes": 1 << 50}
    runs = [
        ("one-line file", _source("small", small), {}, None),
        (
            "gzip bomb, 1 GB line",
            _source("gz", gzip_one_line_bomb(inputs / "a.jsonl.gz", 1 << 30)),
            {},
            "decompression_limit",
        ),
        (
            "zstd bomb, 8 GB line",
            _source("zst", zstd_one_line_bomb(inputs / "b.jsonl.zst", 8 << 30)),
            {},
            "decompression_limit",
        ),
        (
            "gzip TMX bomb, 2 GB segment",
            _source("tmx", tmx_segment_bomb(inputs / "c.tmx.gz", 2 << 30), "tmx"),
            {},
            "decompression_limit",
        ),
        (
            "zstd, 4 M records",
            _source("many", zstd_many_records_bomb(inputs / "d.jsonl.zst", 4_000_000)),
            {},
            "decompression_limit",
        ),
        ("gzip 1 GB line, limits lifted", _source("gz2", inputs / "a.jsonl.gz"), lifted, "too_large"),
        (
            "zstd 1 GB line, limits lifted",
            _source("zst2", zstd_one_line_bomb(inputs / "e.jsonl.zst", 1 << 30)),
            lifted,
            "too_large",
        ),
        (
            "TMX 1 GB segment, limits lifted",
            _source("tmx2", tmx_segment_bomb(inputs / "f.tmx.gz", 1 << 30), "tmx"),
            lifted,
            "too_large",
        ),
    ]
    rows, peaks = [], {}
    for kind, source, collect, reason in runs:
        code, peak, out = _collect_peak_mb(tmp_path, source["name"], source, collect)
        reasons = sorted(
            {
                r["reason"]
                for p in list_parquet(out / "collect" / "rejected")
                for r in pq.read_table(p).to_pylist()
            }
        )
        peaks[kind] = peak
        ok = code == 0 and (reason is None or reasons == [reason])
        rows.append(
            (kind, reason or "kept", f"exit {code}, {', '.join(reasons) or 'no rejects'}, peak {peak} MB", ok)
        )
    baseline = peaks["one-line file"]
    for i, (kind, *_rest) in enumerate(rows):
        if peaks[kind] > baseline + 300:
            rows[i] = (*rows[i][:3], False)
    print(f"\n{_table(rows)}\n(peak RSS of the collect process tree; baseline {baseline} MB)")
    assert all(ok for *_, ok in rows), _table(rows)
