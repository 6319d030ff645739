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
master weights (`MasterWeights`, `train.bf16_params`, the default); with `bf16_params: false` the
parameters stay float32 and compute runs under bf16 autocast (the fused grouped_mm experts then get bf16
views of their weights, moe_train/experts.py). With several processes FSDP2 shards the float32
parameters and gathers them in bf16 (MixedPrecisionPolicy, gradients reduced in float32); at world size
1 nothing is sharded and the loop is otherwise the same code. On CPU everything is float32 (FSDP2 over
gloo under torchrun).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import json
import math
import os
import queue
import resource
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm
from transformers.models.qwen2_moe.modeling_qwen2_moe import load_balancing_loss_func

from moe_train import attention as attention_impl
from moe_train.checkpoint import export_model, latest_checkpoint, load_checkpoint, save_checkpoint
from moe_train.compiled import on_cuda
from moe_train.data import (
    Batch,
    DataSelection,
    DocumentStream,
    DocumentTokenizer,
    SequencePacker,
    collate,
    manifest_languages,
)
from moe_train.experts import AUTOCAST_GROUPED_MM
from moe_train.flops import attention_pairs, peak_flops, training_flops
from moe_train.loss import IGNORE_INDEX, linear_cross_entropy, per_token_cross_entropy
from moe_train.routing import RoutingState, install_hybrid_routing, router_supervision_loss, routing_stats
from moe_train.upcycle import build_model, drop_empty_shared_experts, moe_layer_indices, new_moe_model
from pipeline.config import Config, TrainSection, load_config
from pipeline.manifest import load_manifest
from pipeline.registry import load_registry


class NonFiniteLossError(RuntimeError):
    """The loss or gradient norm became NaN/inf; a checkpoint of the last good state was written."""


# --------------------------------------------------------------------------------------------------
# The model wrapper: one forward = hidden states -> fused cross-entropy (+ router logits captured)


class CausalLMForTraining(torch.nn.Module):
    """A Qwen2 / Qwen2-MoE causal LM with packed-sequence attention and a chunked fused loss.

    forward() returns the *summed* token loss (or per-token losses); the caller normalises.
    `routing` (None for dense models) carries per-token family experts to the hybrid routers and
    returns their logits.
    """

    def __init__(self, lm: torch.nn.Module, routing: RoutingState | None, varlen: bool, loss_chunk: int):
        super().__init__()
        self.lm = lm
        self.routing = routing
        self.varlen = varlen
        self.loss_chunk = loss_chunk
        self.master: MasterWeights | None = None

    def trained_module(self) -> torch.nn.Module:
        """What the optimizer updates and checkpoints save: the float32 master copy when there is one."""
        return self.master.module if self.master is not None else self

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        labels: torch.Tensor,
        expert_ids: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        max_doc_len: int | None = None,
        per_token: bool = False,
    ) -> torch.Tensor:
        if self.routing is not None:
            self.routing.begin(expert_ids)
        kwargs = {}
        if self.varlen:
            kwargs = dict(
                cu_seq_lens_q=cu_seqlens,
                cu_seq_lens_k=cu_seqlens,
                max_length_q=max_doc_len,
                max_length_k=max_doc_len,
            )
        out = self.lm.model(input_ids=input_ids, position_ids=position_ids, use_cache=False, **kwargs)
        hidden = out.last_hidden_state.reshape(-1, out.last_hidden_state.shape[-1])
        weight = self.lm.lm_head.weight
        if per_token:
            return per_token_cross_entropy(hidden, weight, labels.reshape(-1), self.loss_chunk)
        return linear_cross_entropy(hidden, weight, labels.reshape(-1), self.loss_chunk)


class MasterWeights:
    """bf16 parameters for compute, float32 master weights for the optimizer, checkpoints and export.

    With float32 parameters under autocast, every micro-batch casts each weight to bf16, casts its
    gradient back to float32 and carries a float32 residual stream; on the 1.5B shape this class makes
    the step 4% faster (docs/training.md, Benchmark). Here the compute model holds bf16 parameters
    (buffers such as the rotary frequencies keep their dtype) and a float32 copy of the same module
    (`module`, never run) holds the master weights. As soon as autograd has accumulated a compute
    parameter's gradient, a hook adds it into the master's float32 `.grad` and frees it, so
    micro-batches accumulate in float32; `sync()` copies the masters back after the optimizer step.
    """

    def __init__(self, compute: torch.nn.Module, dtype: torch.dtype = torch.bfloat16):
        self.module = copy.deepcopy(compute)
        self.compute_params: list[torch.nn.Parameter] = []
        self.master_params: list[torch.nn.Parameter] = []
        for c, m in zip(compute.parameters(), self.module.parameters(), strict=True):
            if not c.requires_grad:
                continue
            c.data = c.data.to(dtype)
            c.register_post_accumulate_grad_hook(functools.partial(_add_into_master, m))
            self.compute_params.append(c)
            self.master_params.append(m)

    @torch.no_grad()
    def sync(self) -> None:
        """Copy the float32 masters into the bf16 compute parameters (after an optimizer step or a load)."""
        for compute, master in zip(self.compute_params, self.master_params, strict=True):
            _elementwise(_copy_cast, compute)(compute.view(-1), master.view(-1))


def _add_into_master(master: torch.nn.Parameter, param: torch.nn.Parameter) -> None:
    if master.grad is None:
        master.grad = torch.empty_like(master)
        _elementwise(_copy_cast, param)(master.grad.view(-1), param.grad.view(-1))
    else:
        _elementwise(_add_cast, param)(master.grad.view(-1), param.grad.view(-1))
    param.grad = None


def _add_cast(total: torch.Tensor, update: torch.Tensor) -> None:
    total.add_(update.to(total.dtype))


def _copy_cast(target: torch.Tensor, source: torch.Tensor) -> None:
    target.copy_(source.to(target.dtype))


_COMPILE_MIN_NUMEL = 1 << 20


def _elementwise(fn, param: torch.Tensor):
    """`fn` over flattened tensors like `param`: compiled on CUDA with dynamic shapes (one kernel for
    every parameter) when the tensor is large, eager otherwise. Eager PyTorch runs bf16/float32 mixed
    elementwise ops through a non-vectorised kernel that took twice the memory-bound time on the 1.5B
    profile, while for small tensors (norms, biases) the compiled call's ~15 us of Python overhead
    outweighs the kernel."""
    return on_cuda(fn, param.device, dynamic=True) if param.numel() >= _COMPILE_MIN_NUMEL else fn


# --------------------------------------------------------------------------------------------------
# Setup helpers


@dataclass
class Runtime:
    device: torch.device
    rank: int
    world: int
    bf16: bool  # bf16 autocast (CUDA)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        """FSDP2 in use: more than one process."""
        return self.world > 1


def setup_runtime(device_option: str) -> Runtime:
    """Pick the device and, under torchrun, join the process group (NCCL on CUDA, gloo on CPU)."""
    want_cuda = device_option == "cuda" or (device_option == "auto" and torch.cuda.is_available())
    if device_option == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
    under_torchrun = "WORLD_SIZE" in os.environ and "RANK" in os.environ
    if want_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if under_torchrun and not dist.is_initialized():
        dist.init_process_group("nccl" if want_cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    return Runtime(device, rank, world, bf16=want_cuda)


def no_decay(name: str, param: torch.nn.Parameter) -> bool:
    """Norm weights and biases (all 1-D parameters) get no weight decay."""
    return param.ndim < 2 or name.endswith(".bias")


def make_optimizer(model: CausalLMForTraining, cfg: TrainSection, cuda: bool = False) -> torch.optim.AdamW:
    """AdamW over the trained parameters (the float32 masters when the model computes in bf16)."""
    decay, keep = [], []
    for name, param in model.trained_module().named_parameters():
        if param.requires_grad and param.numel():
            (keep if no_decay(name, param) else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": keep, "weight_decay": 0.0}]
    fused = {"fused": True} if cuda else {"foreach": True}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=1e-8, **fused)


def lr_factor(step: int, cfg: TrainSection) -> float:
    """Linear warmup to 1, then cosine decay to min_lr_ratio at max_steps."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def shard_model(model: CausalLMForTraining, runtime: Runtime) -> None:
    """FSDP2: each decoder layer is its own unit, the wrapper (embeddings, norm, LM head) the root.

    Parameters stay float32 (sharded); FSDP2 gathers them in bf16 for compute and reduces gradients in
    float32."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if runtime.bf16
        else MixedPrecisionPolicy()
    )
    for layer in model.lm.model.layers:
        fully_shard(layer, mp_policy=policy)
    fully_shard(model, mp_policy=policy)


def _attention_choice(option: str, device: torch.device) -> str:
    if option == "auto":
        return "varlen" if attention_impl.varlen_available(device) else "sdpa"
    if option == "varlen" and not attention_impl.varlen_available(device):
        raise RuntimeError("attention 'varlen' needs CUDA and torch.nn.attention.varlen")
    return option


# All decoder layers share one compiled function. Its variants: (dense | MoE layer) x (training |
# evaluation without gradients) x (first | dynamic FlashAttention max document length) = 8, torch's
# default recompile limit, leaving no room; past the limit torch runs the layers eagerly from then on.
_LAYER_VARIANTS_LIMIT = 32


def prepare_model(lm: torch.nn.Module, cfg: TrainSection, runtime: Runtime) -> CausalLMForTraining:
    """Routing, attention and experts implementation, checkpointing, master weights, compile, sharding -
    in that order."""
    attention = _attention_choice(cfg.attention, runtime.device)
    lm.set_attn_implementation(attention_impl.VARLEN if attention == "varlen" else "sdpa")
    if hasattr(lm.config, "num_experts"):
        experts = cfg.experts_implementation
        lm.set_experts_implementation(AUTOCAST_GROUPED_MM if experts == "grouped_mm" else experts)
    routing = install_hybrid_routing(lm) if hasattr(lm.config, "num_experts") else None
    if hasattr(lm.config, "shared_expert_intermediate_size"):
        drop_empty_shared_experts(lm)
    lm.config.use_cache = False
    if cfg.activation_checkpointing:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = CausalLMForTraining(lm, routing, varlen=attention == "varlen", loss_chunk=cfg.loss_chunk_size)
    model.to(runtime.device)
    if cfg.bf16_params and runtime.bf16 and not runtime.sharded:
        model.master = MasterWeights(model)
    if cfg.compile:
        limit = torch._dynamo.config.recompile_limit
        torch._dynamo.config.recompile_limit = max(limit, _LAYER_VARIANTS_LIMIT)
        for layer in lm.model.layers:
            layer.compile()
    if runtime.sharded:
        shard_model(model, runtime)
    return model


def full_state_dict(model: CausalLMForTraining) -> dict[str, torch.Tensor]:
    """The unsharded stock-model state dict on CPU (complete on rank 0)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k.removeprefix("lm."): v for k, v in state.items()}


def full_optimizer_state(model, optimizer) -> dict:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(
        model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )


def load_full_state(model, optimizer, model_state: dict, optimizer_state: dict | None) -> None:
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True)
    state = {f"lm.{k}": v for k, v in model_state.items()}
    if model.lm.config.tie_word_embeddings:
        state.setdefault("lm.lm_head.weight", state["lm.model.embed_tokens.weight"])
    set_model_state_dict(model, state, options=options)
    if optimizer_state is not None:
        set_optimizer_state_dict(model, optimizer, optim_state_dict=optimizer_state, options=options)


# --------------------------------------------------------------------------------------------------
# Data feeding


class StepFeeder:
    """Produces each step's micro-batches for this rank (with the data state after them) in a thread."""

    def __init__(self, packer: SequencePacker, cfg: TrainSection, runtime: Runtime, prefetch: int = 2):
        self.packer = packer
        self.micro = cfg.micro_batch_size
        self.accum = cfg.grad_accum
        self.runtime = runtime
        self._queue: queue.Queue = queue.Queue(maxsize=prefetch)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        per_rank = self.micro * self.accum
        try:
            while not self._stop.is_set():
                sequences = [next(self.packer) for _ in range(per_rank * self.runtime.world)]
                mine = sequences[self.runtime.rank * per_rank : (self.runtime.rank + 1) * per_rank]
                micro_batches = [collate(mine[i : i + self.micro]) for i in range(0, per_rank, self.micro)]
                pairs = attention_pairs([n for s in sequences for n in s.doc_lengths])
                self._put((micro_batches, pairs, self.packer.state()))
        except BaseException as exc:  # surfaced in the training thread
            self._put(exc)

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def next(self) -> tuple[list[Batch], int, dict]:
        if self._stop.is_set():
            raise RuntimeError("this Trainer has finished; create a new one (resume=True) to continue")
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()


# --------------------------------------------------------------------------------------------------
# The trainer


def _peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _all_reduce(tensor: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    if runtime.sharded:
        dist.all_reduce(tensor)
    return tensor


def _blank_batch(batch: Batch) -> Batch:
    """A copy of `batch` that contributes no loss, no routing statistics and no language counts."""
    return Batch(
        batch.input_ids,
        torch.full_like(batch.labels, IGNORE_INDEX),
        batch.position_ids,
        torch.full_like(batch.expert_ids, -1),
        torch.full_like(batch.language_ids, -1),
        batch.cu_seqlens,
        batch.max_doc_len,
        batch.doc_lengths,
    )


class StepRunner:
    """One optimisation step and one evaluation pass over given batches (used by Trainer and the benchmark)."""

    def __init__(self, model: CausalLMForTraining, optimizer, scheduler, cfg: TrainSection, runtime: Runtime):
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.cfg = cfg
        self.runtime = runtime
        self.model_config = model.lm.config
        self.moe_layers = (
            moe_layer_indices(self.model_config) if hasattr(self.model_config, "num_experts") else []
        )

    def _autocast(self):
        if self.runtime.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _forward(self, batch: Batch, per_token: bool = False, force: bool = True) -> torch.Tensor:
        with self._autocast():
            return self.model(
                batch.input_ids,
                batch.position_ids,
                batch.labels,
                expert_ids=batch.expert_ids if force and self.cfg.hybrid_routing else None,
                cu_seqlens=batch.cu_seqlens,
                max_doc_len=batch.max_doc_len,
                per_token=per_token,
            )

    def train_step(self, micro_batches: list[Batch], step: int = 0) -> dict:
        """Forward/backward over this rank's micro-batches, clip, step (`step`: 1-based, for messages).

        The GPU is synchronised once, just before the optimizer step: every metric (and the NaN/inf
        verdict, identical on all ranks because loss and gradient norm are global) is read in one go.
        """
        rt = self.runtime
        local = [
            sum(int((b.labels != IGNORE_INDEX).sum()) for b in micro_batches),
            sum(int((b.expert_ids >= 0).sum()) for b in micro_batches),
        ]
        if rt.sharded:
            local = _all_reduce(torch.tensor(local, dtype=torch.float64, device=rt.device), rt).tolist()
        global_tokens, global_routed = max(float(local[0]), 1.0), max(float(local[1]), 1.0)
        batches = [b.to(rt.device) for b in micro_batches]
        n_layers = len(self.moe_layers)
        n_experts = getattr(self.model_config, "num_experts", 1)
        # loss sum, supervision loss sum, agreeing tokens, tokens with a family, then expert load per layer
        totals = torch.zeros(4 + max(n_layers, 1) * n_experts, device=rt.device, dtype=torch.float64)
        routing = self.model.routing
        for index, batch in enumerate(batches):
            if rt.sharded:
                self.model.set_requires_gradient_sync(index == len(batches) - 1)
            token_loss = self._forward(batch)
            objective = token_loss / global_tokens
            logits = routing.router_logits if routing is not None else []
            if logits and self.cfg.router_aux_loss_coef > 0:  # Switch-style load balancing (stock top-k)
                aux = load_balancing_loss_func(
                    tuple(logits), n_experts, self.model_config.num_experts_per_tok
                )
                objective = objective + self.cfg.router_aux_loss_coef * aux / (len(batches) * rt.world)
            if logits and self.cfg.router_supervision_coef > 0:
                sup = sum(router_supervision_loss(lg, batch.expert_ids) for lg in logits) / n_layers
                objective = objective + self.cfg.router_supervision_coef * sup / global_routed
                totals[1] += sup.detach()
            (objective * rt.world).backward()  # FSDP averages gradients over ranks; we want the sum
            totals[0] += token_loss.detach()
            for layer, lg in enumerate(logits[:n_layers]):
                stats = routing_stats(lg.detach(), batch.expert_ids, self.model_config.num_experts_per_tok)
                totals[2] += stats["agree"].sum()
                totals[3] += stats["has_family"].sum()
                totals[4 + layer * n_experts : 4 + (layer + 1) * n_experts] += stats["load"]
        totals = _all_reduce(totals, rt)
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.model.trained_module().parameters(), self.cfg.grad_clip
        )
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        values = torch.cat([totals, grad_norm.detach().double().view(1)]).tolist()
        loss, grad_norm_value = values[0] / global_tokens, values[-1]
        if not math.isfinite(loss):
            raise NonFiniteLossError(f"loss is {loss} at step {step}")
        if not math.isfinite(grad_norm_value):
            raise NonFiniteLossError(f"gradient norm is {grad_norm_value} at step {step}")
        self.optimizer.step()
        if self.model.master is not None:
            self.model.master.sync()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        metrics = {"loss": loss, "grad_norm": grad_norm_value, "trained_tokens": int(global_tokens)}
        if n_layers and routing is not None:
            metrics["router_agreement"] = values[2] / max(values[3], 1.0)
            loads = [values[4 + i * n_experts : 4 + (i + 1) * n_experts] for i in range(n_layers)]
            metrics["expert_load"] = {
                f"layer_{layer}": [x / max(sum(load), 1.0) for x in load]
                for layer, load in zip(self.moe_layers, loads, strict=True)
            }
            if self.cfg.router_supervision_coef > 0:
                metrics["router_supervision_loss"] = values[1] / global_routed
        return metrics

    @torch.no_grad()
    def evaluate(self, batches: list[Batch], languages: list[str]) -> dict:
        """Per-language validation loss and router agreement (stock top-k contains the family expert)."""
        if not batches:
            return {}
        rt = self.runtime
        n_lang = len(languages)
        n_layers = len(self.moe_layers)
        # per language: loss sum, loss tokens, agreeing token-layers, routed token-layers
        acc = torch.zeros(4, n_lang, device=rt.device, dtype=torch.float64)
        per_layer = torch.zeros(2, max(n_layers, 1), device=rt.device, dtype=torch.float64)
        self.model.train(False)  # evaluation mode (no dropout is used, but be explicit)
        routing = self.model.routing
        for batch in batches:
            batch = batch.to(rt.device)
            losses = self._forward(batch, per_token=True, force=False)
            langs = batch.language_ids.reshape(-1)
            valid = (batch.labels.reshape(-1) != IGNORE_INDEX) & (langs >= 0)
            acc[0].index_add_(0, langs[valid], losses[valid].double())
            acc[1].index_add_(0, langs[valid], torch.ones_like(losses[valid], dtype=torch.float64))
            for layer, lg in enumerate(routing.router_logits[:n_layers] if routing is not None else []):
                stats = routing_stats(lg, batch.expert_ids, self.model_config.num_experts_per_tok)
                fam = stats["has_family"] & (langs >= 0)
                acc[2].index_add_(0, langs[fam], stats["agree"][fam].double())
                acc[3].index_add_(0, langs[fam], torch.ones_like(langs[fam], dtype=torch.float64))
                per_layer[0, layer] += stats["agree"][fam].sum()
                per_layer[1, layer] += fam.sum()
        self.model.train()
        acc, per_layer = _all_reduce(acc, rt), _all_reduce(per_layer, rt)
        result: dict = {}
        if acc[1].sum() > 0:
            result["val_loss"] = (acc[0].sum() / acc[1].sum()).item()
            result["val_loss_by_language"] = {
                code: (acc[0, i] / acc[1, i]).item() for i, code in enumerate(languages) if acc[1, i] > 0
            }
        if n_layers and acc[3].sum() > 0:
            result["agreement"] = (acc[2].sum() / acc[3].sum()).item()
            result["agreement_by_language"] = {
                code: (acc[2, i] / acc[3, i]).item() for i, code in enumerate(languages) if acc[3, i] > 0
            }
            result["agreement_by_layer"] = {
                f"layer_{layer}": (per_layer[0, i] / per_layer[1, i].clamp(min=1)).item()
                for i, layer in enumerate(self.moe_layers)
            }
        return result


@dataclass
class TrainResult:
    steps: int
    tokens: int
    losses: list[float]
    final_loss: float | None
    validation: dict
    export_dir: Path | None
    checkpoint: Path | None


class Trainer:
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
        self.cfg = cfg
        self.shards_dir = Path(shards_dir)
        self.out_dir = Path(out_dir)
        self.seed = seed
        self.runtime = setup_runtime(cfg.device)
        manifest = load_manifest(self.shards_dir)
        registry = load_registry(registry_path)
        scheme = registry.scheme(scheme_name or manifest.scheme)
        if scheme.name != manifest.scheme:
            raise ValueError(
                f"{self.shards_dir}: shards were tagged with expert scheme '{manifest.scheme}' "
                f"but training is configured for '{scheme.name}'"
            )
        self.scheme = scheme
        self.languages = manifest_languages(self.shards_dir)
        self.checkpoint_dir = self.out_dir / "checkpoints"
        self.log_path = self.out_dir / "logs" / "train.jsonl"
        self.export_dir = self.out_dir / "export"

        model_spec = model_dir_resolver(cfg.model)
        resume_from = latest_checkpoint(self.checkpoint_dir) if resume else None
        self.resumed_from = resume_from
        torch.manual_seed(seed)
        if resume_from is not None:
            from transformers import Qwen2MoeConfig

            lm = new_moe_model(Qwen2MoeConfig.from_json_file(resume_from / "config.json"))
        else:
            lm = build_model(
                model_spec,
                scheme.num_experts,
                moe_layers=cfg.moe_layers,
                top_k=cfg.top_k,
                norm_topk_prob=cfg.norm_topk_prob,
                shared_expert=cfg.shared_expert,
                router_aux_loss_coef=cfg.router_aux_loss_coef,
                seed=seed,
            )
        self.model_config = lm.config
        self.tokenizer = self._load_tokenizer(model_spec)
        self.model = prepare_model(lm, cfg, self.runtime)
        self.optimizer = make_optimizer(self.model, cfg, cuda=self.runtime.device.type == "cuda")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, cfg))
        self.step = 0
        self.tokens_seen = 0
        self.losses: list[float] = []
        data_state = None
        if resume_from is not None:
            ckpt = load_checkpoint(resume_from)
            load_full_state(self.model.trained_module(), self.optimizer, ckpt["model"], ckpt["optimizer"])
            if self.model.master is not None:
                self.model.master.sync()
            trainer = ckpt["trainer"]
            self.scheduler.load_state_dict(trainer["scheduler"])
            self.step, self.tokens_seen = trainer["step"], trainer["tokens_seen"]
            self.losses = trainer["losses"]
            data_state = trainer["data"]
            torch.set_rng_state(ckpt["rng"]["cpu"])
            if "cuda" in ckpt["rng"] and self.runtime.device.type == "cuda":
                torch.cuda.set_rng_state(ckpt["rng"]["cuda"])

        self.doc_tokenizer = DocumentTokenizer(self.tokenizer, cfg.chat_template)
        self.selection = DataSelection(
            shards_dir=self.shards_dir,
            split="train",
            languages=tuple(cfg.languages),
            families=tuple(cfg.families),
            source_types=tuple(cfg.source_types),
            source_priorities=dict(cfg.source_priorities),
            source_repeats=dict(cfg.source_repeats),
            seed=seed,
        )
        stream = DocumentStream(self.selection, self.doc_tokenizer, state=(data_state or {}).get("stream"))
        packer = SequencePacker(
            stream, cfg.seq_len, self.languages, self.doc_tokenizer.eos_id, state=data_state
        )
        self.initial_data_state = packer.state()
        self.feeder = StepFeeder(packer, cfg, self.runtime)
        self.validation = self._validation_batches()
        self.peak = peak_flops(self.runtime.device)
        self.runner = StepRunner(self.model, self.optimizer, self.scheduler, cfg, self.runtime)

    # -- setup ----------------------------------------------------------------------------------------

    def _load_tokenizer(self, model_spec):
        from pipeline.text.tokenizer import load_tokenizer

        if self.cfg.tokenizer:
            return load_tokenizer(str(self.cfg.tokenizer))
        if Path(str(model_spec), "tokenizer.json").is_file() or Path(str(model_spec), "vocab.json").is_file():
            return load_tokenizer(str(model_spec))
        return load_tokenizer()

    def _validation_batches(self) -> list[Batch]:
        """A fixed set of validation micro-batches (split 'valid'), this rank's share of them."""
        selection = DataSelection(
            shards_dir=self.shards_dir,
            split="valid",
            languages=self.selection.languages,
            families=self.selection.families,
            source_types=self.selection.source_types,
            seed=self.seed,
        )
        if not selection.files():
            return []
        stream = DocumentStream(selection, self.doc_tokenizer, epochs=1)
        packer = SequencePacker(stream, self.cfg.seq_len, self.languages, self.doc_tokenizer.eos_id)
        sequences = []
        for seq in packer:
            sequences.append(seq)
            if len(sequences) == self.cfg.eval_batches * self.cfg.micro_batch_size:
                break
        micro = self.cfg.micro_batch_size
        batches = [collate(sequences[i : i + micro]) for i in range(0, len(sequences), micro)]
        # every rank must run the same number of forwards (FSDP collectives): pad with a batch that counts nothing
        per_rank = math.ceil(len(batches) / self.runtime.world)
        blank = _blank_batch(batches[0])
        batches += [blank] * (per_rank * self.runtime.world - len(batches))
        return batches[self.runtime.rank :: self.runtime.world]

    # -- checkpoints ----------------------------------------------------------------------------------

    def save(self, data_state: dict, validation: dict) -> Path | None:
        trained = self.model.trained_module()
        model_state = full_state_dict(trained)
        optimizer_state = full_optimizer_state(trained, self.optimizer)
        path = None
        if self.runtime.is_main:
            trainer_state = {
                "step": self.step,
                "tokens_seen": self.tokens_seen,
                "scheduler": self.scheduler.state_dict(),
                "data": data_state,
                "losses": self.losses,
                "validation": validation,
                "world_size": self.runtime.world,
            }
            path = save_checkpoint(
                self.checkpoint_dir,
                self.step,
                model_state,
                self.model_config,
                optimizer_state,
                trainer_state,
                self.cfg.keep_checkpoints,
            )
        if self.runtime.sharded:
            dist.barrier()
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
        if self.runtime.sharded:
            dist.barrier()
        return path

    # -- the loop -------------------------------------------------------------------------------------

    def _log(self, record: dict) -> None:
        if self.runtime.is_main:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "a") as fh:
                fh.write(json.dumps(record) + "\n")

    def fit(self, stop_after: int | None = None) -> TrainResult:
        """Train to max_steps (or `stop_after` more steps, to simulate an interruption in tests)."""
        cfg, rt = self.cfg, self.runtime
        last_data_state = self.initial_data_state
        validation: dict = {}
        checkpoint = self.resumed_from
        bar = tqdm(
            total=cfg.max_steps, initial=self.step, desc="train", disable=not rt.is_main, dynamic_ncols=True
        )
        self._log({"event": "start", "step": self.step, "world_size": rt.world, "device": str(rt.device)})
        target = cfg.max_steps if stop_after is None else min(cfg.max_steps, self.step + stop_after)
        try:
            while self.step < target:
                micro_batches, pairs, data_state = self.feeder.next()
                if rt.device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                try:
                    metrics = self.runner.train_step(micro_batches, self.step + 1)
                except NonFiniteLossError as exc:
                    self.optimizer.zero_grad(set_to_none=True)
                    path = self.save(last_data_state, validation)
                    where = f"; the last good state (step {self.step}) is saved in {path}" if path else ""
                    raise NonFiniteLossError(
                        f"{exc}: training stopped{where}. Lower train.lr, raise warmup_steps or inspect the "
                        "data of this step; `--resume` continues from the checkpoint."
                    ) from None
                if rt.device.type == "cuda":
                    torch.cuda.synchronize()
                dt = time.perf_counter() - t0
                self.step += 1
                last_data_state = data_state
                tokens = sum(b.n_tokens for b in micro_batches) * rt.world
                self.tokens_seen += tokens
                self.losses.append(metrics["loss"])
                record = {
                    "step": self.step,
                    "lr": self.scheduler.get_last_lr()[0],
                    **metrics,
                    "tokens": tokens,
                    "tokens_per_s": tokens / dt,
                    "step_s": dt,
                    "peak_memory_gb": _peak_memory_gb(rt.device),
                }
                if self.peak:
                    flops = training_flops(self.model_config, tokens, pairs)
                    record["mfu"] = flops / dt / (self.peak * rt.world)
                if self.step % cfg.eval_every == 0 or self.step == cfg.max_steps:
                    validation = self.runner.evaluate(self.validation, self.languages)
                    record.update(validation)
                if self.step % cfg.log_every == 0 or "val_loss" in record:
                    self._log(record)
                bar.set_postfix(loss=f"{metrics['loss']:.3f}", tok_s=f"{record['tokens_per_s']:.0f}")
                bar.update(1)
                if self.step % cfg.checkpoint_every == 0 or self.step == target:
                    checkpoint = self.save(data_state, validation)
        finally:
            bar.close()
            self.feeder.close()
        export_dir = self.export() if self.step >= cfg.max_steps else None
        self._log({"event": "end", "step": self.step, "tokens_seen": self.tokens_seen})
        return TrainResult(
            steps=self.step,
            tokens=self.tokens_seen,
            losses=list(self.losses),
            final_loss=self.losses[-1] if self.losses else None,
            validation=validation,
            export_dir=export_dir,
            checkpoint=checkpoint,
        )


# --------------------------------------------------------------------------------------------------
# Entry points


def trainer_from_config(
    cfg: Config, out: Path, resume: bool, shards_dir: Path | None = None, stage_dir: Path | None = None
) -> Trainer:
    def resolve_model(spec: str) -> str:
        from moe_train.upcycle import is_preset

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
    args = parser.parse_args(argv)
    overrides = {"train.max_steps": args.max_steps} if args.max_steps else None
    cfg = load_config(args.config, overrides=overrides)
    out = Path(args.out)
    trainer = trainer_from_config(
        cfg, out, args.resume, shards_dir=Path(args.shards) if args.shards else None
    )
    try:
        result = trainer.fit()
    except NonFiniteLossError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if trainer.runtime.is_main:
        print(json.dumps(summarize(result), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
