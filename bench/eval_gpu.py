"""Evaluation throughput: questions/s of both QA scoring modes on the XMedBench dev questions, for a
random-init Post-MoE of a real shape (the numbers are about speed, not accuracy), at several batch
sizes, and whether the loglik predictions are the same at every batch size.

    python bench/eval_gpu.py                      # GPU: qwen2-0.5b shape, bf16
    python bench/eval_gpu.py --smoke              # CPU: tiny shape, a few questions
Writes bench/results/eval_gpu_<shape>.json (or eval_gpu_smoke.json) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from provenance import git_commit  # noqa: E402

from moe_train.device import resolve_device  # noqa: E402
from moe_train.eval.apollomoe import ApolloMoEProtocol  # noqa: E402
from moe_train.eval.inference import resolve_dtype  # noqa: E402
from moe_train.eval.qa_eval import build_prompts, score_generate, score_loglik  # noqa: E402
from moe_train.upcycle import (  # noqa: E402
    PRESETS,
    dense_config,
    moe_config_from_dense,
    no_shared_expert_warning,
)
from pipeline.benchmarks import read_benchmark  # noqa: E402
from pipeline.registry import load_registry  # noqa: E402
from pipeline.text.tokenizer import load_tokenizer  # noqa: E402

CHAT_TEMPLATE = "User:{q}\nAssistant:{a}<|endoftext|>"


def post_moe(shape: str, vocab_size: int, device: torch.device, dtype: torch.dtype):
    """Random-init Qwen2-MoE: the last 2 layers MoE with 7 experts (family7), top-2, as training exports."""
    from transformers import Qwen2MoeForCausalLM

    config = moe_config_from_dense(dense_config(shape, vocab_size), num_experts=7, moe_layers=2, top_k=2)
    torch.manual_seed(0)
    with torch.device(device), no_shared_expert_warning():
        model = Qwen2MoeForCausalLM(config).to(dtype)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny shape, a few questions")
    parser.add_argument(
        "--bench", default=str(ROOT.parent / "shared" / "data" / "xmedbench_dev_mcq.jsonl.gz")
    )
    parser.add_argument("--shape", default=None, choices=sorted(PRESETS))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    parser.add_argument("--questions", type=int, default=None, help="first N usable questions (default: all)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--git-commit", default=None, help="commit to record (default: git rev-parse HEAD)")
    parser.add_argument("--out", default=None, help="JSON path (default bench/results/eval_gpu_<shape>.json)")
    args = parser.parse_args()
    device = resolve_device("cpu" if args.smoke else "auto")
    shape = args.shape or ("tiny" if args.smoke else "qwen2-0.5b")
    batch_sizes = args.batch_sizes or ([4] if args.smoke else [8, 32, 64])
    questions = args.questions or (8 if args.smoke else None)
    dtype = resolve_dtype("auto", device)

    registry = load_registry()
    tokenizer = load_tokenizer()
    read = read_benchmark("xmedbench", Path(args.bench), "xmedbench", registry)
    items, rejects = read.items, read.rejected
    protocol = ApolloMoEProtocol()
    selected = items[:questions] if questions else items
    prompts = build_prompts(selected, items, protocol, tokenizer, CHAT_TEMPLATE, 3, 0, 3072)
    prompt_tokens = sum(len(p.ids) for p in prompts)
    model = post_moe(shape, len(tokenizer), device, dtype)

    rows = []
    reference = None
    for mode in ("loglik", "generate"):
        for batch_size in batch_sizes:
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            if mode == "loglik":
                predictions = score_loglik(model, tokenizer, prompts, protocol, batch_size)
            else:
                predictions = score_generate(
                    model, tokenizer, prompts, protocol, batch_size, args.max_new_tokens
                )
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            row = {
                "mode": mode,
                "batch_size": batch_size,
                "questions": len(prompts),
                "seconds": round(seconds, 2),
                "questions_per_s": round(len(prompts) / seconds, 2),
                "prompt_tokens_per_s": round(prompt_tokens / seconds),
                "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)
                if device.type == "cuda"
                else None,
            }
            if mode == "loglik":
                picks = [p.predicted for p in predictions]
                reference = reference or picks
                row["same_predictions_as_first_batch_size"] = sum(
                    a == b for a, b in zip(picks, reference, strict=True)
                )
            rows.append(row)
    commit = args.git_commit or git_commit()
    result = {
        "benchmark": "eval throughput, XMedBench dev, 3-shot prompts",
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "dtype": str(dtype),
        "shape": shape,
        "model": "random-init Qwen2MoeForCausalLM, last 2 layers MoE, 7 experts, top-2",
        "questions": len(prompts),
        "rejected_questions": len(rejects),
        "mean_prompt_tokens": round(prompt_tokens / len(prompts), 1),
        "max_new_tokens": args.max_new_tokens,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": commit,
        "rows": rows,
    }
    default_name = "eval_gpu_smoke.json" if args.smoke else f"eval_gpu_{shape}.json"
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / default_name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{result['device']}  {shape}  {len(prompts)} questions, {result['mean_prompt_tokens']} prompt tokens each"
    )
    print(f"{'mode':<9}{'batch':>6}{'seconds':>9}{'q/s':>8}{'prompt tok/s':>14}{'peak GB':>9}")
    for r in rows:
        print(
            f"{r['mode']:<9}{r['batch_size']:>6}{r['seconds']:>9}{r['questions_per_s']:>8}"
            f"{r['prompt_tokens_per_s']:>14}{r['peak_memory_gb'] if r['peak_memory_gb'] is not None else '-':>9}"
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
