"""`make eval` end to end on a tiny exported checkpoint, and the spread command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.eval_helpers import MINOR_QUESTIONS, evaluated_run, make_tiny_moe

from moe_train.eval.apollomoe import aggregate
from moe_train.eval.inference import ModelLoadError
from moe_train.eval.mcq import Prediction
from pipeline.benchmarks import read_configured
from pipeline.config import load_config
from pipeline.dag import run_stage

pytestmark = pytest.mark.slow  # runs stages, subprocesses or training: not in `make test-fast`

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from conftest import SHARED_DATA, require_shared_data

    require_shared_data()
    return evaluated_run(tmp_path_factory.getbasetemp(), SHARED_DATA)


def test_eval_writes_accuracy_for_both_modes(run, registry):
    _, out = run
    accuracy = json.loads((out / "eval" / "accuracy.json").read_text())
    assert list(accuracy) == ["loglik", "generate"]
    for mode, result in accuracy.items():
        rows = [
            json.loads(line)
            for line in (out / "eval" / "predictions" / f"{mode}.jsonl").read_text().splitlines()
        ]
        assert len(rows) == 12 + len(MINOR_QUESTIONS) == result["n"]
        assert all(r["mode"] == mode and r["shots"] <= 2 for r in rows)
        fields = set(Prediction.__dataclass_fields__)
        recomputed = aggregate(
            [Prediction(**{k: v for k, v in r.items() if k in fields}) for r in rows], registry
        )
        assert recomputed == result
        assert result["per_language"]["sw"]["tier"] == "minor" and result["minor_languages"] == ["sw"]
        assert set(result["major_languages"]) == {"ar", "en", "es", "fr", "hi", "zh"}
        major = [result["per_language"][lang]["accuracy"] for lang in result["major_languages"]]
        assert result["major"] == pytest.approx(sum(major) / len(major))
        assert result["minor"] == result["per_language"]["sw"]["accuracy"]
    generated = [
        json.loads(line)
        for line in (out / "eval" / "predictions" / "generate.jsonl").read_text().splitlines()
    ]
    assert all("\n" not in r["output"].strip() for r in generated)  # decoding stopped at the first line
    table = (out / "eval" / "accuracy.md").read_text()
    assert table.startswith("Protocol: apollomoe")
    assert "| Major (mean of major languages) |" in table and "| sw | minor | 3 |" in table
    assert "| minor | xmedbench | 4 | 3 | 3 | 0 | 1 (malformed_json 1) |" in table


def test_eval_quarantines_bad_benchmark_rows(run):
    _, out = run
    rejected = [
        json.loads(line) for line in (out / "eval" / "rejected_questions.jsonl").read_text().splitlines()
    ]
    assert [(r["line"], r["reason"]) for r in rejected] == [(len(MINOR_QUESTIONS) + 1, "malformed_json")]
    assert rejected[0]["file"].endswith("minor.jsonl")
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert summary["rejected_questions"] == {"malformed_json": 1}
    assert summary["protocol"] == "apollomoe"
    assert summary["benchmarks"]["minor"] == {
        "file": rejected[0]["file"],
        "format": "xmedbench",
        "read": 4,
        "usable": 3,
        "multi_answer": 0,
        "rejected": {"malformed_json": 1},
        "scored": 3,
    }
    assert summary["benchmarks"]["xmedbench"]["scored"] == 12
    assert summary["questions"] == 12 + len(MINOR_QUESTIONS)
    assert set(summary["accuracy"]) == {"loglik", "generate"}


def test_eval_reports_valid_loss_and_routing(run):
    _, out = run
    losses = json.loads((out / "eval" / "perplexity.json").read_text())
    assert set(losses["per_language"]) == {"en", "zh", "ar", "hi", "sw", "ckb"}
    assert set(losses["per_family"]) == {"indo_european", "sino_tibetan", "afro_asiatic", "kongolese"}
    assert all(v["documents"] == 2 and v["loss"] > 0 for v in losses["per_language"].values())
    routing = json.loads((out / "eval" / "routing.json").read_text())
    assert routing["layers"] == [2, 3] and routing["scheme"] == "family7"
    assert routing["family_expert"]["zh"] == 0 and routing["family_expert"]["sw"] == 6
    for layer in ("2", "3"):
        for shares in routing["expert_share"][layer].values():
            assert sum(shares.values()) == pytest.approx(1.0, abs=1e-4)
        assert 0 <= routing["agreement_overall"][layer] <= 1
        assert sum(routing["load_balance"][layer]["load"].values()) == pytest.approx(1.0, abs=1e-4)
    plots = sorted(p.name for p in (out / "eval" / "plots").glob("*.png"))
    assert plots == [
        "expert_load.png",
        "routing_agreement.png",
        "routing_divergence.png",
        "routing_share_layer02.png",
        "routing_share_layer03.png",
    ]
    assert all((out / "eval" / "plots" / p).read_bytes()[:8] == PNG_MAGIC for p in plots)


def test_eval_without_a_checkpoint_says_what_to_run(tmp_path, write_config):
    out = tmp_path / "out"
    (out / "train").mkdir(parents=True)
    (out / "train" / ".done").write_text("x\n")
    _, cfg = write_config({"eval": {"benchmarks": []}})
    with pytest.raises(ModelLoadError, match="make train"):
        run_stage("eval", cfg, out)


def test_eval_on_a_dense_model_skips_routing(tmp_path, write_config):
    """A checkpoint with no MoE layer (moe_layers=0) is still evaluated; routing is skipped."""
    out = tmp_path / "out"
    make_tiny_moe(out / "train" / "export", num_layers=2, moe_layers=0)
    (out / "train" / ".done").write_text("x\n")
    _, cfg = write_config({"eval": {"benchmarks": [], "routing": True}})
    summary = run_stage("eval", cfg, out)
    assert summary["questions"] == 0 and "shard manifest" in summary["validation"]
    assert not (out / "eval" / "routing.json").exists()


def test_spread_command_upcycles_every_layer(run, tmp_path):
    from moe_train.spread import main

    config_path, out = run
    main(["--config", str(config_path), "--out", str(out), "--steps", "2", "--dest", str(tmp_path)])
    result = json.loads((tmp_path / "spread.json").read_text())
    assert result["steps"] == 2 and len(result["train_loss"]) == 2
    assert result["routing"]["layers"] == [0, 1, 2, 3]  # every decoder layer routed
    divergence = result["routing"]["divergence"]["mean_pairwise_jsd"]
    assert set(divergence) == {"0", "1", "2", "3"} and all(0 <= v <= 1 for v in divergence.values())
    assert (tmp_path / "jsd_by_layer.png").read_bytes()[:8] == PNG_MAGIC


def test_demo_benchmarks_come_in_several_formats_and_load_whole(registry):
    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / "demo.yaml")
    assert cfg.eval.benchmarks == cfg.decontam.benchmarks
    assert len({b.format for b in cfg.eval.benchmarks}) >= 3
    for read in read_configured(cfg.eval.benchmarks, cfg, registry, "eval.benchmarks"):
        assert read.items and not read.rejected, read.name
