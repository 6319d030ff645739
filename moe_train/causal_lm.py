"""The module that trains: a Qwen2 / Qwen2-MoE causal LM whose forward returns the summed token loss.

`prepare_model` turns a `transformers` model (dense or upcycled) into it: packed-sequence attention,
the experts kernel, the hybrid routers, activation checkpointing, master weights, compilation and
FSDP2 sharding, in that order. The wrapped `lm` keeps stock parameter names, so checkpoints and the
export are stock `transformers` state dicts.
"""

from __future__ import annotations

import torch

from moe_train import attention as attention_impl
from moe_train.distributed import Runtime, shard_model
from moe_train.experts import AUTOCAST_GROUPED_MM
from moe_train.loss import per_token_cross_entropy, summed_cross_entropy
from moe_train.packing import Batch
from moe_train.precision import MasterWeights
from moe_train.routing import FORCING, RoutingState, install_hybrid_routing
from moe_train.upcycle import drop_empty_shared_experts, moe_layer_indices
from pipeline.config import TrainSection


class CausalLMForTraining(torch.nn.Module):
    """A causal LM with packed-sequence attention and a chunked fused loss (no logits tensor).

    forward() returns the *summed* token loss (or per-token losses); the caller normalises.
    `routing` (None for dense models) carries per-token family experts to the hybrid routers and
    returns their logits.
    """

    def __init__(
        self,
        lm: torch.nn.Module,
        routing: RoutingState | None,
        varlen: bool,
        loss_chunk: int,
        loss_kernel: str = "medbabel",
    ):
        super().__init__()
        self.lm = lm
        self.routing = routing
        self.varlen = varlen
        self.loss_chunk = loss_chunk
        self.summed_loss = summed_cross_entropy(loss_kernel, loss_chunk)
        self.master: MasterWeights | None = None
        is_moe = hasattr(lm.config, "num_experts")
        self.moe_layers: list[int] = moe_layer_indices(lm.config) if is_moe else []

    def trained_module(self) -> torch.nn.Module:
        """What the optimizer updates and checkpoints save: the float32 master copy when there is one."""
        return self.master.module if self.master is not None else self

    def router_logits(self) -> list[torch.Tensor]:
        """Each MoE layer's (tokens, experts) router logits of the last forward, in layer order."""
        return self.routing.router_logits if self.routing is not None else []

    def forward(self, batch: Batch, force_family: bool = False, per_token: bool = False) -> torch.Tensor:
        """Summed cross-entropy of `batch` (per-token losses with `per_token`); `force_family` routes
        each token to its family expert among the top-k (hybrid routing, training only)."""
        if self.routing is not None:
            self.routing.begin(batch.expert_ids if force_family else None)
        kwargs = {}
        if self.varlen:
            kwargs = dict(
                cu_seq_lens_q=batch.cu_seqlens,
                cu_seq_lens_k=batch.cu_seqlens,
                max_length_q=batch.max_doc_len,
                max_length_k=batch.max_doc_len,
            )
        out = self.lm.model(
            input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False, **kwargs
        )
        hidden = out.last_hidden_state.reshape(-1, out.last_hidden_state.shape[-1])
        weight = self.lm.lm_head.weight
        labels = batch.labels.reshape(-1)
        if per_token:
            return per_token_cross_entropy(hidden, weight, labels, self.loss_chunk)
        return self.summed_loss(hidden, weight, labels)


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
    routing = install_hybrid_routing(lm, FORCING[cfg.routing]) if hasattr(lm.config, "num_experts") else None
    if hasattr(lm.config, "shared_expert_intermediate_size"):
        drop_empty_shared_experts(lm)
    lm.config.use_cache = False
    if cfg.activation_checkpointing:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = CausalLMForTraining(
        lm, routing, varlen=attention == "varlen", loss_chunk=cfg.loss_chunk_size, loss_kernel=cfg.loss_kernel
    )
    model.to(runtime.device)
    if cfg.bf16_params and runtime.bf16 and not runtime.sharded:
        model.master = MasterWeights(model)
    if cfg.compile:
        limit = torch._dynamo.config.recompile_limit
        torch._dynamo.config.recompile_limit = max(limit, _LAYER_VARIANTS_LIMIT)
        for layer in lm.model.layers:
            layer.compile()
    if runtime.sharded:
        shard_model(model, runtime, cfg.reshard_after_forward, cfg.cpu_offload)
    return model
