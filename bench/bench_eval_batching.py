"""CPU eval time: validation perplexity and log-likelihood scoring with batches of similar length
(what `make eval` does, `length_batches`) against batches drawn in random order (every row padded to
the longest of its batch), side by side in one run, on the same model, documents and questions.

    python bench/bench_eval_batching.py                 # tiny random-init Post-MoE, real text
    python bench/bench_eval_batching.py --docs 48 --questions 32 --repeats 1    # quicker

Documents are TICO-19 health sentences (../shared) joined into documents of 1 to 40 sentences,
tokenised as training tokenises them; questions are XMedBench dev questions in 3-shot apollomoe
prompts. Both batchings must give the same losses and predictions. Writes
bench/results/eval_batching.json and prints a table.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from provenance import write_result  # noqa: E402

import moe_train.eval.qa_eval as qa_eval  # noqa: E402
import moe_train.eval.valid_eval as valid_eval  # noqa: E402
from moe_train.data import DocumentTokenizer  # noqa: E402
from moe_train.eval.apollomoe import ApolloMoEProtocol  # noqa: E402
from moe_train.eval.inference import length_batches  # noqa: E402
from moe_train.upcycle import dense_config, moe_config_from_dense, no_shared_expert_warning  # noqa: E402
from pipeline.benchmarks import read_benchmark  # noqa: E402
from pipeline.registry import load_registry  # noqa: E402
from pipeline.text.tokenizer import load_tokenizer  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
CHAT_TEMPLATE = "User:{q}\nAssistant:{a}<|endoftext|>"


def random_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """The baseline: batches in a random order, each padded to its longest row."""
    order = list(range(len(lengths)))
    random.Random(0).shuffle(order)
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def padded_tokens(lengths: list[int], batches: list[list[int]]) -> int:
    return sum(len(b) * max(lengths[i] for i in b) for b in batches)


def model_for(vocab_size: int):
    from transformers import Qwen2MoeForCausalLM

    config = moe_config_from_dense(dense_config("tiny", vocab_size), num_experts=7, moe_layers=2, top_k=2)
    torch.manual_seed(0)
    with no_shared_expert_warning():
        return Qwen2MoeForCausalLM(config).eval()


def valid_documents(tokenizer, count: int, max_tokens: int) -> list[valid_eval.ValidDoc]:
    with gzip.open(SHARED / "tico19_health_sentences.jsonl.gz", "rt", encoding="utf-8") as fh:
        sentences = [json.loads(line)["text"] for line in fh][:20_000]
    rng = random.Random(0)
    rows, position = [], 0
    for _ in range(count):
        size = rng.randint(1, 40)
        rows.append({"text": " ".join(sentences[position : position + size]), "language": "en"})
        position += size
    docs = DocumentTokenizer(tokenizer, CHAT_TEMPLATE).documents(rows)
    return [
        valid_eval.ValidDoc(f"d{i}", "en", "indo_european", 1, d.tokens[:max_tokens], d.labels[:max_tokens])
        for i, d in enumerate(docs)
    ]


def timed(function, repeats: int):
    best, result = None, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        seconds = time.perf_counter() - start
        best = seconds if best is None else min(best, seconds)
    return best, result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=96, help="validation documents")
    parser.add_argument("--questions", type=int, default=64, help="XMedBench questions (log-likelihood)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--max-tokens", type=int, default=512, help="validation document cut (eval.valid_max_tokens)"
    )
    parser.add_argument("--repeats", type=int, default=2, help="best of N runs for each batching")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "eval_batching.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    tokenizer = load_tokenizer()
    model = model_for(len(tokenizer))
    docs = valid_documents(tokenizer, args.docs, args.max_tokens)
    read = read_benchmark("xmedbench", SHARED / "xmedbench_dev_mcq.jsonl.gz", "xmedbench", load_registry())
    items = random.Random(0).sample(read.items, args.questions)
    prompts = qa_eval.build_prompts(
        items, read.items, ApolloMoEProtocol(), tokenizer, CHAT_TEMPLATE, 3, 0, 3072
    )

    def run(batcher):
        valid_eval.length_batches = batcher
        qa_eval.length_batches = batcher
        valid_seconds, (losses, _) = timed(
            lambda: valid_eval.evaluate_valid(model, tokenizer, docs, args.batch_size, None), args.repeats
        )
        loglik_seconds, predictions = timed(
            lambda: qa_eval.score_loglik(model, tokenizer, prompts, ApolloMoEProtocol(), args.batch_size),
            args.repeats,
        )
        return valid_seconds, losses, loglik_seconds, predictions

    doc_lengths = [len(d.input_ids) for d in docs]
    prompt_lengths = [len(p.ids) + 8 for p in prompts]
    rows = {}
    for name, batcher in (
        ("random batches (before)", random_batches),
        ("length batches (after)", length_batches),
    ):
        valid_seconds, losses, loglik_seconds, predictions = run(batcher)
        rows[name] = {
            "valid_seconds": round(valid_seconds, 3),
            "valid_padded_tokens": padded_tokens(doc_lengths, batcher(doc_lengths, args.batch_size)),
            "loglik_seconds": round(loglik_seconds, 3),
            "loglik_padded_tokens": padded_tokens(prompt_lengths, batcher(prompt_lengths, args.batch_size)),
            "valid_loss": losses["overall"]["loss"],
            "predictions": [p.predicted for p in predictions],
        }
    before, after = rows.values()
    same_loss = abs(before["valid_loss"] - after["valid_loss"]) < 1e-4
    same_predictions = before["predictions"] == after["predictions"]
    result = {
        "benchmark": "eval batching on CPU: validation perplexity and log-likelihood scoring",
        "model": "random-init Qwen2MoeForCausalLM, preset tiny, last 2 layers MoE, 7 experts, top-2",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "documents": len(docs),
        "document_tokens": sum(doc_lengths),
        "questions": len(prompts),
        "prompt_tokens": sum(len(p.ids) for p in prompts),
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "same_valid_loss": same_loss,
        "same_predictions": same_predictions,
        "rows": {k: {key: v for key, v in r.items() if key != "predictions"} for k, r in rows.items()},
        "speedup_valid": round(before["valid_seconds"] / after["valid_seconds"], 2),
        "speedup_loglik": round(before["loglik_seconds"] / after["loglik_seconds"], 2),
    }
    print(
        f"{len(docs)} documents ({sum(doc_lengths)} tokens), {len(prompts)} questions, batch {args.batch_size}"
    )
    print(f"{'batching':<26}{'valid s':>9}{'valid pad tok':>15}{'loglik s':>10}{'loglik pad tok':>16}")
    for name, r in result["rows"].items():
        print(
            f"{name:<26}{r['valid_seconds']:>9}{r['valid_padded_tokens']:>15}"
            f"{r['loglik_seconds']:>10}{r['loglik_padded_tokens']:>16}"
        )
    print(
        f"speedup: valid {result['speedup_valid']}x, loglik {result['speedup_loglik']}x; same results: {same_loss and same_predictions}"
    )
    write_result(result, "bench_eval_batching.py", argv, Path(args.out))


if __name__ == "__main__":
    main()
