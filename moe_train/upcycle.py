"""Post-MoE upcycling: turn the last N decoder layers of a dense Qwen2 into language-family experts.

The result is a stock `transformers.Qwen2MoeForCausalLM` (no custom modelling code), so an exported
checkpoint runs anywhere Qwen2-MoE runs (transformers, vLLM):

- layers `0 .. L-N-1` keep their dense MLP (`mlp_only_layers`),
- layers `L-N .. L-1` get a router (N(0, 0.02) init) and `num_experts` experts, each an exact copy of
  that layer's dense MLP (`moe_intermediate_size` = the dense intermediate size),
- attention, norms, embeddings and the LM head are copied unchanged,
- no shared expert by default (`shared_expert_intermediate_size = 0`); `shared_expert=True` adds one,
  initialised as a further copy of the dense MLP, as a "general" expert.

With `norm_topk_prob=True` the upcycled model computes exactly the dense function (the top-k weights sum
to 1 and every expert is the same MLP); with the paper's default `False`, each MoE layer's MLP output is
(p1 + ... + pk) times the dense MLP output.

Public API (used by training, evaluation and the benchmark):
    PRESETS, dense_config(preset), is_preset(name), load_dense(path_or_preset, seed)
    moe_config_from_dense(dense_config, num_experts, ...), upcycle(dense_model, ...)
    build_model(spec, num_experts, ...) -> Qwen2MoeForCausalLM  (preset, dense dir, or an MoE dir)
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2MoeConfig, Qwen2MoeForCausalLM

QWEN2_VOCAB = 151936  # the Qwen2 embedding size (the tokenizer's 151,669 ids padded to a multiple of 128)

# Random-init shapes. `qwen2-0.5b` / `qwen2-1.5b` / `qwen2-7b` copy the released Qwen2 configs (sizes are multiples
# of 8, which the fused kernels want); `tiny` is for tests and the CPU demo.
PRESETS: dict[str, dict] = {
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
    ),
    "qwen2-0.5b": dict(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        tie_word_embeddings=True,
    ),
    "qwen2-1.5b": dict(
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        tie_word_embeddings=True,
    ),
    "qwen2-7b": dict(
        vocab_size=152064,
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        max_position_embeddings=32768,
        tie_word_embeddings=False,
    ),
}

# Keys shared by Qwen2Config and Qwen2MoeConfig that carry over unchanged.
_SHARED_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "hidden_act",
    "max_position_embeddings",
    "initializer_range",
    "rms_norm_eps",
    "tie_word_embeddings",
    "rope_parameters",
    "use_sliding_window",
    "sliding_window",
    "max_window_layers",
    "attention_dropout",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
)


def is_preset(name: str) -> bool:
    return name in PRESETS


def dense_config(preset: str, vocab_size: int = QWEN2_VOCAB) -> Qwen2Config:
    """The Qwen2 config of a named preset."""
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset '{preset}'; presets: {', '.join(PRESETS)}")
    return Qwen2Config(
        **{"vocab_size": vocab_size, **PRESETS[preset]},
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        use_sliding_window=False,
    )


def load_dense(spec: str | Path, seed: int = 0, dtype: torch.dtype = torch.float32) -> Qwen2ForCausalLM:
    """A dense Qwen2: random-init from a preset name, or loaded from a local checkpoint directory."""
    if is_preset(str(spec)):
        torch.manual_seed(seed)
        return Qwen2ForCausalLM(dense_config(str(spec))).to(dtype)
    path = Path(spec)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not a model preset ({', '.join(PRESETS)}) nor a checkpoint dir")
    return Qwen2ForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)


def moe_config_from_dense(
    dense: Qwen2Config,
    num_experts: int,
    moe_layers: int = 2,
    top_k: int = 2,
    norm_topk_prob: bool = False,
    shared_expert: bool = False,
    router_aux_loss_coef: float = 0.0,
) -> Qwen2MoeConfig:
    """The Qwen2-MoE config whose last `moe_layers` layers are MoE and the rest stay dense."""
    n_layers = dense.num_hidden_layers
    if not 1 <= moe_layers <= n_layers:
        raise ValueError(f"moe_layers must be in 1..{n_layers} for this model, got {moe_layers}")
    if not 1 <= top_k <= num_experts:
        raise ValueError(f"top_k must be in 1..{num_experts} (the number of experts), got {top_k}")
    shared = {key: getattr(dense, key) for key in _SHARED_KEYS}
    return Qwen2MoeConfig(
        **shared,
        intermediate_size=dense.intermediate_size,
        moe_intermediate_size=dense.intermediate_size,
        shared_expert_intermediate_size=dense.intermediate_size if shared_expert else 0,
        num_experts=num_experts,
        num_experts_per_tok=top_k,
        norm_topk_prob=norm_topk_prob,
        decoder_sparse_step=1,
        mlp_only_layers=list(range(n_layers - moe_layers)),
        router_aux_loss_coef=router_aux_loss_coef,
        output_router_logits=False,
        qkv_bias=True,
    )


def moe_layer_indices(config: Qwen2MoeConfig) -> list[int]:
    """Indices of the decoder layers that are MoE."""
    return [i for i in range(config.num_hidden_layers) if i not in set(config.mlp_only_layers)]


@torch.no_grad()
def upcycle(
    dense: Qwen2ForCausalLM,
    num_experts: int,
    moe_layers: int = 2,
    top_k: int = 2,
    norm_topk_prob: bool = False,
    shared_expert: bool = False,
    router_aux_loss_coef: float = 0.0,
    seed: int = 0,
) -> Qwen2MoeForCausalLM:
    """A Qwen2-MoE whose MoE layers' experts are exact copies of the dense MLPs; everything else copied."""
    config = moe_config_from_dense(
        dense.config, num_experts, moe_layers, top_k, norm_topk_prob, shared_expert, router_aux_loss_coef
    )
    dtype = next(dense.parameters()).dtype
    with no_shared_expert_warning(), torch.device("meta"):
        moe = Qwen2MoeForCausalLM(config)
    moe_state = _upcycled_state_dict(dense, config, seed)
    moe.load_state_dict(moe_state, strict=True, assign=True)
    moe.to(dtype)
    if config.tie_word_embeddings:
        moe.tie_weights()
    device = next(dense.parameters()).device
    moe.model.rotary_emb = type(moe.model.rotary_emb)(config=config).to(device)  # was on the meta device
    return moe


def _upcycled_state_dict(
    dense: Qwen2ForCausalLM, config: Qwen2MoeConfig, seed: int
) -> dict[str, torch.Tensor]:
    source = {k: v.detach().clone() for k, v in dense.state_dict().items()}
    if config.tie_word_embeddings:
        source.setdefault("lm_head.weight", source["model.embed_tokens.weight"])
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    moe_layers = set(moe_layer_indices(config))
    for name, tensor in source.items():
        parts = name.split(".")
        if not (name.startswith("model.layers.") and parts[3] == "mlp"):
            state[name] = tensor
            continue
        layer = int(parts[2])
        if layer not in moe_layers:
            state[name] = tensor
    for layer in sorted(moe_layers):
        prefix = f"model.layers.{layer}.mlp"
        gate = source[f"{prefix}.gate_proj.weight"]  # (I, H)
        up = source[f"{prefix}.up_proj.weight"]  # (I, H)
        down = source[f"{prefix}.down_proj.weight"]  # (H, I)
        n = config.num_experts
        state[f"{prefix}.experts.gate_up_proj"] = torch.cat([gate, up], dim=0).unsqueeze(0).repeat(n, 1, 1)
        state[f"{prefix}.experts.down_proj"] = down.unsqueeze(0).repeat(n, 1, 1)
        router = torch.empty(n, config.hidden_size, dtype=torch.float32)
        router.normal_(0.0, 0.02, generator=generator)
        state[f"{prefix}.gate.weight"] = router.to(device=gate.device, dtype=gate.dtype)
        shared = config.shared_expert_intermediate_size
        if shared:
            state[f"{prefix}.shared_expert.gate_proj.weight"] = gate.clone()
            state[f"{prefix}.shared_expert.up_proj.weight"] = up.clone()
            state[f"{prefix}.shared_expert.down_proj.weight"] = down.clone()
        else:
            state[f"{prefix}.shared_expert.gate_proj.weight"] = gate.new_empty(0, config.hidden_size)
            state[f"{prefix}.shared_expert.up_proj.weight"] = gate.new_empty(0, config.hidden_size)
            state[f"{prefix}.shared_expert.down_proj.weight"] = gate.new_empty(config.hidden_size, 0)
        # sigmoid(0) = 0.5: the shared expert starts at half weight; unused when it has no units
        state[f"{prefix}.shared_expert_gate.weight"] = gate.new_zeros(1, config.hidden_size)
    return state


def is_moe_checkpoint(path: str | Path) -> bool:
    config = Path(path) / "config.json"
    return config.is_file() and json.loads(config.read_text()).get("model_type") == "qwen2_moe"


def build_model(
    spec: str | Path,
    num_experts: int,
    moe_layers: int = 2,
    top_k: int = 2,
    norm_topk_prob: bool = False,
    shared_expert: bool = False,
    router_aux_loss_coef: float = 0.0,
    seed: int = 0,
    dense: bool = False,
) -> Qwen2MoeForCausalLM | Qwen2ForCausalLM:
    """The Post-MoE model to train: a preset or dense checkpoint, upcycled; an MoE checkpoint, as is.

    `dense` (train.routing: dense, the paper's baseline): the dense model itself, not upcycled."""
    if dense:
        if not is_preset(str(spec)) and is_moe_checkpoint(spec):
            raise ValueError(
                f"{spec}: routing 'dense' trains a dense Qwen2, but this is a Qwen2-MoE checkpoint"
            )
        return load_dense(spec, seed=seed)
    if not is_preset(str(spec)) and is_moe_checkpoint(spec):
        with no_shared_expert_warning():
            model = Qwen2MoeForCausalLM.from_pretrained(spec, dtype=torch.float32, local_files_only=True)
        if model.config.num_experts != num_experts:
            raise ValueError(
                f"{spec}: has {model.config.num_experts} experts but the expert scheme has {num_experts}"
            )
        return model
    dense = load_dense(spec, seed=seed)
    return upcycle(
        dense,
        num_experts,
        moe_layers=moe_layers,
        top_k=top_k,
        norm_topk_prob=norm_topk_prob,
        shared_expert=shared_expert,
        router_aux_loss_coef=router_aux_loss_coef,
        seed=seed,
    )


class NoSharedExpert(torch.nn.Module):
    """Stands in for a zero-width shared expert (or its gate) during training: outputs zeros, no weights.

    The stock block computes `sigmoid(gate(x)) * shared_expert(x)`, which is exactly 0 when the shared
    expert has no units; zero-size parameters also break FSDP2's sharding. The exported checkpoint gets
    the stock (empty) tensors back from `complete_state_dict`.
    """

    def __init__(self, out_features: int | None = None):
        super().__init__()
        self.out_features = out_features

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.out_features is None:
            return torch.zeros_like(hidden_states)
        return hidden_states.new_zeros(*hidden_states.shape[:-1], self.out_features)


def drop_empty_shared_experts(model: Qwen2MoeForCausalLM) -> None:
    """Replace zero-width shared experts and their gates by parameter-free NoSharedExpert modules."""
    if model.config.shared_expert_intermediate_size:
        return
    for module in model.modules():
        if hasattr(module, "shared_expert") and hasattr(module, "shared_expert_gate"):
            module.shared_expert = NoSharedExpert()
            module.shared_expert_gate = NoSharedExpert(out_features=1)


def complete_state_dict(config: Qwen2MoeConfig, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add the stock zero-width shared-expert tensors that training leaves out (see NoSharedExpert)."""
    if config.model_type != "qwen2_moe" or config.shared_expert_intermediate_size:
        return state
    state = dict(state)
    hidden = config.hidden_size
    dtype = state["model.embed_tokens.weight"].dtype
    for layer in moe_layer_indices(config):
        prefix = f"model.layers.{layer}.mlp"
        state.setdefault(f"{prefix}.shared_expert.gate_proj.weight", torch.empty(0, hidden, dtype=dtype))
        state.setdefault(f"{prefix}.shared_expert.up_proj.weight", torch.empty(0, hidden, dtype=dtype))
        state.setdefault(f"{prefix}.shared_expert.down_proj.weight", torch.empty(hidden, 0, dtype=dtype))
        state.setdefault(f"{prefix}.shared_expert_gate.weight", torch.zeros(1, hidden, dtype=dtype))
    return state


def new_moe_model(config: Qwen2MoeConfig, device: str | torch.device = "cpu") -> Qwen2MoeForCausalLM:
    """An uninitialised stock Qwen2-MoE of `config` (weights to be loaded from a checkpoint)."""
    with no_shared_expert_warning(), torch.device(device):
        return Qwen2MoeForCausalLM(config)


def new_model(
    config: Qwen2MoeConfig | Qwen2Config, device: str | torch.device = "cpu"
) -> Qwen2MoeForCausalLM | Qwen2ForCausalLM:
    """An uninitialised stock model of `config`: Qwen2-MoE, or dense Qwen2 (the `dense` baseline)."""
    if config.model_type == "qwen2_moe":
        return new_moe_model(config, device)
    with torch.device(device):
        return Qwen2ForCausalLM(config)


def config_from_file(path: str | Path) -> Qwen2MoeConfig | Qwen2Config:
    """A checkpoint's config.json as the config class of its model type."""
    data = json.loads(Path(path).read_text())
    kind = Qwen2MoeConfig if data.get("model_type") == "qwen2_moe" else Qwen2Config
    return kind.from_json_file(path)


@contextmanager
def no_shared_expert_warning() -> Iterator[None]:
    """Building a Qwen2-MoE without a shared expert (its size is 0) makes torch warn that initialising
    the zero-element tensors is a no-op, once per MoE layer; true and harmless, so not shown."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        yield
