"""`make report`: the page is built from whatever the run produced and renders in a real browser
(headless Chromium) with every image loaded and every table present."""

from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers.eval_helpers import evaluated_run

from moe_train.eval.report import build_report
from pipeline.config import load_config
from pipeline.dag import run_stage

pytestmark = pytest.mark.slow  # runs stages, subprocesses or training: not in `make test-fast`

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

RENDER_CHECK = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const result = {
    images: images.length,
    broken: images.filter((i) => !(i.complete && i.naturalWidth > 0)).map((i) => i.getAttribute("src")),
    tables: document.querySelectorAll("table").length,
    rows: document.querySelectorAll("tbody tr").length,
    sections: Object.fromEntries([...document.querySelectorAll("section")].map((s) => [s.id, s.dataset.missing])),
  };
  const pre = document.createElement("pre");
  pre.id = "render-check";
  pre.textContent = JSON.stringify(result);
  document.body.appendChild(pre);
});
</script>
"""


def _find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Headless Chromium; installed with apt-get (Debian package `chromium`) when absent."""
    browser = _find_browser()
    if browser is None and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (
            ["apt-get", "install", "-y", "-q", "chromium"],
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "chromium"],
        ):
            subprocess.run(command, env=env, capture_output=True, timeout=900, check=False)
            if (browser := _find_browser()) is not None:
                break
    if browser is None:
        pytest.skip("headless Chromium is not installed and `apt-get install chromium` was not possible here")
    return browser


def render(browser: str, page: Path, tmp_path: Path) -> dict:
    """Load `page` (with a check script injected) in headless Chromium; the script reports image
    loading and the tables once the page's load event fired (which waits for every image)."""
    checked = page.with_name("render_check.html")
    checked.write_text(
        page.read_text(encoding="utf-8").replace("</body>", RENDER_CHECK + "</body>"), encoding="utf-8"
    )
    try:
        result = subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-extensions",
                f"--user-data-dir={tmp_path / 'chromium-profile'}",
                "--virtual-time-budget=10000",
                "--dump-dom",
                checked.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        checked.unlink()
    match = re.search(r'<pre id="render-check">(.*?)</pre>', result.stdout, re.DOTALL)
    assert match, (
        f"the page did not finish loading in Chromium (rc {result.returncode}): {result.stderr[-2000:]}"
    )
    return json.loads(html.unescape(match.group(1)))


def test_render_check_catches_a_broken_image(chromium, tmp_path):
    page = tmp_path / "index.html"
    page.write_text(
        '<!doctype html><html><body><img src="img/missing.png"><table><tr><td>1</td></tr></table></body></html>'
    )
    result = render(chromium, page, tmp_path)
    assert result["images"] == 1 and result["broken"] == ["img/missing.png"] and result["tables"] == 1


def _training_log(path: Path) -> None:
    """Lines as `make train` writes them (OUT/train/logs/train.jsonl), with the damage real logs get."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(json.dumps({"event": "start", "step": 0, "world_size": 1}) + "\n")
        for step in range(1, 61):
            row = {
                "step": step,
                "loss": 10 * math.exp(-step / 30) + 2,
                "tokens_per_s": 4000.0 + step,
                "mfu": 0.3,
            }
            if step % 20 == 0:
                row["val_loss"] = row["loss"] + 0.2
                row["val_loss_by_language"] = {"en": row["loss"] + 0.1, "sw": row["loss"] + 0.4, "zh": None}
                row["agreement"] = 0.4 + step / 200
            if step == 30:
                del row["mfu"]  # keys may be missing on some lines
            fh.write(json.dumps(row) + "\n")
        fh.write(json.dumps({"event": "end", "step": 60}) + "\n")
        fh.write('{"truncated": \n')  # a crash mid-write leaves a broken last line


@pytest.fixture
def full_run(tmp_path_factory):
    from conftest import SHARED_DATA, require_shared_data

    require_shared_data()
    config_path, out = evaluated_run(tmp_path_factory.getbasetemp(), SHARED_DATA)
    _training_log(out / "train" / "logs" / "train.jsonl")
    for stage, docs_in, docs_out in (("collect", 0, 900), ("translate", 900, 250), ("dedup", 1150, 1100)):
        (out / stage).mkdir(exist_ok=True)
        summary = {
            "stage": stage,
            "docs_in": docs_in,
            "docs_out": docs_out,
            "quarantined": 7,
            "quarantined_by_reason": {"too_short": 5, "bad_encoding": 2},
            "per_language": {},
            "seconds": 1.5,
        }
        if stage == "translate":
            summary.update(
                requests=40,
                prompt_tokens=12000,
                completion_tokens=15000,
                cost_usd=0.03,
                per_language={"sw": {"in": 0, "out": 150, "quarantined": {"truncated": 1}}},
                by_target={
                    "sw": {"requests": 25, "cost_usd": 0.02},
                    "ha": {"requests": 15, "cost_usd": 0.01},
                },
            )
        (out / stage / "summary.json").write_text(json.dumps(summary))
    (out / "shards" / "plots").mkdir(exist_ok=True)
    shutil.copyfile(
        out / "eval" / "plots" / "expert_load.png", out / "shards" / "plots" / "tokens_per_language.png"
    )
    (out / "shards" / "README.md").write_text(
        "# Demo corpus\n\n| language | tokens |\n|---|---|\n| en | 10 |\n\n"
        "![tokens per language](plots/tokens_per_language.png)\n\n<script>alert('card')</script>\n"
    )
    return config_path, out


def test_report_renders_every_section_in_chromium(full_run, chromium, tmp_path):
    config_path, out = full_run
    summary = run_stage("report", load_config(config_path), out)
    page = out / "report" / "index.html"
    text = page.read_text(encoding="utf-8")
    assert summary["sections"] == {
        "corpus": "ok",
        "funnel": "ok",
        "translation": "ok",
        "training": "ok",
        "accuracy": "ok",
        "validation": "ok",
        "routing": "ok",
        "spread": "missing",
    }
    sources = re.findall(r'<img src="([^"]+)"', text)
    assert len(sources) == summary["images"] and all((page.parent / s).is_file() for s in sources)
    assert not re.search(r'(src|href)="(https?:)?//', text)  # nothing loads from elsewhere
    assert "<script" not in text and "&lt;script&gt;" in text  # the card's raw HTML is shown, never run
    for expected in (
        "train_loss.png",
        "train_tokens_per_s.png",
        "train_mfu.png",
        "train_agreement.png",
        "train_val_loss_per_language.png",
        "eval_routing_share_layer02.png",
        "eval_routing_share_layer03.png",
        "funnel.png",
        "card_plots_tokens_per_language.png",
    ):
        assert f"img/{expected}" in sources
    assert "Not run." in text and "moe_train.spread" in text

    result = render(chromium, page, tmp_path)
    assert result["broken"] == [] and result["images"] == len(sources)
    assert result["sections"] == {
        k: "true" if v == "missing" else "false" for k, v in summary["sections"].items()
    }
    # corpus 2 (+1 in the card), funnel, translation 2, training 1, accuracy 4 (benchmarks, aggregates,
    # languages, sources), validation 2, routing 2
    assert result["tables"] == 15 and result["rows"] > 60
    assert "rejected by reason" in text and "malformed_json 1" in text


def test_report_says_what_is_missing_and_still_renders(tmp_path, chromium):
    out = tmp_path / "out"
    (out / "translate").mkdir(parents=True)
    (out / "translate" / "summary.json").write_text("{not json")
    (out / "eval").mkdir()
    (out / "eval" / "accuracy.json").write_text("{}")
    summary = build_report(out, out / "report", "empty run")
    assert set(summary["sections"].values()) == {"missing"} and summary["images"] == 0
    text = (out / "report" / "index.html").read_text(encoding="utf-8")
    for phrase in (
        "No shard manifest",
        "No stage summaries",
        "No translation summary",
        "No training logs",
        "No accuracy results",
        "No validation results",
        "No routing analysis",
        "Not run.",
    ):
        assert phrase in text
    result = render(chromium, out / "report" / "index.html", tmp_path)
    assert result["images"] == 0 and result["tables"] == 0
    assert set(result["sections"].values()) == {"true"}
