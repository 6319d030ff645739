"""Mixed precision: bf16 autocast on CUDA, and bf16 compute parameters with float32 master weights."""

from __future__ import annotations

import contextlib
import copy
import functools

import torch

from moe_train.compiled import on_cuda


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; nothing elsewhere (CPU training is float32)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class MasterWeights:
    """bf16 parameters for compute, float32 master weights for the optimizer, checkpoints and export.

    With float32 parameters under autocast, every micro-batch casts each weight to bf16, casts its
    gradient back to float32 and carries a float32 residual stream (docs/training.md, Benchmark, has
    the measured difference). Here the compute model holds bf16 parameters (buffers such as the rotary
    frequencies keep their dtype) and a float32 copy of the same module (`module`, never run) holds the
    master weights. As soon as autograd has accumulated a compute parameter's gradient, a hook adds it
    into the master's float32 `.grad` and frees it, so micro-batches accumulate in float32; `sync()`
    copies the masters back after the optimizer step.
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
    elementwise ops through a non-vectorised kernel, slow on large tensors, while for small tensors
    (norms, biases) the compiled call's Python overhead outweighs the kernel."""
    return on_cuda(fn, param.device, dynamic=True) if param.numel() >= _COMPILE_MIN_NUMEL else fn
