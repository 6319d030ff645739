"""transformers' fused `grouped_mm` experts, usable under autocast with float32 master weights.

transformers' `grouped_mm` experts implementation sorts the (token, expert) pairs by expert and runs
every expert's up- and down-projection as one grouped GEMM (no Python loop over experts). The kernel
is not autocast-aware: it casts the activations to the *weight* dtype. With float32 master weights
(single-GPU mixed precision) that would run in float32; this wrapper hands it bf16 views of the expert
weights instead (the cast is differentiable, so gradients reach the float32 parameters). Under FSDP2
mixed precision the weights already arrive in bf16 and nothing is cast.

Registered as the experts implementation `medbabel_grouped_mm`; the exported checkpoint does not
record it (stock loaders use their own default).
"""

from __future__ import annotations

import torch

from pipeline.compat import (
    ALL_EXPERTS_FUNCTIONS,
    ExpertsInterface,
    experts_in_dtype,
    grouped_mm_experts_forward,
)

AUTOCAST_GROUPED_MM = "medbabel_grouped_mm"


def autocast_grouped_mm_experts_forward(
    self: torch.nn.Module, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
) -> torch.Tensor:
    device_type = hidden_states.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        if self.gate_up_proj.dtype != dtype:
            out = grouped_mm_experts_forward(
                experts_in_dtype(self, dtype), hidden_states.to(dtype), top_k_index, top_k_weights
            )
            return out.to(hidden_states.dtype)
    return grouped_mm_experts_forward(self, hidden_states, top_k_index, top_k_weights)


if AUTOCAST_GROUPED_MM not in ALL_EXPERTS_FUNCTIONS:
    ExpertsInterface.register(AUTOCAST_GROUPED_MM, autocast_grouped_mm_experts_forward)
