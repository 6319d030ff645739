"""Per-GPU memory of a Post-MoE training run, worked out before the run: which FSDP2 settings fit.

A 10B-parameter Post-MoE (Qwen2-7B with its last 2 layers upcycled) holds about 160 GB of float32
weights, gradients and AdamW state: it fits on no single GPU, and whether it fits on 8 depends on
resharding, offload and activation checkpointing. This module answers that from the config alone:

    python -m moe_train.memory_plan --config configs/apollomoe_7b.yaml --gpu-gb 80 --world-size 8

The accounting follows what `moe_train` does:
- one process: bf16 compute weights plus float32 master weights and float32 gradients (`bf16_params`),
  or float32 weights under autocast; AdamW's two float32 moments;
- several processes (FSDP2, one unit per decoder layer plus the root): float32 weights, gradients and
  moments sharded over the world; each unit is all-gathered in bf16 while it computes (two units at a
  time with prefetch), or kept gathered from forward to backward when `reshard_after_forward` is off;
  the root unit (embeddings, final norm, LM head) stays gathered; CPU offload moves the float32 shards
  and moments to host memory;
- activations: the tensors autograd saves per token of one decoder layer (`layer_activation_bytes`,
  checked against what autograd really saves in tests/test_memory_plan.py), for every layer, or with
  activation checkpointing only each layer's input plus one layer recomputed at a time;
- the loss: the chunked cross-entropy's logits of one chunk (float32 and its gradient) and its float32
  LM-head gradient;
- a fixed allowance for the CUDA context, NCCL buffers and allocator fragmentation.
"""

from __future__ import annotations

import argparse
import itertools
from dataclasses import dataclass, field

GIB = 1024**3
BF16 = 2
FP32 = 4
RUNTIME_OVERHEAD_BYTES = 3 * GIB  # CUDA context + NCCL buffers + cache fragmentation, a deliberate margin


@dataclass(frozen=True)
class ModelShape:
    """The sizes that decide memory, read from a Qwen2 or Qwen2-MoE config."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied_embeddings: bool
    moe_layers: tuple[int, ...] = ()
    experts: int = 0
    top_k: int = 0
    moe_intermediate: int = 0
    shared_intermediate: int = 0

    @classmethod
    def from_config(cls, config) -> ModelShape:
        hidden = config.hidden_size
        experts = getattr(config, "num_experts", 0) or 0
        mlp_only = set(getattr(config, "mlp_only_layers", []) or [])
        moe = tuple(i for i in range(config.num_hidden_layers) if experts and i not in mlp_only)
        return cls(
            hidden=hidden,
            intermediate=config.intermediate_size,
            layers=config.num_hidden_layers,
            heads=config.num_attention_heads,
            kv_heads=config.num_key_value_heads,
            head_dim=getattr(config, "head_dim", None) or hidden // config.num_attention_heads,
            vocab=config.vocab_size,
            tied_embeddings=bool(config.tie_word_embeddings),
            moe_layers=moe,
            experts=experts,
            top_k=getattr(config, "num_experts_per_tok", 0) or 0,
            moe_intermediate=getattr(config, "moe_intermediate_size", 0) or 0,
            shared_intermediate=getattr(config, "shared_expert_intermediate_size", 0) or 0,
        )

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def attention_params(self) -> int:
        """q/k/v projections with bias, o projection without, and the two RMSNorm weights."""
        q = self.hidden * self.heads * self.head_dim + self.heads * self.head_dim
        kv = 2 * (self.hidden * self.kv_dim + self.kv_dim)
        o = self.heads * self.head_dim * self.hidden
        return q + kv + o + 2 * self.hidden

    def dense_layer_params(self) -> int:
        return self.attention_params() + 3 * self.hidden * self.intermediate

    def moe_layer_params(self) -> int:
        """Router, experts, and the shared expert with its gate when it has units (a zero-width one is
        dropped for training, moe_train.upcycle.drop_empty_shared_experts)."""
        experts = self.experts * 3 * self.hidden * self.moe_intermediate
        shared = 3 * self.hidden * self.shared_intermediate + self.hidden if self.shared_intermediate else 0
        return self.attention_params() + self.experts * self.hidden + experts + shared

    def root_params(self) -> int:
        """Embeddings, final norm and the LM head (one matrix when tied)."""
        head = 0 if self.tied_embeddings else self.vocab * self.hidden
        return self.vocab * self.hidden + self.hidden + head

    def layer_params(self, layer: int) -> int:
        return self.moe_layer_params() if layer in self.moe_layers else self.dense_layer_params()

    def total_params(self) -> int:
        return self.root_params() + sum(self.layer_params(i) for i in range(self.layers))

    def active_params(self) -> int:
        """Parameters a token passes through: top_k of the experts in each MoE layer."""
        inactive = (self.experts - self.top_k) * 3 * self.hidden * self.moe_intermediate
        return self.total_params() - len(self.moe_layers) * inactive

    def layer_activation_bytes(self, layer: int, dtype_bytes: int = BF16) -> int:
        """Bytes autograd keeps per token for the backward pass of one decoder layer.

        Each RMSNorm keeps its float32 input and inverse RMS, its output and the projection's copy of
        it. Attention keeps q, k and v after the rotary embedding and its output, plus a float32
        log-sum-exp per head (FlashAttention/SDPA keep no score matrix). A dense MLP keeps the gate and
        up projections, the activation and the product. An MoE layer keeps the router's float32
        logits and int64 top-k choices, and per routed copy of the token (top_k of them) its expert
        index, input, gate/up output, activation, product, routing weight, and the weighted output.
        """
        dt, h, q, kv = dtype_bytes, self.hidden, self.heads * self.head_dim, self.kv_dim
        norms = 2 * (FP32 * h + FP32 + 2 * dt * h)
        attention = dt * (2 * q + 2 * kv) + FP32 * self.heads
        if layer in self.moe_layers:
            per_copy = 8 + dt * (3 * h + 4 * self.moe_intermediate + 1)
            mlp = self.top_k * per_copy + FP32 * self.experts + 8 * self.top_k
            if self.shared_intermediate:
                mlp += dt * (4 * self.shared_intermediate + 2 * h + 1)
        else:
            mlp = dt * 4 * self.intermediate
        return norms + attention + mlp

    def shared_activation_bytes(self, dtype_bytes: int = BF16) -> int:
        """Per token, outside the layers: the rotary cos/sin every layer reads, the final norm."""
        return 2 * dtype_bytes * self.head_dim + FP32 * self.hidden + FP32 + 2 * dtype_bytes * self.hidden


@dataclass(frozen=True)
class Setup:
    """How the run is laid out: what the memory depends on beyond the model shape."""

    world_size: int = 1
    micro_batch_size: int = 1
    seq_len: int = 4096
    bf16_params: bool = True
    activation_checkpointing: bool = False
    reshard_after_forward: bool = True
    cpu_offload: bool = False
    loss_chunk: int = 4096

    @property
    def sharded(self) -> bool:
        return self.world_size > 1


@dataclass
class MemoryPlan:
    """Bytes per GPU by component, and the total against the GPU's memory."""

    shape: ModelShape
    setup: Setup
    parts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def fits(self, gpu_bytes: int) -> bool:
        return self.total <= gpu_bytes


def plan(shape: ModelShape, setup: Setup) -> MemoryPlan:
    """The per-GPU memory of one training step's peak (end of the forward pass, start of backward)."""
    params = shape.total_params()
    world = setup.world_size
    parts: dict[str, int] = {}
    if setup.sharded:
        on_gpu = 0 if setup.cpu_offload else 1
        parts["weights (fp32 shards)"] = on_gpu * FP32 * params // world
        largest_unit = max(shape.layer_params(i) for i in range(shape.layers))
        if setup.reshard_after_forward:
            gathered = 2 * largest_unit  # the unit computing and the one prefetched
        else:
            gathered = sum(shape.layer_params(i) for i in range(shape.layers))
        parts["gathered bf16 weights"] = BF16 * (gathered + shape.root_params())
        parts["gradients (fp32 shards)"] = on_gpu * FP32 * params // world
        parts["AdamW moments (fp32 shards)"] = on_gpu * 2 * FP32 * params // world
    else:
        if setup.bf16_params:
            parts["weights (bf16 compute + fp32 master)"] = (BF16 + FP32) * params
        else:
            parts["weights (fp32)"] = FP32 * params
        parts["gradients (fp32)"] = FP32 * params
        parts["AdamW moments (fp32)"] = 2 * FP32 * params
    tokens = setup.micro_batch_size * setup.seq_len
    per_layer = [shape.layer_activation_bytes(i) for i in range(shape.layers)]
    if setup.activation_checkpointing:
        activations = tokens * (BF16 * shape.hidden * shape.layers + max(per_layer))
    else:
        activations = tokens * sum(per_layer)
    parts["activations"] = activations + tokens * shape.shared_activation_bytes()
    chunk = min(setup.loss_chunk, tokens)
    parts["loss (logit chunk, LM-head grad)"] = (
        chunk * shape.vocab * 3 * FP32 + FP32 * shape.vocab * shape.hidden
    )
    parts["CUDA context, buffers, fragmentation"] = RUNTIME_OVERHEAD_BYTES
    return MemoryPlan(shape, setup, parts)


def candidate_setups(base: Setup) -> list[Setup]:
    """The settings a user can turn: checkpointing, resharding (FSDP only), CPU offload (FSDP only)."""
    setups = []
    for checkpointing, reshard, offload in itertools.product((False, True), (True, False), (False, True)):
        if not base.sharded and (offload or not reshard):
            continue
        setups.append(
            Setup(
                world_size=base.world_size,
                micro_batch_size=base.micro_batch_size,
                seq_len=base.seq_len,
                bf16_params=base.bf16_params,
                activation_checkpointing=checkpointing,
                reshard_after_forward=reshard,
                cpu_offload=offload,
                loss_chunk=base.loss_chunk,
            )
        )
    return setups


def format_plan(plan_: MemoryPlan, gpu_bytes: int) -> str:
    shape, setup = plan_.shape, plan_.setup
    lines = [
        f"model: {shape.total_params() / 1e9:.2f}B parameters ({shape.active_params() / 1e9:.2f}B active), "
        f"{shape.layers} layers, {len(shape.moe_layers)} MoE x {shape.experts} experts",
        f"setup: {setup.world_size} GPU(s), micro-batch {setup.micro_batch_size} x {setup.seq_len} tokens, "
        f"activation checkpointing {'on' if setup.activation_checkpointing else 'off'}"
        + (
            f", reshard after forward {'on' if setup.reshard_after_forward else 'off'}, "
            f"CPU offload {'on' if setup.cpu_offload else 'off'}"
            if setup.sharded
            else ""
        ),
    ]
    for name, value in plan_.parts.items():
        lines.append(f"  {name:<40} {value / GIB:9.2f} GiB")
    verdict = "fits" if plan_.fits(gpu_bytes) else "does NOT fit"
    lines.append(
        f"  {'total per GPU':<40} {plan_.total / GIB:9.2f} GiB  ({verdict} in {gpu_bytes / GIB:.0f} GiB)"
    )
    return "\n".join(lines)


def settings_table(shape: ModelShape, base: Setup, gpu_bytes: int) -> str:
    """One line per combination of settings, with its total and whether it fits."""
    header = "checkpointing  reshard  offload   GiB/GPU  fits"
    rows = [header]
    for setup in candidate_setups(base):
        result = plan(shape, setup)
        rows.append(
            f"{'on' if setup.activation_checkpointing else 'off':<14} "
            f"{('on' if setup.reshard_after_forward else 'off') if setup.sharded else '-':<8} "
            f"{('on' if setup.cpu_offload else 'off') if setup.sharded else '-':<8} "
            f"{result.total / GIB:8.1f}  {'yes' if result.fits(gpu_bytes) else 'no'}"
        )
    return "\n".join(rows)


def shape_from_config(cfg) -> ModelShape:
    """The Post-MoE shape that a config's `train:` section describes (a preset or a local checkpoint)."""
    from moe_train.upcycle import dense_config, is_preset, moe_config_from_dense
    from pipeline.registry import load_registry

    train = cfg.train
    if is_preset(train.model):
        dense = dense_config(train.model)
    else:
        from transformers import AutoConfig

        dense = AutoConfig.from_pretrained(cfg.resolve(train.model), local_files_only=True)
        if dense.model_type == "qwen2_moe":
            return ModelShape.from_config(dense)
    scheme = load_registry(cfg.registry_path()).scheme(cfg.registry.scheme)
    return ModelShape.from_config(
        moe_config_from_dense(
            dense,
            num_experts=scheme.num_experts,
            moe_layers=train.moe_layers,
            top_k=train.top_k,
            shared_expert=train.shared_expert,
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a medbabel config (its train: section)")
    parser.add_argument("--gpu-gb", type=float, default=80.0, help="memory of one GPU in GiB (H100: 80)")
    parser.add_argument("--world-size", type=int, default=1, help="GPUs in the run")
    args = parser.parse_args(argv)
    from pipeline.config import load_config

    cfg = load_config(args.config)
    train = cfg.train
    shape = shape_from_config(cfg)
    base = Setup(
        world_size=args.world_size,
        micro_batch_size=train.micro_batch_size,
        seq_len=train.seq_len,
        bf16_params=train.bf16_params,
        activation_checkpointing=train.activation_checkpointing,
        loss_chunk=train.loss_chunk_size,
    )
    gpu_bytes = int(args.gpu_gb * GIB)
    print(format_plan(plan(shape, base), gpu_bytes))
    print()
    print(settings_table(shape, base, gpu_bytes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
