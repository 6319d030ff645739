"""`python -m moe_train.sweep`: a grid of routing x upcycled depth, one table and the Fig.-4-style plot."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from helpers.train_shards import write_shards
from PIL import Image

from moe_train.sweep import Cell, GridError, cell_config, load_grid, main
from pipeline.config import load_config

ROOT = Path(__file__).resolve().parent.parent


def test_grid_cells_dense_once_and_errors(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        "moe_layers: [0, 1, 2]\nrouting: [hybrid, dense, language_specific]\n"
        "train: {max_steps: 3}\neval: {modes: [loglik]}\n"
    )
    cells, overrides = load_grid(grid)
    assert cells == [
        Cell("dense", 0),
        Cell("hybrid", 1),
        Cell("hybrid", 2),
        Cell("language_specific", 1),
        Cell("language_specific", 2),
    ]
    assert overrides == {"train": {"max_steps": 3}, "eval": {"modes": ["loglik"]}}
    cfg = cell_config(load_config(ROOT / "configs" / "demo.yaml"), Cell("language_specific", 2), overrides)
    assert cfg.eval.modes == ["loglik"] and cfg.eval.benchmarks  # the rest of eval: is the run's
    assert (cfg.train.routing, cfg.train.moe_layers, cfg.train.top_k, cfg.train.max_steps) == (
        "language_specific",
        2,
        1,
        3,
    )
    for text, reason in (
        ("routing: [sparse]\n", "unknown routing"),
        ("moe_layers: [-1]\n", ">= 0"),
        ("steps: 3\n", "unknown key"),
    ):
        grid.write_text(text)
        with pytest.raises(GridError, match=reason):
            load_grid(grid)


def test_sweep_on_shards_writes_the_table_and_the_plot(tmp_path):
    out = tmp_path / "out"
    write_shards(out / "shards", {"en": 12, "zh": 8, "sw": 8})
    config = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    config["train"].update(seq_len=32, micro_batch_size=1, loss_chunk_size=32)
    benchmark = ROOT / "data" / "sample" / "benchmark" / "medqa_sample.jsonl"
    config["eval"] = {  # QA accuracy by the eval stage's protocol, kept small
        "benchmarks": [{"name": "medqa_sample", "path": str(benchmark), "format": "xmedbench"}],
        "modes": ["loglik"],
        "shots": 0,
        "max_questions_per_language": 2,
        "device": "cpu",
    }
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        "moe_layers: [1, 2]\nrouting: [hybrid, free, dense]\n"
        "train: {max_steps: 2, eval_every: 2, checkpoint_every: 2, eval_batches: 1, warmup_steps: 1}\n"
    )
    assert main(["--config", str(config_path), "--grid", str(grid), "--out", str(out)]) == 0
    sweep = out / "sweep"
    results = json.loads((sweep / "results.json").read_text())
    assert [c["cell"] for c in results["cells"]] == ["hybrid-L1", "hybrid-L2", "free-L1", "free-L2", "dense"]
    assert {c["tokens"] for c in results["cells"]} == {2 * 32}  # the same token budget in every cell
    rows = list(csv.DictReader((sweep / "results.csv").read_text().splitlines()))
    assert len(rows) == 5 and all(float(r["val_loss"]) > 0 and float(r["tokens_per_s"]) > 0 for r in rows)
    assert all(0 <= float(r["qa_all"]) <= 1 for r in rows)
    assert (sweep / "dense" / "eval" / "accuracy.json").is_file()
    assert all(r["agreement"] and r["blind_agreement"] for r in rows if r["routing"] != "dense")
    assert "| hybrid-L1 | hybrid | 1 |" in (sweep / "results.md").read_text()
    assert Image.open(sweep / "layers.png").size[0] > 300
    first = (sweep / "hybrid-L1" / "result.json").stat().st_mtime_ns
    assert main(["--config", str(config_path), "--grid", str(grid), "--out", str(out)]) == 0
    assert (sweep / "hybrid-L1" / "result.json").stat().st_mtime_ns == first  # finished cells are kept


def test_experiment_options_change_no_stage_fingerprint(tmp_path):
    """The spread options left `eval:` so that editing them does not re-run `make eval` (or anything)."""
    from pipeline.dag import STAGES, fingerprint_inputs
    from pipeline.registry import load_registry

    config = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    before = tmp_path / "before.yaml"
    before.write_text(yaml.safe_dump(config))
    config["experiments"] = {"spread": {"steps": 99, "lr": 0.01, "seq_len": 64}}
    after = tmp_path / "after.yaml"
    after.write_text(yaml.safe_dump(config))
    cfg_before, cfg_after = load_config(before), load_config(after)
    assert cfg_after.experiments.spread.steps == 99
    registry = load_registry(cfg_before.registry_path())
    for spec in STAGES:
        assert fingerprint_inputs(cfg_before, spec, registry) == fingerprint_inputs(cfg_after, spec, registry)
