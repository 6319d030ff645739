"""The "Spread Out in the End" experiment (the paper's motivating analysis): upcycle every decoder
layer into experts, train briefly with the training stage's own trainer, and plot how differently
languages are routed layer by layer. Low divergence early and high late is why Post-MoE upcycles
only the last layers.

It composes training (`moe_train.train`) and evaluation (`moe_train.eval`), so it lives above both
rather than inside either. Command line (the demo runs it as a smoke test; on a GPU point it at
real shards and a real model):

    python -m moe_train.spread --config configs/demo.yaml --out out
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from transformers import AutoConfig

from moe_train.device import resolve_device
from moe_train.eval.inference import load_model, resolve_dtype
from moe_train.eval.routing_analysis import write_divergence_plot, write_routing_plots
from moe_train.eval.valid_eval import configured_valid_documents, evaluate_valid
from moe_train.train import trainer_from_config
from moe_train.upcycle import dense_config, is_moe_checkpoint, is_preset
from pipeline import atomic
from pipeline.config import load_config
from pipeline.manifest import load_manifest
from pipeline.registry import load_registry


def spread(config_path: str, out: str, dest: str | None, steps: int | None, device_name: str) -> dict:
    """Upcycle every decoder layer into experts, train briefly on the shards with the training stage,
    and measure how the languages' expert distributions diverge layer by layer on the valid split."""
    cfg = load_config(config_path)
    registry = load_registry(cfg.registry_path())
    out_dir = Path(out)
    scheme = registry.resolve_scheme(cfg.registry.scheme, load_manifest(out_dir / "shards").scheme)
    dest_dir = Path(dest) if dest else out_dir / "spread"
    steps = cfg.experiments.spread.steps if steps is None else steps
    cfg = spread_training_config(cfg, steps, device_name)
    trainer = trainer_from_config(
        cfg, out_dir, resume=False, shards_dir=out_dir / "shards", stage_dir=dest_dir / "train"
    )
    result = trainer.fit()
    shutil.rmtree(dest_dir / "train" / "checkpoints", ignore_errors=True)  # the export is what is analysed
    device = resolve_device(cfg.train.device if cfg.train.device != "auto" else cfg.eval.device)
    model, tokenizer = load_model(result.export_dir, device, resolve_dtype(cfg.eval.dtype, device))
    docs = configured_valid_documents(cfg, out_dir / "shards", tokenizer, scheme)
    if not docs:
        raise SystemExit(f"{out_dir / 'shards'}: no valid-split documents to analyse")
    _, stats = evaluate_valid(model, tokenizer, docs, cfg.eval.batch_size, scheme.num_experts)
    names = [e.name for e in scheme.experts]
    family_expert = {
        lang: (scheme.expert_for(lang).id if scheme.has(lang) else None) for lang in stats.languages
    }
    plot = write_divergence_plot(
        stats,
        dest_dir / "jsd_by_layer.png",
        f"Routing divergence across {len(stats.languages)} languages, every layer upcycled",
        cfg.eval.routing_min_tokens,
    )
    write_routing_plots(stats, names, family_expert, dest_dir)
    summary = {
        "steps": result.steps,
        "train_loss": result.losses,
        "languages": stats.languages,
        "routing": stats.to_json(names, cfg.eval.routing_min_tokens),
        "plot": plot.name,
        "model": str(result.export_dir),
    }
    atomic.write_json(dest_dir / "spread.json", summary, indent=2, ensure_ascii=False)
    return summary


def spread_training_config(cfg, steps: int, device_name: str):
    """The run's training config with every layer upcycled and the router left free: no family
    forcing and no router supervision, so the routing that emerges is the model's own."""
    spec = cfg.train.model
    if is_preset(spec):
        n_layers = dense_config(spec).num_hidden_layers
    else:
        path = cfg.resolve(spec)
        if is_moe_checkpoint(path):
            raise SystemExit(
                f"train.model={spec!r} is already a MoE checkpoint; the spread analysis upcycles a dense one"
            )
        n_layers = AutoConfig.from_pretrained(str(path), local_files_only=True).num_hidden_layers
    train = cfg.train.model_copy(
        update={
            "moe_layers": n_layers,
            "routing": "free",
            "router_supervision_coef": 0.0,
            "max_steps": max(1, steps),
            "eval_every": max(1, steps),
            "checkpoint_every": max(1, steps),
            "seq_len": cfg.experiments.spread.seq_len,
            "lr": cfg.experiments.spread.lr,
            "warmup_steps": min(cfg.train.warmup_steps, steps // 10),
            **({"device": device_name} if device_name != "auto" else {}),
        }
    )
    return cfg.model_copy(update={"train": train})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m moe_train.spread", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", required=True, help="the run's OUT directory (reads OUT/shards)")
    parser.add_argument("--dest", help="where to write plots and JSON (default OUT/spread)")
    parser.add_argument("--steps", type=int, help="training steps (default: experiments.spread.steps)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    result = spread(args.config, args.out, args.dest, args.steps, args.device)
    divergence = result["routing"]["divergence"]["mean_pairwise_jsd"]
    print("layer  mean pairwise JSD (bits)")
    for layer, value in divergence.items():
        print(f"{layer:>5}  {'-' if value is None else f'{value:.4f}'}")


if __name__ == "__main__":
    main()
