"""Cross-entropy over the 152k-token vocabulary without materialising the logits.

`linear_cross_entropy(hidden, weight, labels)` equals
`F.cross_entropy(hidden @ weight.T, labels, ignore_index=-100, reduction="sum")` but walks the tokens
in chunks: for each chunk it computes the logits, the loss and, during the forward pass, the gradients
with respect to `hidden` and `weight`, then frees the logits. Peak memory drops from
tokens x vocab x 4 bytes (2.5 GB for one 4096-token sequence) to chunk x vocab x 4 bytes, and the
backward pass is a multiply of the stored gradients.

On CUDA the per-chunk softmax / loss / gradient arithmetic is compiled (torch.compile) into two fused
passes over the logits instead of about ten eager elementwise kernels; the profile of a 1.5B step showed
those kernels costing about as much as the LM-head matmuls themselves.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable

import torch

from moe_train.compiled import on_cuda

IGNORE_INDEX = -100


def _upcast(logits: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 logits to float32 for the softmax; float32/float64 stay as they are."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def _chunk_loss_and_grad(
    logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, grad_dtype: torch.dtype
):
    """Summed loss of one chunk and d(loss)/d(logits) = softmax - one_hot (zero rows where not valid)."""
    logits = _upcast(logits)
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)
    picked = logits.gather(-1, target.unsqueeze(-1))
    loss = torch.where(valid, (lse - picked).squeeze(-1), 0.0).sum()
    probs = torch.exp(logits - lse)
    columns = torch.arange(logits.shape[-1], device=logits.device)
    grad = torch.where(columns == target.unsqueeze(-1), probs - 1.0, probs)
    grad = torch.where(valid.unsqueeze(-1), grad, 0.0)
    return loss, grad.to(grad_dtype)


def _chunk_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    logits = _upcast(logits)
    loss = torch.logsumexp(logits, dim=-1) - logits.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    return torch.where(valid, loss, 0.0)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk_size: int, needs_grad: bool):
        n_tokens = hidden.shape[0]
        accumulate = torch.promote_types(weight.dtype, torch.float32)  # float32, or float64 in tests
        loss_sum = torch.zeros((), device=hidden.device, dtype=accumulate)
        grad_hidden = torch.zeros_like(hidden) if needs_grad else None
        grad_weight = (
            torch.zeros(weight.shape, device=weight.device, dtype=accumulate) if needs_grad else None
        )
        loss_and_grad = on_cuda(_chunk_loss_and_grad, hidden.device)
        loss_only = on_cuda(_chunk_loss, hidden.device)
        for start in range(0, n_tokens, chunk_size):
            h = hidden[start : start + chunk_size]
            y = labels[start : start + chunk_size]
            logits = h @ weight.T
            valid = y != IGNORE_INDEX
            target = torch.where(valid, y, 0)
            if needs_grad:
                loss, grad_logits = loss_and_grad(logits, target, valid, logits.dtype)
                grad_hidden[start : start + chunk_size] = grad_logits @ weight
                grad_weight += (grad_logits.T @ h).to(accumulate)
            else:
                loss = loss_only(logits, target, valid).sum()
            loss_sum += loss
            del logits
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return loss_sum

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight = ctx.saved_tensors
        return (
            grad_hidden * grad_output.to(grad_hidden.dtype),
            (grad_weight * grad_output).to(ctx.weight_dtype),
            None,
            None,
            None,
        )


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk_size: int = 4096
) -> torch.Tensor:
    """Summed next-token cross-entropy of `hidden` (tokens, H) against `weight` (vocab, H).

    `labels` (tokens,) are already shifted; IGNORE_INDEX entries contribute nothing.
    """
    needs_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    return _LinearCrossEntropy.apply(hidden, weight, labels, chunk_size, needs_grad)


@torch.no_grad()
def per_token_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk_size: int = 4096
) -> torch.Tensor:
    """Per-token cross-entropy (float32, 0 where ignored), chunked like `linear_cross_entropy`."""
    out = torch.zeros(labels.shape[0], device=hidden.device, dtype=torch.float32)
    loss_only = on_cuda(_chunk_loss, hidden.device)
    for start in range(0, labels.shape[0], chunk_size):
        y = labels[start : start + chunk_size]
        valid = y != IGNORE_INDEX
        logits = hidden[start : start + chunk_size] @ weight.T
        out[start : start + chunk_size] = loss_only(logits, torch.where(valid, y, 0), valid)
    return out


LOSS_KERNELS = ("medbabel", "liger", "cce")

SummedCrossEntropy = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def summed_cross_entropy(kernel: str, chunk_size: int = 4096) -> SummedCrossEntropy:
    """`(hidden, weight, labels) -> summed loss` through one of the fused linear cross-entropy kernels.

    `medbabel` is `linear_cross_entropy` above; `liger` is Liger-Kernel's fused linear cross-entropy
    (Triton: CUDA, or on the CPU only interpreted, with TRITON_INTERPRET=1 set before Triton is
    imported); `cce` is Apple's cut cross-entropy (its Triton kernel on CUDA, its torch.compile
    implementation elsewhere). bench/loss_kernels_gpu.py compares them.
    """
    if kernel == "medbabel":
        return functools.partial(linear_cross_entropy, chunk_size=chunk_size)
    if kernel == "liger":
        fused = _import_kernel("liger_kernel.transformers.functional", "liger-kernel")
        return functools.partial(
            fused.liger_fused_linear_cross_entropy, ignore_index=IGNORE_INDEX, reduction="sum"
        )
    if kernel == "cce":
        cce = _import_kernel("cut_cross_entropy", "cut-cross-entropy")

        def cut_cross_entropy(
            hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor
        ) -> torch.Tensor:
            impl = "cce" if hidden.is_cuda else "torch_compile"
            return cce.linear_cross_entropy(
                hidden, weight, labels, ignore_index=IGNORE_INDEX, reduction="sum", impl=impl
            )

        return cut_cross_entropy
    raise ValueError(f"unknown loss kernel '{kernel}'; kernels: {', '.join(LOSS_KERNELS)}")


def _import_kernel(module: str, package: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise RuntimeError(
            f"loss kernel needs the '{package}' package: pip install 'medbabel[kernels]' ({exc})"
        ) from None
