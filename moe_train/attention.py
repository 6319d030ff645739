"""Attention over packed sequences: every document attends only to itself.

Two implementations, both selected through transformers' `AttentionInterface` so the stock Qwen2 /
Qwen2-MoE modules are used unchanged:

- `sdpa` (CPU, and the reference): transformers sees position ids that restart at 0 and builds a
  block-diagonal causal mask itself.
- `varlen` (CUDA): PyTorch's FlashAttention variable-length kernel
  (`torch.nn.attention.varlen.varlen_attn`) on the flattened batch with cumulative document lengths
  `cu_seq_lens_q` (passed as a forward kwarg): no mask is materialised and no work is spent on the
  blocks between documents.
"""

from __future__ import annotations

import inspect
import warnings
from functools import lru_cache

import torch
from transformers import AttentionInterface

VARLEN = "medbabel_varlen"


@lru_cache(maxsize=1)
def _varlen_api() -> tuple[object, dict[str, bool]] | None:
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    params = inspect.signature(varlen_attn).parameters
    return varlen_attn, {
        "window_size": "window_size" in params,
        "is_causal": "is_causal" in params,
        "enable_gqa": "enable_gqa" in params,
    }


def varlen_available(device: torch.device | str) -> bool:
    """CUDA, a PyTorch with varlen_attn, and a kernel that runs on this GPU (probed once)."""
    device = torch.device(device)
    return device.type == "cuda" and _varlen_api() is not None and _varlen_runs(device.index or 0)


@lru_cache(maxsize=8)
def _varlen_runs(device_index: int) -> bool:
    varlen_attn, has = _varlen_api()
    q = torch.randn(16, 2, 64, device=f"cuda:{device_index}", dtype=torch.bfloat16)
    cu = torch.tensor([0, 8, 16], device=q.device, dtype=torch.int32)
    causal = (
        {"window_size": (-1, 0)} if has["window_size"] else {"is_causal": True} if has["is_causal"] else {}
    )
    try:
        varlen_attn(q, q, q, cu, cu, 8, 8, **causal)
    except Exception as exc:  # an unsupported GPU or build: fall back to SDPA with a block mask
        warnings.warn(
            f"FlashAttention varlen is unavailable ({exc}); packed attention uses SDPA", stacklevel=2
        )
        return False
    return True


def varlen_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    cu_seq_lens_q: torch.Tensor | None = None,
    max_length_q: int | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Causal attention within documents. query (B, Hq, L, D), key/value (B, Hkv, L, D) -> (B, L, Hq, D)."""
    if cu_seq_lens_q is None:
        raise ValueError(
            "varlen attention needs cu_seq_lens_q (cumulative document lengths) in the forward kwargs"
        )
    api = _VARLEN_API
    if api is None:
        raise RuntimeError("this PyTorch has no torch.nn.attention.varlen; use attention: sdpa")
    varlen_attn, has = api
    batch, n_heads, length, head_dim = query.shape
    n_kv = key.shape[1]
    out_dtype = query.dtype
    # FlashAttention takes bf16/fp16 only (float32 params under autocast leave q/k float32 after RoPE)
    dtype = out_dtype if out_dtype in (torch.bfloat16, torch.float16) else torch.bfloat16
    q = query.transpose(1, 2).reshape(batch * length, n_heads, head_dim).to(dtype)
    k = key.transpose(1, 2).reshape(batch * length, n_kv, head_dim).to(dtype)
    v = value.transpose(1, 2).reshape(batch * length, n_kv, head_dim).to(dtype)
    extra: dict = {}
    if n_kv != n_heads:
        if has["enable_gqa"]:
            extra["enable_gqa"] = True
        else:
            k = k.repeat_interleave(n_heads // n_kv, dim=1)
            v = v.repeat_interleave(n_heads // n_kv, dim=1)
    if has["window_size"]:
        extra["window_size"] = (-1, 0)
    elif has["is_causal"]:
        extra["is_causal"] = True
    max_len = int(max_length_q) if max_length_q is not None else length
    out = varlen_attn(q, k, v, cu_seq_lens_q, cu_seq_lens_q, max_len, max_len, scale=scaling, **extra)
    return out.reshape(batch, length, n_heads, head_dim).to(out_dtype), None


_VARLEN_API = _varlen_api()  # resolved once here, not inside compiled code
AttentionInterface.register(VARLEN, varlen_attention_forward)
