"""The eval stage (`make eval`): medical QA accuracy in both scoring modes, validation loss per
language and family, and the routing analysis of the exported checkpoint.

Outputs under OUT/eval/:

    accuracy.json          per mode: per source, per language, Major/Minor aggregates
    accuracy.md            the same as Markdown tables (modes side by side)
    predictions/<mode>.jsonl   every question: prediction, answer, shots used, raw output
    rejected_questions.jsonl   benchmark rows that could not be used, with file, line and reason
    perplexity.json        validation loss / perplexity per language and per family
    routing.json           expert shares per language, family-expert agreement, load balance, divergence
    plots/*.png            routing heatmaps (one per MoE layer), agreement, load, divergence by layer
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from pathlib import Path

from moe_train.device import resolve_device
from moe_train.eval.inference import load_model, resolve_dtype
from moe_train.eval.mcq import (
    MCQItem,
    Prediction,
    RejectedQuestion,
    aggregate,
    load_benchmark,
    markdown_tables,
)
from pipeline import atomic
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


def load_questions(
    cfg: Config, registry: Registry
) -> tuple[dict[str, list[MCQItem]], list[RejectedQuestion]]:
    """Every configured benchmark's usable questions (by benchmark name) and the rejected rows."""
    questions: dict[str, list[MCQItem]] = {}
    rejected: list[RejectedQuestion] = []
    for ref in cfg.eval.benchmarks:
        if ref.name in questions:
            raise ValueError(f"eval.benchmarks: benchmark name '{ref.name}' is listed twice")
        items, rejects = load_benchmark(cfg.resolve(ref.path), ref.name, registry, ref.language, ref.source)
        questions[ref.name] = items
        rejected += rejects
    return questions, rejected


def subsample(items: list[MCQItem], per_language: int | None, seed: int) -> list[MCQItem]:
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
    """Accuracy in every configured mode; writes predictions, accuracy.json and accuracy.md."""
    from moe_train.eval.qa_eval import build_prompts, score_generate, score_loglik

    questions, rejected = load_questions(cfg, registry)
    write_jsonl(stage_dir / "rejected_questions.jsonl", [r.__dict__ for r in rejected])
    prompts = []
    for items in questions.values():
        selected = subsample(items, cfg.eval.max_questions_per_language, cfg.run.seed)
        prompts += build_prompts(
            selected,
            items,
            tokenizer,
            cfg.train.chat_template,
            cfg.eval.shots,
            cfg.run.seed,
            cfg.eval.max_prompt_tokens,
        )
    results: dict[str, dict] = {}
    for mode in cfg.eval.modes:
        if not prompts:
            break
        if mode == "loglik":
            predictions: list[Prediction] = score_loglik(model, tokenizer, prompts, cfg.eval.batch_size)
        else:
            predictions = score_generate(
                model, tokenizer, prompts, cfg.eval.batch_size, cfg.eval.max_new_tokens
            )
        write_jsonl(stage_dir / "predictions" / f"{mode}.jsonl", [p.to_json() for p in predictions])
        results[mode] = aggregate(predictions, registry)
    write_json(stage_dir / "accuracy.json", results)
    atomic.write_text(
        stage_dir / "accuracy.md",
        markdown_tables(results)
        if results
        else "No benchmark questions were evaluated (eval.benchmarks is empty).\n",
    )
    return {
        "questions": len(prompts),
        "rejected_questions": dict(Counter(r.reason for r in rejected)),
        "accuracy": {
            mode: {"major": r["major"], "minor": r["minor"], "all_questions": r["accuracy_micro"]}
            for mode, r in results.items()
        },
    }


def evaluate_validation(
    cfg: Config, registry: Registry, model, tokenizer, out: Path, stage_dir: Path
) -> dict:
    """Validation loss per language/family and the routing analysis, from the valid shards."""
    from moe_train.eval.routing_analysis import write_divergence_plot, write_routing_plots
    from moe_train.eval.valid_eval import evaluate_valid, read_valid_documents

    shards_dir = Path(out) / "shards"
    if not (shards_dir / MANIFEST_NAME).is_file():
        return {"validation": f"skipped: no shard manifest at {shards_dir / MANIFEST_NAME}"}
    scheme = registry.resolve_scheme(cfg.registry.scheme, load_manifest(shards_dir).scheme, shards_dir)
    docs = read_valid_documents(
        shards_dir,
        tokenizer,
        cfg.train.chat_template,
        scheme,
        cfg.eval.valid_max_docs_per_language,
        cfg.eval.valid_max_tokens,
    )
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


def run(ctx) -> dict:
    cfg: Config = ctx.cfg
    model_dir = model_directory(cfg, ctx.out)
    device = resolve_device(cfg.eval.device)
    model, tokenizer = load_model(model_dir, device, resolve_dtype(cfg.eval.dtype, device))
    summary: dict = {"model": str(model_dir), "device": str(device)}
    summary.update(evaluate_questions(cfg, ctx.registry, model, tokenizer, ctx.stage_dir))
    if cfg.eval.perplexity or cfg.eval.routing:
        summary.update(evaluate_validation(cfg, ctx.registry, model, tokenizer, ctx.out, ctx.stage_dir))
    return summary
