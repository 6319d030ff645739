"""Processes and devices for training: the runtime (device, rank, world size), FSDP2 sharding, full
(unsharded) state dicts for checkpoints and export, and sums over ranks.

Under torchrun every rank joins one process group (NCCL on CUDA, gloo on CPU) and FSDP2 shards the
model; at world size 1 nothing is sharded and every helper here is a no-op or a plain copy, so the
training loop is the same code either way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from moe_train.device import resolve_device


@dataclass
class Runtime:
    device: torch.device
    rank: int
    world: int
    bf16: bool  # bf16 compute (CUDA)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        """FSDP2 in use: more than one process."""
        return self.world > 1

    def barrier(self) -> None:
        if self.sharded:
            dist.barrier()


def setup_runtime(device_option: str) -> Runtime:
    """Pick the device and, under torchrun, join the process group (NCCL on CUDA, gloo on CPU)."""
    device = resolve_device(device_option)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.set_device(device)
    if "WORLD_SIZE" in os.environ and "RANK" in os.environ and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    return Runtime(device, rank, world, bf16=cuda)


def shutdown() -> None:
    """Leave the process group (if this process joined one)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def sum_over_ranks(counts: dict[str, int], runtime: Runtime) -> dict[str, float]:
    """Python numbers summed over ranks (one collective; none at world size 1)."""
    if not runtime.sharded:
        return {name: float(value) for name, value in counts.items()}
    total = torch.tensor(list(counts.values()), dtype=torch.float64, device=runtime.device)
    dist.all_reduce(total)
    return dict(zip(counts, total.tolist(), strict=True))


def all_reduce_sum(named: dict[str, torch.Tensor], runtime: Runtime) -> dict[str, torch.Tensor]:
    """Float64 tensors summed over ranks in one collective: they travel stacked as one vector and come
    back under their names and shapes (as they are at world size 1)."""
    if not runtime.sharded:
        return named
    stacked = torch.cat([t.reshape(-1) for t in named.values()])
    dist.all_reduce(stacked)
    parts = stacked.split([t.numel() for t in named.values()])
    return {name: part.view(t.shape) for (name, t), part in zip(named.items(), parts, strict=True)}


def clip_grad_norm(module: torch.nn.Module, max_norm: float) -> torch.Tensor:
    """Clip the gradients of `module` to a total norm of `max_norm` and return the norm before clipping,
    over all shards (a plain tensor under FSDP2 too)."""
    norm = torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


def shard_model(
    model: torch.nn.Module, runtime: Runtime, reshard_after_forward: bool = True, cpu_offload: bool = False
) -> None:
    """FSDP2: each decoder layer is its own unit, the wrapper (embeddings, norm, LM head) the root.

    Parameters stay float32 (sharded); FSDP2 gathers them in bf16 for compute and reduces gradients in
    float32. `reshard_after_forward=False` keeps each layer gathered until its backward (one all-gather
    fewer per layer, more memory); `cpu_offload` keeps the shards, gradients and so the optimizer state
    in CPU memory (moe_train.memory_plan shows what each setting costs)."""
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if runtime.bf16
        else MixedPrecisionPolicy()
    )
    offload = CPUOffloadPolicy() if cpu_offload else OffloadPolicy()
    for layer in model.lm.model.layers:
        fully_shard(
            layer, mp_policy=policy, reshard_after_forward=reshard_after_forward, offload_policy=offload
        )
    fully_shard(model, mp_policy=policy, offload_policy=offload)


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded stock-model state dict on CPU (complete on rank 0)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k.removeprefix("lm."): v for k, v in state.items()}


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(
        model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )


def load_full_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, model_state: dict, optimizer_state: dict | None
) -> None:
    """Load a full (unsharded) model and optimizer state, as `full_state_dict` and
    `full_optimizer_state` wrote them, into a sharded or unsharded model."""
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
