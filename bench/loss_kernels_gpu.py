"""The LM head's fused linear cross-entropy: medbabel's own kernel against Liger-Kernel's and cut
cross-entropy's, on the Qwen2 vocabulary.

For each LM-head shape (Qwen2-1.5B, Qwen2-7B) and kernel (moe_train.loss.LOSS_KERNELS): forward +
backward time and tokens/s over bf16 hidden states and weights, the peak memory above the inputs, and
the loss and gradients against a float32 PyTorch reference (`F.cross_entropy` over materialised
logits) on a slice small enough to materialise. Prints a table and writes JSON.

    python bench/loss_kernels_gpu.py                       # on a GPU: bench/results/loss_kernels.json
    python bench/loss_kernels_gpu.py --smoke --out X.json  # CPU: tiny shape, equality only
                                                            # (Liger's Triton kernels run interpreted)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHAPES = {"qwen2-1.5b": (1536, 151936), "qwen2-7b": (3584, 152064), "smoke": (64, 1000)}


def reference(hidden, weight, labels):
    """Summed loss and gradients in float32 through materialised logits."""
    import torch

    h = hidden.detach().float().requires_grad_()
    w = weight.detach().float().requires_grad_()
    loss = torch.nn.functional.cross_entropy(h @ w.T, labels, ignore_index=-100, reduction="sum")
    loss.backward()
    return loss.detach(), h.grad, w.grad


def relative_error(value, expected) -> float:
    return float((value.float() - expected).norm() / expected.norm().clamp_min(1e-12))


def check_equality(kernel_fn, hidden, weight, labels) -> dict:
    h = hidden.detach().clone().requires_grad_()
    w = weight.detach().clone().requires_grad_()
    loss = kernel_fn(h, w, labels)
    loss.backward()
    ref_loss, ref_h, ref_w = reference(hidden, weight, labels)
    return {
        "loss_rel_err": relative_error(loss.detach().reshape(()), ref_loss),
        "grad_hidden_rel_err": relative_error(h.grad, ref_h),
        "grad_weight_rel_err": relative_error(w.grad, ref_w),
    }


def time_kernel(kernel_fn, hidden, weight, labels, repeats: int) -> dict:
    import torch

    cuda = hidden.is_cuda
    times = []
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() if cuda else 0
    for _ in range(repeats + 2):
        h = hidden.detach().requires_grad_()
        w = weight.detach().requires_grad_()
        start = time.perf_counter()
        kernel_fn(h, w, labels).backward()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times[2:])
    peak = (torch.cuda.max_memory_allocated() - base) / 2**30 if cuda else None
    return {"seconds": seconds, "tokens_per_s": labels.numel() / seconds, "peak_extra_gib": peak}


def inputs(shape: str, tokens: int, device, dtype, seed: int = 0):
    import torch

    hidden_size, vocab = SHAPES[shape]
    generator = torch.Generator(device="cpu").manual_seed(seed)
    hidden = torch.randn(tokens, hidden_size, generator=generator).to(device, dtype)
    weight = (torch.randn(vocab, hidden_size, generator=generator) * 0.02).to(device, dtype)
    labels = torch.randint(0, vocab, (tokens,), generator=generator)
    labels[::7] = -100  # prompt tokens and padding carry no loss
    return hidden, weight, labels.to(device)


def run(args) -> dict:
    import torch

    from moe_train.loss import LOSS_KERNELS, summed_cross_entropy

    device = torch.device("cpu" if args.smoke else "cuda")
    dtype = torch.float32 if args.smoke else torch.bfloat16
    shapes = ["smoke"] if args.smoke else ["qwen2-1.5b", "qwen2-7b"]
    rows = []
    for shape in shapes:
        check_inputs = inputs(shape, 256 if args.smoke else 1024, device, dtype, seed=1)
        speed_inputs = inputs(shape, args.tokens, device, dtype)
        for kernel in LOSS_KERNELS:
            row = {"shape": shape, "kernel": kernel}
            try:
                fn = summed_cross_entropy(kernel, chunk_size=args.chunk)
                row |= check_equality(fn, *check_inputs)
                row |= time_kernel(fn, *speed_inputs, repeats=args.repeats)
            except Exception as exc:  # a kernel that is not installed or fails is a row, not a crash
                row["error"] = f"{type(exc).__name__}: {exc}"[:300]
            rows.append(row)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "tokens": args.tokens,
        "dtype": str(dtype),
        "rows": rows,
    }


def print_table(result: dict) -> None:
    print(f"device {result['device']}, {result['tokens']} tokens, {result['dtype']}")
    print(
        f"{'shape':<11} {'kernel':<9} {'tokens/s':>11} {'peak GiB':>9} {'loss err':>9} {'dh err':>9} {'dW err':>9}"
    )
    for row in result["rows"]:
        if "error" in row:
            print(f"{row['shape']:<11} {row['kernel']:<9} {row['error']}")
            continue
        peak = f"{row['peak_extra_gib']:.2f}" if row["peak_extra_gib"] is not None else "-"
        print(
            f"{row['shape']:<11} {row['kernel']:<9} {row['tokens_per_s']:>11,.0f} {peak:>9} "
            f"{row['loss_rel_err']:>9.1e} {row['grad_hidden_rel_err']:>9.1e} {row['grad_weight_rel_err']:>9.1e}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny shape: equality only")
    parser.add_argument("--tokens", type=int, default=16384, help="tokens per timed call (GPU)")
    parser.add_argument("--chunk", type=int, default=4096, help="medbabel kernel's chunk size")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.smoke:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before Triton is imported: Liger on the CPU
        args.tokens, args.repeats = 512, 1
    from provenance import write_result

    result = run(args)
    print_table(result)
    default = "loss_kernels_smoke.json" if args.smoke else "loss_kernels.json"
    write_result(result, "loss_kernels_gpu.py", argv, args.out or ROOT / "bench" / "results" / default)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
