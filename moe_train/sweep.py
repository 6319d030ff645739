"""The paper's experiments as one command: a grid of training runs over upcycled depth and routing.

    python -m moe_train.sweep --config configs/demo.yaml --grid configs/sweeps/demo.yaml --out out
    make sweep CONFIG=configs/demo.yaml GRID=configs/sweeps/demo.yaml OUT=out

The grid file (configs/sweeps/demo.yaml, configs/sweeps/qwen2_0.5b.yaml):

    moe_layers: [1, 2, 4]           # how many final layers are upcycled (the paper's Fig. 4)
    routing: [hybrid, free, dense]  # train.routing of each cell; dense is one cell (no MoE layers)
    train: {max_steps: 6}           # overrides every cell shares (same data, seed and token budget)
    eval: {modes: [loglik]}         # eval overrides for the sweep's QA accuracy (optional)

Every cell trains from OUT/shards with the config's `train:` section plus the cell's routing and depth,
under the same seed and step count (so the same tokens), exports, and is evaluated: validation loss per
language, QA accuracy by the eval stage's protocol (moe_train.eval.evaluate.evaluate_questions, when
`eval.benchmarks` is set), router agreement beside a language-blind router's, tokens/s. A cell that has
finished (OUT/sweep/<cell>/result.json) is not run again; an interrupted one resumes from its checkpoint.

Writes OUT/sweep/: results.json, results.md (one table), results.csv, layers.png (score against the
number of upcycled layers, high- vs low-resource languages: the registry's major and minor tiers).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.config import Config, load_config
from pipeline.registry import load_registry

ROUTINGS = ("hybrid", "language_specific", "free", "dense")


class GridError(ValueError):
    """The grid file cannot be used; the message names the file and the reason."""


@dataclass(frozen=True)
class Cell:
    routing: str
    moe_layers: int  # 0 for the dense baseline

    @property
    def name(self) -> str:
        return "dense" if self.routing == "dense" else f"{self.routing}-L{self.moe_layers}"


def load_grid(path: Path) -> tuple[list[Cell], dict]:
    """The grid's cells (dense once, as moe_layers 0) and its shared overrides
    ({"train": {...}, "eval": {...}})."""
    try:
        grid = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise GridError(f"{path}: cannot read the sweep grid: {exc}") from None
    unknown = set(grid) - {"moe_layers", "routing", "train", "eval"}
    if unknown:
        raise GridError(
            f"{path}: unknown key(s) {sorted(unknown)}; expected moe_layers, routing, train, eval"
        )
    layers = grid.get("moe_layers", [2])
    routings = grid.get("routing", ["hybrid"])
    if not all(isinstance(n, int) and n >= 0 for n in layers):
        raise GridError(f"{path}: moe_layers must be a list of integers >= 0, got {layers}")
    bad = [r for r in routings if r not in ROUTINGS]
    if bad:
        raise GridError(f"{path}: unknown routing {bad}; choose from {list(ROUTINGS)}")
    cells: list[Cell] = []
    for routing in routings:
        for n in layers:
            cell = Cell("dense", 0) if routing == "dense" or n == 0 else Cell(routing, n)
            if cell not in cells:
                cells.append(cell)
    return cells, {"train": dict(grid.get("train") or {}), "eval": dict(grid.get("eval") or {})}


def cell_config(cfg: Config, cell: Cell, overrides: dict) -> Config:
    """The run's config with the cell's routing and depth and the grid's shared overrides."""
    update = {**overrides.get("train", {}), "routing": cell.routing}
    if cell.routing != "dense":
        update["moe_layers"] = cell.moe_layers
    if cell.routing == "language_specific":
        update["top_k"] = 1
    train = cfg.train.model_validate({**cfg.train.model_dump(), **update})
    evaluation = cfg.eval.model_validate({**cfg.eval.model_dump(), **overrides.get("eval", {})})
    return cfg.model_copy(update={"train": train, "eval": evaluation})


def _tokens_per_second(log_path: Path) -> float | None:
    """Mean training throughput over the logged steps after the first (which includes warm-up)."""
    if not log_path.is_file():
        return None
    rates = [
        r["tokens_per_s"] for r in map(json.loads, log_path.read_text().splitlines()) if "tokens_per_s" in r
    ]
    rates = rates[1:] or rates
    return sum(rates) / len(rates) if rates else None


def run_cell(cfg: Config, cell: Cell, overrides: dict, out: Path, device: str) -> dict:
    """Train, export and evaluate one cell; returns (and writes) its result."""
    from moe_train.device import resolve_device
    from moe_train.eval.evaluate import evaluate_questions
    from moe_train.eval.inference import load_model, resolve_dtype
    from moe_train.train import trainer_from_config

    cell_dir = out / "sweep" / cell.name
    result_path = cell_dir / "result.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    cell_cfg = cell_config(cfg, cell, overrides)
    if device != "auto":
        cell_cfg = cell_cfg.model_copy(update={"train": cell_cfg.train.model_copy(update={"device": device})})
    started = time.perf_counter()
    trainer = trainer_from_config(
        cell_cfg, out, resume=True, shards_dir=out / "shards", stage_dir=cell_dir / "train"
    )
    trained = trainer.fit()
    result: dict = {
        "cell": cell.name,
        "routing": cell.routing,
        "moe_layers": cell.moe_layers,
        "steps": trained.steps,
        "tokens": trained.tokens,
        "final_loss": trained.final_loss,
        "tokens_per_s": _tokens_per_second(cell_dir / "train" / "logs" / "train.jsonl"),
        "validation": trained.validation,
    }
    if cell_cfg.eval.benchmarks and trained.export_dir is not None:
        torch_device = resolve_device(device if device != "auto" else cell_cfg.eval.device)
        model, tokenizer = load_model(
            trained.export_dir, torch_device, resolve_dtype(cell_cfg.eval.dtype, torch_device)
        )
        registry = load_registry(cell_cfg.registry_path())
        result["qa"] = evaluate_questions(cell_cfg, registry, model, tokenizer, cell_dir / "eval")["accuracy"]
    result["seconds"] = time.perf_counter() - started
    result_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = result_path.with_name(".result.json.tmp")
    tmp.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(result_path)
    return result


def _qa(result: dict, key: str) -> float | None:
    """QA accuracy of a cell (`major`, `minor` or `all_questions`) in its first scoring mode."""
    qa = result.get("qa") or {}
    first = next(iter(qa.values()), None)
    return None if first is None else first.get(key)


def _mean_loss(result: dict, languages: list[str]) -> float | None:
    by_language = result["validation"].get("val_loss_by_language", {})
    losses = [by_language[code] for code in languages if code in by_language]
    return sum(losses) / len(losses) if losses else None


def table_rows(results: list[dict], languages: list[str]) -> tuple[list[str], list[list]]:
    """The header and rows of the sweep table."""
    header = [
        "cell",
        "routing",
        "moe_layers",
        "val_loss",
        *[f"val_loss_{code}" for code in languages],
        "qa_major",
        "qa_minor",
        "qa_all",
        "agreement",
        "blind_agreement",
        "tokens_per_s",
    ]
    rows = []
    for r in results:
        v = r["validation"]
        rows.append(
            [
                r["cell"],
                r["routing"],
                r["moe_layers"],
                v.get("val_loss"),
                *[v.get("val_loss_by_language", {}).get(code) for code in languages],
                _qa(r, "major"),
                _qa(r, "minor"),
                _qa(r, "all_questions"),
                v.get("agreement"),
                v.get("blind_agreement"),
                r.get("tokens_per_s"),
            ]
        )
    return header, rows


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_table(results: list[dict], languages: list[str], dest: Path) -> None:
    header, rows = table_rows(results, languages)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(x) for x in row) + " |" for row in rows]
    note = (
        "\n`agreement`: share of validation tokens whose stock top-k holds their family expert (MoE layers "
        "averaged); `blind_agreement`: what a router blind to language would score, from the expert load "
        "shares. `qa_*`: accuracy in the first eval mode (major / minor languages: the registry's tiers).\n"
    )
    (dest / "results.md").write_text("\n".join(lines) + "\n" + note)
    with open(dest / "results.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def plot_layers(results: list[dict], major: list[str], minor: list[str], dest: Path) -> Path:
    """Fig. 4 of the paper: score against the number of upcycled layers, high- vs low-resource languages.

    The score is QA accuracy when the cells were evaluated on benchmarks, else validation loss."""
    from moe_train.eval.plots import line_plot

    use_qa = any(r.get("qa") for r in results)
    dense = [r for r in results if r["routing"] == "dense"]
    series: dict[str, tuple[list[float], list[float]]] = {}
    for routing in [r for r in ROUTINGS if r != "dense"]:
        cells = sorted((r for r in results if r["routing"] == routing), key=lambda r: r["moe_layers"])
        if not cells:
            continue
        for tier, codes in (("major", major), ("minor", minor)):
            points = [
                (r["moe_layers"], _qa(r, tier) if use_qa else _mean_loss(r, codes)) for r in dense + cells
            ]
            points = [(x, y) for x, y in points if y is not None]
            if points:
                series[f"{routing}, {tier} languages"] = ([x for x, _ in points], [y for _, y in points])
    return line_plot(
        series,
        "Score by number of upcycled layers (0 = dense)",
        "upcycled layers",
        "QA accuracy" if use_qa else "validation loss",
        dest / "layers.png",
        markers=True,
        integer_x=True,
    )


def sweep(config_path: str, grid_path: str, out: str, device: str = "auto") -> dict:
    cfg = load_config(config_path)
    out_dir = Path(out)
    if not (out_dir / "shards" / "manifest.json").is_file():
        raise SystemExit(
            f"{out_dir / 'shards'}: no shards (manifest.json); build them first with "
            f"`make shards CONFIG=<corpus config> OUT={out}`"
        )
    cells, overrides = load_grid(Path(grid_path))
    registry = load_registry(cfg.registry_path())
    results = []
    for index, cell in enumerate(cells, 1):
        print(f"sweep: cell {index}/{len(cells)} {cell.name}", file=sys.stderr, flush=True)
        results.append(run_cell(cfg, cell, overrides, out_dir, device))
    languages = sorted({code for r in results for code in r["validation"].get("val_loss_by_language", {})})
    dest = out_dir / "sweep"
    major = [c for c in languages if c in set(registry.major())]
    minor = [c for c in languages if c in set(registry.minor())]
    summary = {"grid": str(grid_path), "config": str(config_path), "overrides": overrides, "cells": results}
    (dest / "results.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    write_table(results, languages, dest)
    plot_layers(results, major, minor, dest)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m moe_train.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--grid", default="configs/sweeps/demo.yaml")
    parser.add_argument("--out", default="out", help="run directory: reads OUT/shards, writes OUT/sweep")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    try:
        summary = sweep(args.config, args.grid, args.out, args.device)
    except GridError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((Path(args.out) / "sweep" / "results.md").read_text())
    print(f"{len(summary['cells'])} cells; table and plot in {Path(args.out) / 'sweep'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
