"""The eval stage (`make eval`): medical QA accuracy in both scoring modes under the configured
protocol (`apollomoe`, the paper's, by default), validation loss per
language and family, and the routing analysis of the exported checkpoint.

Outputs under OUT/eval/:

    accuracy.json          per mode: per source, per language, Major/Minor aggregates
    accuracy.md            the same as Markdown tables (modes side by side)
    predictions/<mode>.jsonl   every question: prediction, answer, shots used, raw output
    rejected_questions.jsonl   benchmark rows that could not be used, with file, line and reason
    lm_eval_tasks/         an lm-evaluation-harness task (YAML + JSONL) per benchmark
    perplexity.json        validation loss / perplexity per language and per family
    routing.json           expert shares per language, family-expert agreement, load balance, divergence
    plots/*.png            routing heatmaps (one per MoE layer), agreement, load, divergence by layer
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from pathlib import Path

from loguru import logger

from moe_train.device import resolve_device
from moe_train.eval.inference import load_model, resolve_dtype
from moe_train.eval.lm_eval_tasks import write_tasks
from moe_train.eval.mcq import Prediction, benchmarks_table, markdown_tables
from moe_train.eval.protocols import protocol_for
from pipeline import atomic
from pipeline.benchmarks import BenchmarkItem, BenchmarkRead, check_configured, console_line, read_configured
from pipeline.config import Config
from pipeline.manifest import MANIFEST_NAME, load_manifest
from pipeline.registry import Registry


def write_json(path: Path, data) -> Path:
    atomic.write_json(path, data, indent=2, ensure_ascii=False, allow_nan=False)
    return path


def write_jsonl(path: Path, rows) -> Path:
    with atomic.atomic_open(path) as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def model_directory(cfg: Config, out: Path) -> Path:
    return cfg.resolve(cfg.eval.model) if cfg.eval.model else Path(out) / "train" / "export"


def load_questions(cfg: Config, registry: Registry) -> list[BenchmarkRead]:
    """Every configured benchmark, read by `pipeline.benchmarks` (the reader decontam uses); one with
    no usable question stops here with its file and the reason, unless it is marked optional."""
    return read_configured(cfg.eval.benchmarks, cfg, registry, "eval.benchmarks")


def subsample(items: list[BenchmarkItem], per_language: int | None, seed: int) -> list[BenchmarkItem]:
    """At most `per_language` questions per language, chosen with the seed, in file order."""
    if per_language is None:
        return items
    by_language: dict[str, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        by_language[item.language].append(index)
    keep: set[int] = set()
    for language, indices in by_language.items():
        rng = random.Random(f"{seed}|subsample|{language}")
        keep.update(rng.sample(indices, min(per_language, len(indices))))
    return [item for index, item in enumerate(items) if index in keep]


def evaluate_questions(cfg: Config, registry: Registry, model, tokenizer, stage_dir: Path) -> dict:
    """Accuracy in every configured mode; writes predictions, accuracy.json and accuracy.md, and
    prints one line per benchmark: questions read, scored and rejected by reason."""
    from moe_train.eval.qa_eval import build_prompts, score_generate, score_loglik

    protocol = protocol_for(cfg.eval.protocol)
    reads = load_questions(cfg, registry)
    write_jsonl(stage_dir / "rejected_questions.jsonl", [r.__dict__ for read in reads for r in read.rejected])
    lm_eval = write_tasks(reads, protocol, cfg.train.chat_template, stage_dir / "lm_eval_tasks")
    prompts = []
    benchmarks: dict[str, dict] = {}
    for read in reads:
        selected = subsample(read.items, cfg.eval.max_questions_per_language, cfg.run.seed)
        prompts += build_prompts(
            selected,
            read.items,
            protocol,
            tokenizer,
            cfg.train.chat_template,
            cfg.eval.shots,
            cfg.run.seed,
            cfg.eval.max_prompt_tokens,
        )
        benchmarks[read.name] = {**read.summary(), "scored": len(selected)}
        print(console_line(read, scored=len(selected)))
    results: dict[str, dict] = {}
    max_new_tokens = cfg.eval.max_new_tokens or protocol.max_new_tokens
    for mode in cfg.eval.modes:
        if not prompts:
            break
        if mode == "loglik":
            predictions: list[Prediction] = score_loglik(
                model, tokenizer, prompts, protocol, cfg.eval.batch_size
            )
        else:
            predictions = score_generate(
                model, tokenizer, prompts, protocol, cfg.eval.batch_size, max_new_tokens
            )
        write_jsonl(stage_dir / "predictions" / f"{mode}.jsonl", [p.to_json() for p in predictions])
        results[mode] = protocol.aggregate(predictions, registry)
    write_json(stage_dir / "accuracy.json", results)
    tables = (
        markdown_tables(results)
        if results
        else "No benchmark questions were evaluated (eval.benchmarks is empty).\n"
    )
    atomic.write_text(
        stage_dir / "accuracy.md",
        f"Protocol: {protocol.name}\n\n" + benchmarks_table(benchmarks) + "\n" + tables,
    )
    return {
        "protocol": protocol.name,
        "questions": len(prompts),
        "benchmarks": benchmarks,
        "lm_eval_tasks": lm_eval,
        "rejected_questions": dict(sum((Counter(b["rejected"]) for b in benchmarks.values()), Counter())),
        "accuracy": {
            mode: {"major": r["major"], "minor": r["minor"], "all_questions": r["accuracy_micro"]}
            for mode, r in results.items()
        },
    }


def evaluate_validation(
    cfg: Config, registry: Registry, model, tokenizer, out: Path, stage_dir: Path
) -> dict:
    """Validation loss per language/family and the routing analysis, from the validation shards."""
    from moe_train.eval.routing_analysis import write_divergence_plot, write_routing_plots
    from moe_train.eval.valid_eval import configured_valid_documents, evaluate_valid

    shards_dir = Path(out) / "shards"
    if not (shards_dir / MANIFEST_NAME).is_file():
        return {"validation": f"skipped: no shard manifest at {shards_dir / MANIFEST_NAME}"}
    scheme = registry.resolve_scheme(cfg.registry.scheme, load_manifest(shards_dir).scheme, shards_dir)
    docs = configured_valid_documents(cfg, shards_dir, tokenizer, scheme)
    if not docs:
        return {"validation": "skipped: the shards have no valid-split documents"}
    matches_scheme = getattr(model.config, "num_experts", None) == scheme.num_experts
    losses, stats = evaluate_valid(
        model, tokenizer, docs, cfg.eval.batch_size, scheme.num_experts if matches_scheme else None
    )
    summary: dict = {"valid_documents": len(docs), "valid_loss": losses["overall"]["loss"]}
    if cfg.eval.perplexity:
        write_json(stage_dir / "perplexity.json", losses)
    if cfg.eval.routing and stats is not None:
        names = (
            [e.name for e in scheme.experts]
            if matches_scheme
            else [f"expert {e}" for e in range(stats.num_experts)]
        )
        family_expert = {
            lang: (scheme.expert_for(lang).id if matches_scheme and scheme.has(lang) else None)
            for lang in stats.languages
        }
        routing = stats.to_json(names, cfg.eval.routing_min_tokens)
        routing["scheme"] = scheme.name if matches_scheme else None
        routing["family_expert"] = family_expert
        write_json(stage_dir / "routing.json", routing)
        plots_dir = stage_dir / "plots"
        write_routing_plots(stats, names, family_expert, plots_dir)
        write_divergence_plot(
            stats,
            plots_dir / "routing_divergence.png",
            f"Routing divergence across {len(stats.languages)} languages (MoE layers)",
            cfg.eval.routing_min_tokens,
        )
        summary["router_agreement"] = routing["agreement_overall"]
    elif stats is None:
        summary["routing"] = "skipped: the model has no MoE layers"
    return summary


def validate(cfg: Config, registry: Registry) -> None:
    check_configured(cfg.eval.benchmarks, cfg, "eval.benchmarks")


def run(ctx) -> dict:
    cfg: Config = ctx.cfg
    model_dir = model_directory(cfg, ctx.out)
    device = resolve_device(cfg.eval.device)
    model, tokenizer = load_model(model_dir, device, resolve_dtype(cfg.eval.dtype, device))
    summary: dict = {"model": str(model_dir), "device": str(device)}
    logger.info(f"eval: {model_dir} on {device}: medical QA")
    summary.update(evaluate_questions(cfg, ctx.registry, model, tokenizer, ctx.stage_dir))
    if cfg.eval.perplexity or cfg.eval.routing:
        logger.info("eval: validation perplexity and routing")
        summary.update(evaluate_validation(cfg, ctx.registry, model, tokenizer, ctx.out, ctx.stage_dir))
    return summary
