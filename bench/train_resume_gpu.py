"""Resume and export on the training device: an interrupted + resumed run against an uninterrupted one.

The tests prove on CPU that a resumed run repeats the uninterrupted one bit for bit. On a GPU some
kernels (FlashAttention's backward, grouped GEMMs) accumulate in a nondeterministic order, so the same
run repeated differs in the last digits; this check measures by how much a resumed run differs, then
loads the export with stock `transformers` on the device and generates from it.

    python bench/train_resume_gpu.py --config CONFIG --shards OUT/shards --out result.json

Runs on CPU too (bit-for-bit there), which is how the tests keep it working.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from provenance import git_commit  # noqa: E402

from moe_train.train import trainer_from_config  # noqa: E402
from moe_train.upcycle import no_shared_expert_warning  # noqa: E402
from pipeline.config import load_config  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="config with the train: section to run")
    parser.add_argument("--shards", required=True, help="shards directory (with manifest.json)")
    parser.add_argument("--out", required=True, help="JSON result path")
    parser.add_argument("--git-commit", default=None, help="commit to record (default: git rev-parse HEAD)")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    shards = Path(args.shards)
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        start = time.perf_counter()
        full = trainer_from_config(cfg, runs / "full", False, shards_dir=shards).fit()
        full_seconds = time.perf_counter() - start
        first = trainer_from_config(cfg, runs / "split", False, shards_dir=shards)
        first.fit(stop_after=cfg.train.max_steps // 2)
        resumed = trainer_from_config(cfg, runs / "split", True, shards_dir=shards).fit()
        generated = generate_from_export(full.export_dir, first.runtime.device)
    report = {
        "benchmark": "bench/train_resume_gpu.py",
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "command": "python " + " ".join(sys.argv),
        "git_commit": args.git_commit or git_commit(),
        "model": cfg.train.model,
        "steps": full.steps,
        "resumed_after": cfg.train.max_steps // 2,
        "full_run_seconds": round(full_seconds, 1),
        "losses_uninterrupted": full.losses,
        "losses_resumed": resumed.losses,
        "max_abs_loss_difference": max(abs(a - b) for a, b in zip(full.losses, resumed.losses, strict=True)),
        "bit_for_bit": full.losses == resumed.losses,
        "val_loss_uninterrupted": full.validation.get("val_loss"),
        "val_loss_resumed": resumed.validation.get("val_loss"),
        "export_generates_tokens": generated,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"{report['device']}  {report['model']}  {report['steps']} steps, resumed after {report['resumed_after']}"
    )
    print(
        f"max |loss difference| {report['max_abs_loss_difference']:.2e}  bit for bit: {report['bit_for_bit']}"
    )
    print(f"export: stock Qwen2MoeForCausalLM generated {generated} tokens; wrote {args.out}")
    return 0


def generate_from_export(export_dir: Path, device: torch.device) -> int:
    """Load the exported directory with stock transformers (no custom code) and greedily generate."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with no_shared_expert_warning():
        model = AutoModelForCausalLM.from_pretrained(export_dir).to(device)
    tokenizer = AutoTokenizer.from_pretrained(export_dir)
    prompt = tokenizer("User:What are the symptoms of malaria?\nAssistant:", return_tensors="pt").to(device)
    output = model.generate(**prompt, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    return int(output.shape[1] - prompt["input_ids"].shape[1])


if __name__ == "__main__":
    sys.exit(main())
