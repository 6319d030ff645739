"""Training throughput of the Post-MoE model against its dense base and transformers' eager experts loop.

For each model shape (random init, Qwen2-0.5B / 1.5B configs) and variant:

    dense          the dense Qwen2 (Qwen2ForCausalLM)
    postmoe        our Post-MoE: last 2 layers upcycled to 7 family experts, top-2 hybrid routing,
                   experts through transformers' fused `grouped_mm` implementation
    postmoe_eager  the same model with transformers' `eager` experts (a Python loop over experts,
                   what the paper's code did)

all through the same training step (moe_train.train.train_step: bf16 parameters with float32 master
weights, packed 4096-token rows with FlashAttention varlen, chunked fused cross-entropy, fused AdamW), on
synthetic packed documents. `--params fp32` measures the older float32-parameters-under-autocast
setting (`--params both`: side by side). Reports median step time, tokens/s, MFU (moe_train/flops.py)
and peak memory, prints a table and writes JSON (default bench/results/train_gpu.json).

    python bench/train_gpu.py                      # the GPU benchmark (H100/H200)
    python bench/train_gpu.py --smoke --out X.json # CPU smoke run of the same code (tests use it)
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from provenance import git_commit  # noqa: E402

from moe_train.causal_lm import prepare_model  # noqa: E402
from moe_train.distributed import setup_runtime  # noqa: E402
from moe_train.flops import attention_pairs, peak_flops, training_flops  # noqa: E402
from moe_train.loss import IGNORE_INDEX  # noqa: E402
from moe_train.packing import PackedSequence, collate  # noqa: E402
from moe_train.routing import NO_EXPERT  # noqa: E402
from moe_train.train import lr_factor, make_optimizer, train_step  # noqa: E402
from moe_train.upcycle import dense_config, upcycle  # noqa: E402
from pipeline.config import TrainSection  # noqa: E402

NUM_EXPERTS = 7  # the family7 scheme
VARIANTS = ("dense", "postmoe", "postmoe_eager")


def synthetic_rows(n_rows: int, seq_len: int, vocab: int, mean_doc: int, seed: int) -> list[PackedSequence]:
    """Packed rows of random documents (lengths ~ exponential around `mean_doc`), each with a family."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n_rows):
        lengths = []
        while sum(lengths) < seq_len:
            lengths.append(int(min(max(rng.exponential(mean_doc), 16), seq_len - sum(lengths))))
        tokens = rng.integers(0, vocab, seq_len)
        labels = np.full(seq_len, IGNORE_INDEX, dtype=np.int64)
        positions = np.zeros(seq_len, dtype=np.int64)
        experts = np.full(seq_len, NO_EXPERT, dtype=np.int64)
        start = 0
        for n in lengths:
            labels[start : start + n - 1] = tokens[start + 1 : start + n]
            positions[start : start + n] = np.arange(n)
            experts[start : start + n] = rng.integers(0, NUM_EXPERTS)
            start += n
        languages = np.zeros(seq_len, dtype=np.int64)
        rows.append(PackedSequence(tokens.astype(np.int64), labels, positions, experts, languages, lengths))
    return rows


def build_lm(shape: str, variant: str, device: torch.device):
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(0)
    with torch.device(device):
        dense = Qwen2ForCausalLM(dense_config(shape))
    if variant == "dense":
        return dense
    return upcycle(dense, NUM_EXPERTS, moe_layers=2, top_k=2)


def run_variant(args, shape: str, variant: str, compile_: bool, bf16_params: bool, runtime) -> dict:
    cfg = TrainSection(
        model=shape,
        seq_len=args.seq_len,
        micro_batch_size=args.micro_batch,
        grad_accum=args.grad_accum,
        max_steps=args.warmup + args.steps,
        warmup_steps=1,
        lr=1e-4,
        compile=compile_,
        activation_checkpointing=args.activation_checkpointing,
        attention=args.attention,
        experts_implementation="eager" if variant == "postmoe_eager" else "grouped_mm",
        bf16_params=bf16_params,
        device="cuda" if runtime.device.type == "cuda" else "cpu",
    )
    lm = build_lm(shape, variant, runtime.device)
    config = lm.config
    model = prepare_model(lm, cfg, runtime)
    optimizer = make_optimizer(model, cfg, cuda=runtime.device.type == "cuda")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))

    def run_step(batches, number: int) -> float:
        return train_step(model, optimizer, scheduler, batches, cfg, runtime, number).loss

    per_step = args.micro_batch * args.grad_accum
    rows = synthetic_rows(
        (args.warmup + args.steps) * per_step, args.seq_len, config.vocab_size, args.mean_doc, seed=1
    )
    micro = [collate(rows[i : i + args.micro_batch]) for i in range(0, len(rows), args.micro_batch)]
    steps = [micro[i : i + args.grad_accum] for i in range(0, len(micro), args.grad_accum)]
    losses = []
    if runtime.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def sync() -> None:
        if runtime.device.type == "cuda":
            torch.cuda.synchronize()

    for index, step in enumerate(steps[: args.warmup]):
        losses.append(run_step(step, index + 1))
    sync()
    t0 = time.perf_counter()
    for index, step in enumerate(steps[args.warmup :]):
        losses.append(run_step(step, args.warmup + index + 1))
    sync()
    step_s = (time.perf_counter() - t0) / args.steps  # no sync between steps: the real pipelining
    tokens = per_step * args.seq_len
    pairs = statistics.mean(sum(attention_pairs(b.doc_lengths) for b in step) for step in steps)
    flops = training_flops(config, tokens, int(pairs))
    peak = peak_flops(runtime.device, args.peak_tflops)
    result = {
        "shape": shape,
        "variant": variant,
        "compile": compile_,
        "bf16_params": model.master is not None,  # what ran: master weights exist on one CUDA device only
        "micro_batch": args.micro_batch,
        "grad_accum": args.grad_accum,
        "tokens_per_step": tokens,
        "seq_len": args.seq_len,
        "step_s": step_s,
        "tokens_per_s": tokens / step_s,
        "model_tflops_per_step": flops / 1e12,
        "mfu": flops / step_s / peak if peak else None,
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30
        if runtime.device.type == "cuda"
        else None,
        "loss_first": losses[0],
        "loss_last": losses[-1],
    }
    if args.profile and variant in args.profile.split(","):
        result["profile"] = profile_step(run_step, steps[-1], runtime)
    return result


def profile_step(run_step, step, runtime) -> str:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if runtime.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        run_step(step, 0)
        if runtime.device.type == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if runtime.device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=40, max_name_column_width=70)
    print(table)
    return table


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp(min=1e-30)).item()


def correctness_checks(runtime) -> dict:
    """Fast paths against references on this device: varlen vs masked SDPA, grouped_mm vs eager
    experts, fused cross-entropy vs F.cross_entropy (loss and gradients). Relative L2 errors."""
    import torch.nn.functional as F
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from moe_train.loss import linear_cross_entropy

    device = runtime.device
    checks: dict = {}
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=4096, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
    )  # fmt: skip
    with torch.device(device):
        dense = Qwen2ForCausalLM(config)
    moe = upcycle(dense, NUM_EXPERTS, moe_layers=2, top_k=2)
    rows = synthetic_rows(2, 512, config.vocab_size, 100, seed=3)
    batch = collate(rows).to(device)
    losses = {}
    for name, attention, experts in (
        ("sdpa_grouped", "sdpa", "grouped_mm"),
        ("varlen_grouped", "varlen", "grouped_mm"),
        ("sdpa_eager", "sdpa", "eager"),
    ):
        if attention == "varlen" and runtime.device.type != "cuda":
            continue
        moe.set_attn_implementation("medbabel_varlen" if attention == "varlen" else "sdpa")
        moe.set_experts_implementation(experts)
        kwargs = {}
        if attention == "varlen":
            kwargs = dict(cu_seq_lens_q=batch.cu_seqlens, cu_seq_lens_k=batch.cu_seqlens,
                          max_length_q=batch.max_doc_len, max_length_k=batch.max_doc_len)  # fmt: skip
        with (
            torch.no_grad(),
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"),
        ):
            losses[name] = moe(
                batch.input_ids, position_ids=batch.position_ids, use_cache=False, **kwargs
            ).logits.float()
    if "varlen_grouped" in losses:
        checks["varlen_vs_masked_sdpa_logits"] = _rel(losses["varlen_grouped"], losses["sdpa_grouped"])
    checks["grouped_mm_vs_eager_experts_logits"] = _rel(losses["sdpa_grouped"], losses["sdpa_eager"])
    hidden = torch.randn(1000, 256, device=device, requires_grad=True)
    weight = torch.randn(4096, 256, device=device, requires_grad=True)
    labels = torch.randint(0, 4096, (1000,), device=device)
    labels[::7] = IGNORE_INDEX
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        fused = linear_cross_entropy(hidden, weight, labels, chunk_size=300)
    fused.backward()
    g_fused = (hidden.grad.clone(), weight.grad.clone())
    hidden.grad, weight.grad = None, None
    ref = F.cross_entropy(
        (hidden.double() @ weight.double().T), labels, ignore_index=IGNORE_INDEX, reduction="sum"
    )
    ref.backward()
    checks["fused_ce_loss"] = _rel(fused.detach(), ref.detach())
    checks["fused_ce_grad_hidden"] = _rel(g_fused[0], hidden.grad)
    checks["fused_ce_grad_weight"] = _rel(g_fused[1], weight.grad)
    for key, value in checks.items():
        print(f"check {key:<40} rel err {value:.2e}")
    return checks


def moe_block_times(shape: str, tokens: int, runtime, repeats: int = 10) -> dict:
    """Forward + backward of one Post-MoE block (router + 7 experts, top-2) on `tokens` tokens, bf16
    autocast: transformers' fused grouped_mm experts against its eager per-expert loop. Median ms."""
    from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeSparseMoeBlock

    from moe_train.experts import AUTOCAST_GROUPED_MM
    from moe_train.upcycle import NoSharedExpert, moe_config_from_dense, no_shared_expert_warning

    config = moe_config_from_dense(dense_config(shape), NUM_EXPERTS)
    device = runtime.device
    torch.manual_seed(0)
    with torch.device(device), no_shared_expert_warning():
        block = Qwen2MoeSparseMoeBlock(config)
        for param in block.parameters():
            torch.nn.init.normal_(param, std=0.02)
    block.shared_expert, block.shared_expert_gate = NoSharedExpert(), NoSharedExpert(1)
    x = torch.randn(1, tokens, config.hidden_size, device=device, requires_grad=True)
    out = {}
    for name, impl in (("grouped_mm", AUTOCAST_GROUPED_MM), ("eager", "eager")):
        config._experts_implementation = impl
        times = []
        for index in range(repeats + 3):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                y = block(x)
            y.float().square().mean().backward()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if index >= 3:
                times.append(time.perf_counter() - t0)
        out[f"{name}_ms"] = 1000 * statistics.median(times)
    out["speedup"] = out["eager_ms"] / out["grouped_mm_ms"]
    out.update(shape=shape, tokens=tokens)
    print(f"MoE block {shape} {tokens} tokens: grouped_mm {out['grouped_mm_ms']:.2f} ms, eager "
          f"{out['eager_ms']:.2f} ms, {out['speedup']:.2f}x")  # fmt: skip
    return out


def goals(results: list[dict]) -> list[dict]:
    """The issue's targets, per shape and compile setting, from the measured rows."""
    out = []
    index = {
        (r["shape"], r["variant"], r["compile"], r["bf16_params"]): r for r in results if "error" not in r
    }
    for (shape, variant, compile_, bf16_params), moe in index.items():
        if variant != "postmoe":
            continue
        dense = index.get((shape, "dense", compile_, bf16_params))
        eager = index.get((shape, "postmoe_eager", compile_, bf16_params))
        row = {"shape": shape, "compile": compile_, "bf16_params": bf16_params, "postmoe_mfu": moe["mfu"]}
        if dense:
            row["postmoe_step_over_dense"] = moe["step_s"] / dense["step_s"]
        if eager:
            row["postmoe_speedup_over_eager_experts"] = moe["tokens_per_s"] / eager["tokens_per_s"]
        out.append(row)
    return out


def print_table(results: list[dict]) -> None:
    print(
        f"{'shape':<11} {'variant':<14} {'compile':<7} {'params':<6} {'step ms':>8} {'tok/s':>9} {'MFU':>6} {'peak GB':>8} "
        f"{'loss':>13}"
    )
    for r in results:
        head = f"{r['shape']:<11} {r['variant']:<14} {r['compile']!s:<7} {'bf16' if r['bf16_params'] else 'fp32':<6}"
        if "error" in r:
            print(f"{head} ERROR {r['error'][:80]}")
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        mem = f"{r['peak_memory_gb']:.1f}" if r["peak_memory_gb"] is not None else "-"
        print(
            f"{head} {1000 * r['step_s']:>8.1f} {r['tokens_per_s']:>9.0f} {mfu:>6} {mem:>8} "
            f"{r['loss_first']:>6.2f}>{r['loss_last']:<6.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shape on CPU, 2 steps (for tests)")
    parser.add_argument("--shapes", default="qwen2-0.5b,qwen2-1.5b")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--compile", choices=["off", "on", "both"], default="off")
    parser.add_argument(
        "--params",
        choices=["bf16", "fp32", "both"],
        default="bf16",
        help="bf16 parameters + float32 master weights, or float32 parameters under autocast",
    )
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--grad-accum", type=int, default=2, help="micro-batches per optimizer step")
    parser.add_argument(
        "--moe-block", action="store_true", help="also time one MoE block: grouped_mm vs eager"
    )
    parser.add_argument("--mean-doc", type=int, default=1024, help="mean synthetic document length")
    parser.add_argument("--steps", type=int, default=8, help="timed steps (mean step time reported)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--attention", default="auto", choices=["auto", "sdpa", "varlen"])
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="override the GPU's peak bf16 TFLOP/s"
    )
    parser.add_argument("--profile", default="", help="comma-separated variants to profile one step of")
    parser.add_argument("--git-commit", default=None, help="commit to record (default: git rev-parse HEAD)")
    parser.add_argument("--check", action="store_true", help="first compare fast paths with references")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_gpu.json"))
    args = parser.parse_args(argv)
    if args.smoke:
        args.shapes, args.seq_len, args.micro_batch, args.steps, args.warmup = "tiny", 64, 1, 1, 1
        args.grad_accum, args.moe_block = 1, True
        args.mean_doc, args.check = 20, True
    runtime = setup_runtime("cpu" if args.smoke else "auto")
    if runtime.device.type != "cuda" and not args.smoke:
        print("no CUDA device: run with --smoke for the CPU smoke mode", file=sys.stderr)
        return 2
    compile_modes = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    param_modes = {"bf16": [True], "fp32": [False], "both": [True, False]}[args.params]
    checks = correctness_checks(runtime) if args.check else None
    blocks = (
        [moe_block_times(shape, args.micro_batch * args.seq_len, runtime) for shape in args.shapes.split(",")]
        if args.moe_block
        else None
    )
    results = []
    for shape in args.shapes.split(","):
        for compile_, bf16_params in itertools.product(compile_modes, param_modes):
            for variant in args.variants.split(","):
                print(f"== {shape} {variant} compile={compile_} bf16_params={bf16_params}", flush=True)
                try:
                    results.append(run_variant(args, shape, variant, compile_, bf16_params, runtime))
                except Exception as exc:  # keep measuring the other variants; the error is recorded
                    traceback.print_exc()
                    results.append(
                        {"shape": shape, "variant": variant, "compile": compile_,
                         "bf16_params": bf16_params, "error": repr(exc)}
                    )  # fmt: skip
                gc.collect()
                torch._dynamo.reset()  # each variant compiles afresh (no recompile limit across models)
                if runtime.device.type == "cuda":
                    torch.cuda.empty_cache()
                report = {
                    "benchmark": "bench/train_gpu.py",
                    "device": torch.cuda.get_device_name()
                    if runtime.device.type == "cuda"
                    else platform.processor(),
                    "torch": torch.__version__,
                    "transformers": __import__("transformers").__version__,
                    "command": "python " + " ".join(sys.argv),
                    "git_commit": args.git_commit or git_commit(),
                    "peak_tflops": (peak_flops(runtime.device, args.peak_tflops) or 0) / 1e12 or None,
                    "checks": checks,
                    "moe_block": blocks,
                    "results": results,
                    "goals": goals(results),
                }
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print_table(results)
    for row in goals(results):
        print(json.dumps(row))
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
