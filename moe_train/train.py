"""The Post-MoE training loop: `make train`, `python -m moe_train.train`, or torchrun.

    python -m moe_train.train --config configs/demo.yaml --out out            # one process
    python -m moe_train.train --config C --out O --resume                     # continue the last checkpoint
    torchrun --nproc_per_node 8 -m moe_train.train --config C --out O         # FSDP2 over 8 GPUs

Reads OUT/shards/manifest.json, writes OUT/train/{checkpoints,logs/train.jsonl,export}.

One step = `grad_accum` micro-batches of `micro_batch_size` packed sequences on each of `world` ranks.
Every rank builds the same deterministic sequence stream and takes its own slice of each step's global
batch, and the loss is the sum of token losses divided by the number of trained tokens in the *global*
batch: so one process with grad_accum = G * world computes the same step as `world` processes with
grad_accum = G (up to float rounding), and a resumed run repeats an uninterrupted one exactly.

Precision: on one CUDA device the model computes with bf16 parameters and the optimizer updates float32
master weights (`MasterWeights` in moe_train/precision.py, `train.bf16_params`, the default); with
`bf16_params: false` the parameters stay float32 and compute runs under bf16 autocast (the fused
grouped_mm experts then get bf16 views of their weights, moe_train/experts.py). With several processes
FSDP2 shards the float32 parameters and gathers them in bf16 (moe_train/distributed.py); at world size
1 nothing is sharded and the loop is otherwise the same code. On CPU everything is float32 (FSDP2 over
gloo under torchrun).

Where the rest lives: the module that trains in causal_lm.py, upcycling a dense Qwen2 in upcycle.py,
hybrid routing in routing.py, the data in data.py (fed per step by batches.py), validation during
training in validation.py, checkpoints and export in checkpoint.py.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from loguru import logger
from tqdm import tqdm

from moe_train.batches import StepFeeder
from moe_train.causal_lm import CausalLMForTraining, prepare_model
from moe_train.checkpoint import (
    export_model,
    is_sharded,
    latest_checkpoint,
    load_checkpoint,
    load_sharded_checkpoint,
    save_checkpoint,
    save_sharded_checkpoint,
)
from moe_train.data import DocumentTokenizer, manifest_languages
from moe_train.device import peak_memory_gb, synchronize, to_host
from moe_train.distributed import (
    Runtime,
    all_reduce_sum,
    clip_grad_norm,
    full_optimizer_state,
    full_state_dict,
    load_full_state,
    setup_runtime,
    shutdown,
    sum_over_ranks,
)
from moe_train.flops import peak_flops, training_flops
from moe_train.loss import IGNORE_INDEX
from moe_train.packing import Batch, PackingStats, training_packer
from moe_train.precision import autocast
from moe_train.routing import FORCING, RoutingTally, router_supervision_loss
from moe_train.sampling import DataSelection
from moe_train.upcycle import build_model, config_from_file, is_preset, new_model
from moe_train.validation import validation_batches, validation_metrics
from pipeline.compat import load_balancing_loss_func
from pipeline.config import Config, ConfigError, TrainSection, load_config
from pipeline.handoff import HandoffError
from pipeline.manifest import load_manifest
from pipeline.registry import Scheme, load_registry


class NonFiniteLossError(RuntimeError):
    """The loss or gradient norm became NaN/inf; a checkpoint of the last good state was written."""


# --------------------------------------------------------------------------------------------------
# Optimizer and schedule


def no_decay(name: str, param: torch.nn.Parameter, decay_norm_weights: bool = False) -> bool:
    """Norm weights and biases (all 1-D parameters) get no weight decay; with `decay_norm_weights` (the
    original) only biases are spared."""
    if decay_norm_weights:
        return name.endswith(".bias")
    return param.ndim < 2 or name.endswith(".bias")


def make_optimizer(model: CausalLMForTraining, cfg: TrainSection, cuda: bool = False) -> torch.optim.AdamW:
    """AdamW over the trained parameters (the float32 masters when the model computes in bf16)."""
    decay, keep = [], []
    for name, param in model.trained_module().named_parameters():
        if param.requires_grad and param.numel():
            (keep if no_decay(name, param, cfg.decay_norm_weights) else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": keep, "weight_decay": 0.0}]
    fused = {"fused": True} if cuda else {"foreach": True}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=1e-8, **fused)


def warmup_steps(cfg: TrainSection) -> int:
    """`warmup_ratio` of the schedule's horizon (cosine_horizon x max_steps) when set, else warmup_steps."""
    if cfg.warmup_ratio is not None:
        return int(cfg.warmup_ratio * cfg.cosine_horizon * cfg.max_steps)
    return cfg.warmup_steps


def lr_factor(step: int, cfg: TrainSection) -> float:
    """Linear warmup to 1, then cosine decay reaching min_lr_ratio at cosine_horizon x max_steps (1: at
    the last step; the original's 1.35 stops the run 74% into its cosine)."""
    warmup = warmup_steps(cfg)
    if step < warmup:
        return (step + 1) / warmup
    span = max(1.0, cfg.cosine_horizon * cfg.max_steps - warmup)
    progress = min(1.0, (step - warmup) / span)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


# --------------------------------------------------------------------------------------------------
# One step


@dataclass
class StepMetrics:
    """What one optimizer step measured over the global batch (all ranks); a line of logs/train.jsonl."""

    loss: float  # mean loss per trained token
    grad_norm: float  # before clipping
    trained_tokens: int  # tokens with a label
    router_agreement: float | None = None  # family tokens whose stock top-k already holds their expert
    expert_load: dict[str, list[float]] | None = None  # per MoE layer, each expert's share of top-k slots
    router_supervision_loss: float | None = None  # per routed token (train.router_supervision_coef > 0)

    def as_record(self) -> dict:
        return {name: value for name, value in vars(self).items() if value is not None}


def train_step(
    model: CausalLMForTraining,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    micro_batches: list[Batch],
    cfg: TrainSection,
    runtime: Runtime,
    step: int = 0,
) -> StepMetrics:
    """Forward and loss, backward over this rank's micro-batches, clip, update (`step`: 1-based, for
    messages).

    The GPU is synchronised once, just before the optimizer step: every metric (and the NaN/inf
    verdict, identical on all ranks because loss and gradient norm are global) is read in one go.
    """
    counts = sum_over_ranks(
        {
            "trained": sum(int((b.labels != IGNORE_INDEX).sum()) for b in micro_batches),
            "routed": sum(int((b.expert_ids >= 0).sum()) for b in micro_batches),
        },
        runtime,
    )
    trained_tokens, routed_tokens = max(counts["trained"], 1.0), max(counts["routed"], 1.0)
    batches = [b.to(runtime.device) for b in micro_batches]
    config, layers = model.lm.config, model.moe_layers
    num_experts, top_k = getattr(config, "num_experts", 1), getattr(config, "num_experts_per_tok", 0)
    loss_sum = torch.zeros((), dtype=torch.float64, device=runtime.device)
    routing = RoutingTally(layers, num_experts, top_k, runtime.device, FORCING[cfg.routing])
    for index, batch in enumerate(batches):
        if runtime.sharded:  # FSDP2 reduces gradients over ranks after the last micro-batch only
            model.set_requires_gradient_sync(index == len(batches) - 1)
        with autocast(runtime.device):
            token_loss = model(batch, force_family=FORCING[cfg.routing] is not None)
        objective = token_loss / trained_tokens
        logits = model.router_logits()
        if logits and cfg.router_aux_loss_coef > 0:  # Switch-style load balancing (stock top-k)
            aux = load_balancing_loss_func(tuple(logits), num_experts, top_k)
            objective = objective + cfg.router_aux_loss_coef * aux / (len(batches) * runtime.world)
        if logits and cfg.router_supervision_coef > 0:  # each router toward the token's family expert
            supervision = sum(router_supervision_loss(lg, batch.expert_ids) for lg in logits) / len(layers)
            objective = objective + cfg.router_supervision_coef * supervision / routed_tokens
            routing.supervision += supervision.detach()
        (objective * runtime.world).backward()  # FSDP averages gradients over ranks; we want the sum
        loss_sum += token_loss.detach()
        routing.add(logits, batch.expert_ids)
    totals = all_reduce_sum({"loss": loss_sum, **routing.sums()}, runtime)
    grad_norm = clip_grad_norm(model.trained_module(), cfg.grad_clip)
    values = to_host({**totals, "grad_norm": grad_norm})
    loss = values["loss"] / trained_tokens
    if not math.isfinite(loss):
        raise NonFiniteLossError(f"loss is {loss} at step {step}")
    if not math.isfinite(values["grad_norm"]):
        raise NonFiniteLossError(f"gradient norm is {values['grad_norm']} at step {step}")
    optimizer.step()
    if model.master is not None:
        model.master.sync()  # the updated float32 masters into the bf16 compute parameters
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return StepMetrics(
        loss=loss,
        grad_norm=values["grad_norm"],
        trained_tokens=int(trained_tokens),
        **routing.metrics(values, routed_tokens, supervised=cfg.router_supervision_coef > 0),
    )


# --------------------------------------------------------------------------------------------------
# The run


@dataclass
class TrainResult:
    steps: int
    tokens: int
    losses: list[float]
    final_loss: float | None
    validation: dict
    export_dir: Path | None
    checkpoint: Path | None
    packing: dict  # PackingStats.summary() of the rows trained so far


class Trainer:
    """One training run: the model, optimizer and data, set up (or resumed) from `out_dir`; `fit()` is
    the loop."""

    def __init__(
        self,
        cfg: TrainSection,
        shards_dir: Path,
        out_dir: Path,
        scheme_name: str | None = None,
        registry_path: Path | None = None,
        seed: int = 0,
        resume: bool = False,
        model_dir_resolver=lambda p: p,
    ):
        self.cfg, self.seed = cfg, seed
        self.shards_dir, self.out_dir = Path(shards_dir), Path(out_dir)
        self.checkpoint_dir = self.out_dir / "checkpoints"
        self.log_path = self.out_dir / "logs" / "train.jsonl"
        self.export_dir = self.out_dir / "export"
        self.runtime = setup_runtime(cfg.device)
        self.scheme = shards_scheme(self.shards_dir, registry_path, scheme_name)
        self.languages = manifest_languages(self.shards_dir)

        model_spec = model_dir_resolver(cfg.model)
        self.resumed_from = latest_checkpoint(self.checkpoint_dir) if resume else None
        torch.manual_seed(seed)
        if (
            self.resumed_from is not None
        ):  # the checkpoint's own config: its experts, whatever the options say
            lm = new_model(config_from_file(self.resumed_from / "config.json"))
        else:
            lm = build_model(
                model_spec,
                self.scheme.num_experts,
                moe_layers=cfg.moe_layers,
                top_k=cfg.top_k,
                norm_topk_prob=cfg.norm_topk_prob,
                shared_expert=cfg.shared_expert,
                router_aux_loss_coef=cfg.router_aux_loss_coef,
                seed=seed,
                dense=cfg.routing == "dense",
            )
        self.model_config = lm.config
        self.tokenizer = training_tokenizer(cfg.tokenizer, model_spec)
        self.model = prepare_model(lm, cfg, self.runtime)
        self.optimizer = make_optimizer(self.model, cfg, cuda=self.runtime.device.type == "cuda")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, cfg))
        self.step, self.tokens_seen, self.losses = 0, 0, []
        data_state = self._restore(self.resumed_from) if self.resumed_from is not None else None

        self.doc_tokenizer = DocumentTokenizer(self.tokenizer, cfg.chat_template)
        self.selection = DataSelection.for_training(self.shards_dir, cfg, seed)
        packer = training_packer(self.selection, self.doc_tokenizer, cfg, self.languages, data_state)
        self.initial_data_state = packer.state()
        self.feeder = StepFeeder(packer, cfg, self.runtime)
        self.validation = validation_batches(
            self.selection, self.doc_tokenizer, self.languages, cfg, self.runtime
        )
        self.peak = peak_flops(self.runtime.device)

    def fit(self, stop_after: int | None = None) -> TrainResult:
        """Train to max_steps (or `stop_after` more steps, to simulate an interruption in tests)."""
        cfg, rt = self.cfg, self.runtime
        target = cfg.max_steps if stop_after is None else min(cfg.max_steps, self.step + stop_after)
        last_data_state, validation, checkpoint = self.initial_data_state, {}, self.resumed_from
        bar = tqdm(
            total=cfg.max_steps, initial=self.step, desc="train", disable=not rt.is_main, dynamic_ncols=True
        )
        self._log({"event": "start", "step": self.step, "world_size": rt.world, "device": str(rt.device)})
        try:
            while self.step < target:
                micro_batches, pairs, data_state = self.feeder.next()
                synchronize(rt.device)
                t0 = time.perf_counter()
                try:
                    metrics = train_step(
                        self.model, self.optimizer, self.scheduler, micro_batches, cfg, rt, self.step + 1
                    )
                except NonFiniteLossError as exc:
                    raise self._stopped(exc, last_data_state, validation) from None
                synchronize(rt.device)
                dt = time.perf_counter() - t0
                self.step += 1
                last_data_state = data_state
                tokens = sum(b.n_tokens for b in micro_batches) * rt.world
                self.tokens_seen += tokens
                self.losses.append(metrics.loss)
                record = {
                    "step": self.step,
                    "lr": self.scheduler.get_last_lr()[0],
                    **metrics.as_record(),
                    "tokens": tokens,
                    "tokens_per_s": tokens / dt,
                    "step_s": dt,
                    "peak_memory_gb": peak_memory_gb(rt.device),
                }
                if self.peak:
                    record["mfu"] = (
                        training_flops(self.model_config, tokens, pairs) / dt / (self.peak * rt.world)
                    )
                if self.step % cfg.eval_every == 0 or self.step == cfg.max_steps:
                    validation = validation_metrics(self.model, self.validation, self.languages, rt)
                    record.update(validation)
                    logger.info(
                        f"train step {self.step}/{cfg.max_steps}: loss {metrics.loss:.3f}, "
                        f"validation loss {validation.get('val_loss', float('nan')):.3f}, "
                        f"{record['tokens_per_s']:.0f} tokens/s"
                    )
                if self.step % cfg.log_every == 0 or "val_loss" in record:
                    self._log(record)
                bar.set_postfix(loss=f"{metrics.loss:.3f}", tok_s=f"{record['tokens_per_s']:.0f}")
                bar.update(1)
                if self.step % cfg.checkpoint_every == 0 or self.step == target:
                    checkpoint = self.save(data_state, validation)
        finally:
            bar.close()
            self.feeder.close()
        export_dir = self.export() if self.step >= cfg.max_steps else None
        if export_dir:
            logger.info(f"exported the stock Qwen2-MoE checkpoint to {export_dir}")
        packing = PackingStats(**last_data_state.get("stats", {})).summary()
        self._log({"event": "end", "step": self.step, "tokens_seen": self.tokens_seen, "packing": packing})
        return TrainResult(
            steps=self.step,
            tokens=self.tokens_seen,
            losses=list(self.losses),
            final_loss=self.losses[-1] if self.losses else None,
            validation=validation,
            export_dir=export_dir,
            checkpoint=checkpoint,
            packing=packing,
        )

    def _stopped(self, exc: NonFiniteLossError, data_state: dict, validation: dict) -> NonFiniteLossError:
        """Save the last good state (the failed step's gradients dropped) and say how to go on."""
        self.optimizer.zero_grad(set_to_none=True)
        path = self.save(data_state, validation)
        where = f"; the last good state (step {self.step}) is saved in {path}" if path else ""
        return NonFiniteLossError(
            f"{exc}: training stopped{where}. Lower train.lr, raise warmup_steps or inspect the "
            "data of this step; `--resume` continues from the checkpoint."
        )

    def _log(self, record: dict) -> None:
        if self.runtime.is_main:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "a") as fh:
                fh.write(json.dumps(record) + "\n")

    # -- checkpoints ----------------------------------------------------------------------------------

    @property
    def sharded_checkpoints(self) -> bool:
        fmt = self.cfg.checkpoint_format
        return fmt == "sharded" or (fmt == "auto" and self.runtime.sharded)

    def _restore(self, checkpoint: Path) -> dict:
        """Model, optimizer, schedule, counters and RNG from `checkpoint` (full or sharded, written at any
        world size); returns its data state."""
        if is_sharded(checkpoint):
            ckpt = load_sharded_checkpoint(
                checkpoint, self.model.trained_module(), self.optimizer, self.runtime.rank
            )
        else:
            ckpt = load_checkpoint(checkpoint)
            load_full_state(self.model.trained_module(), self.optimizer, ckpt["model"], ckpt["optimizer"])
        if self.model.master is not None:
            self.model.master.sync()
        trainer = ckpt["trainer"]
        self.scheduler.load_state_dict(trainer["scheduler"])
        self.step, self.tokens_seen, self.losses = trainer["step"], trainer["tokens_seen"], trainer["losses"]
        torch.set_rng_state(ckpt["rng"]["cpu"])
        if "cuda" in ckpt["rng"] and self.runtime.device.type == "cuda":
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"])
        return trainer["data"]

    def save(self, data_state: dict, validation: dict) -> Path | None:
        trained = self.model.trained_module()
        trainer_state = {
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "scheduler": self.scheduler.state_dict(),
            "data": data_state,
            "losses": self.losses,
            "validation": validation,
            "world_size": self.runtime.world,
        }
        keep = self.cfg.keep_checkpoints
        if self.sharded_checkpoints:
            return save_sharded_checkpoint(
                self.checkpoint_dir,
                self.step,
                trained,
                self.optimizer,
                self.model_config,
                trainer_state,
                keep,
                self.runtime,
            )
        model_state = full_state_dict(trained)
        optimizer_state = full_optimizer_state(trained, self.optimizer)
        path = None
        if self.runtime.is_main:
            path = save_checkpoint(
                self.checkpoint_dir,
                self.step,
                model_state,
                self.model_config,
                optimizer_state,
                trainer_state,
                keep,
            )
        self.runtime.barrier()
        return path

    def export(self) -> Path | None:
        state = full_state_dict(self.model.trained_module())
        path = None
        if self.runtime.is_main:
            eos = [self.doc_tokenizer.eos_id]
            if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in eos:
                eos.append(self.tokenizer.eos_token_id)
            path = export_model(
                self.export_dir,
                state,
                self.model_config,
                self.tokenizer,
                getattr(torch, self.cfg.export_dtype),
                eos,
                self.doc_tokenizer.eos_id,
            )
        self.runtime.barrier()
        return path


def shards_scheme(shards_dir: Path, registry_path: Path | None, scheme_name: str | None) -> Scheme:
    """The expert scheme to train: the configured one, which must be the one the shards were tagged with."""
    manifest = load_manifest(shards_dir)
    scheme = load_registry(registry_path).scheme(scheme_name or manifest.scheme)
    if scheme.name != manifest.scheme:
        raise ValueError(
            f"{shards_dir}: shards were tagged with expert scheme '{manifest.scheme}' "
            f"but training is configured for '{scheme.name}'"
        )
    return scheme


def training_tokenizer(tokenizer_option: str | None, model_spec):
    """`train.tokenizer` when set, else the model directory's own tokenizer, else Qwen2's."""
    from pipeline.text.tokenizer import load_tokenizer

    if tokenizer_option:
        return load_tokenizer(str(tokenizer_option))
    if Path(str(model_spec), "tokenizer.json").is_file() or Path(str(model_spec), "vocab.json").is_file():
        return load_tokenizer(str(model_spec))
    return load_tokenizer()


# --------------------------------------------------------------------------------------------------
# Entry points


def trainer_from_config(
    cfg: Config, out: Path, resume: bool, shards_dir: Path | None = None, stage_dir: Path | None = None
) -> Trainer:
    def resolve_model(spec: str) -> str:
        return spec if is_preset(spec) else str(cfg.resolve(spec))

    train_cfg = cfg.train
    if train_cfg.tokenizer:
        train_cfg = train_cfg.model_copy(update={"tokenizer": str(cfg.resolve(train_cfg.tokenizer))})
    return Trainer(
        train_cfg,
        shards_dir=shards_dir or out / "shards",
        out_dir=stage_dir or out / "train",
        scheme_name=cfg.registry.scheme,
        registry_path=cfg.registry_path(),
        seed=cfg.run.seed,
        resume=resume,
        model_dir_resolver=resolve_model,
    )


def summarize(result: TrainResult) -> dict:
    return {
        "steps": result.steps,
        "tokens_seen": result.tokens,
        "first_loss": result.losses[0] if result.losses else None,
        "final_loss": result.final_loss,
        "validation": result.validation,
        "packing": result.packing,
        "export_dir": str(result.export_dir) if result.export_dir else None,
    }


def run(ctx) -> dict:
    """`make train`: train on OUT/shards and export to OUT/train/export (resumes an interrupted run)."""
    trainer = trainer_from_config(ctx.cfg, ctx.out, resume=True, stage_dir=ctx.stage_dir)
    return summarize(trainer.fit())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m moe_train.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--out", default="out", help="run directory: reads OUT/shards, writes OUT/train")
    parser.add_argument("--shards", default=None, help="shards directory (default OUT/shards)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    parser.add_argument("--max-steps", type=int, default=None, help="override train.max_steps")
    parser.add_argument(
        "--stop-after",
        type=int,
        default=None,
        help="train this many more steps, write a checkpoint and stop (a job with a time limit)",
    )
    parser.add_argument(
        "--plan",
        action="store_true",
        help="print the per-GPU memory plan (moe_train.memory_plan) and which settings fit, then exit",
    )
    parser.add_argument("--gpu-gb", type=float, default=80.0, help="--plan: memory of one GPU in GiB")
    parser.add_argument("--world-size", type=int, default=1, help="--plan: GPUs in the run")
    args = parser.parse_args(argv)
    from pipeline import console

    console.install()
    console.progress_bars_off_unless_terminal()
    if args.plan:
        from moe_train import memory_plan

        plan_args = [
            "--config",
            args.config,
            "--gpu-gb",
            str(args.gpu_gb),
            "--world-size",
            str(args.world_size),
        ]
        return memory_plan.main(plan_args)
    overrides = {"train.max_steps": args.max_steps} if args.max_steps else None
    try:
        cfg = load_config(args.config, overrides=overrides)
        trainer = trainer_from_config(
            cfg, Path(args.out), args.resume, shards_dir=Path(args.shards) if args.shards else None
        )
        result = trainer.fit(stop_after=args.stop_after)
    except (NonFiniteLossError, HandoffError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        shutdown()
    if trainer.runtime.is_main:
        print(json.dumps(summarize(result), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
