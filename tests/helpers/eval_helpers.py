"""Builders for the evaluation and report tests: a tiny random-init Qwen2-MoE checkpoint saved as
training exports it, and shards in the manifest layout made from real TICO-19 sentences."""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
from conftest import record

from moe_train.upcycle import no_shared_expert_warning
from pipeline.manifest import Manifest, ShardFile, file_sha256, shard_relpath, write_manifest
from pipeline.registry import load_registry
from pipeline.schema import empty_record, rows_to_table

XMED = "xmedbench_dev_mcq.jsonl.gz"


def make_tiny_moe(
    directory: Path, num_layers: int = 4, moe_layers: int = 2, num_experts: int = 7, seed: int = 0
) -> Path:
    """A stock Qwen2MoeForCausalLM (last `moe_layers` layers MoE, top-2) with the Qwen2 tokenizer."""
    import torch
    from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

    from pipeline.text.tokenizer import load_tokenizer

    tokenizer = load_tokenizer()
    config = Qwen2MoeConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        moe_intermediate_size=128,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_experts=num_experts,
        num_experts_per_tok=2,
        mlp_only_layers=list(range(num_layers - moe_layers)),
        shared_expert_intermediate_size=0,
        norm_topk_prob=False,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    with no_shared_expert_warning():
        model = Qwen2MoeForCausalLM(config).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def tico_sentences(shared_data: Path, languages: list[str], per_language: int) -> dict[str, list[str]]:
    """The first `per_language` TICO-19 sentences of each language (registry codes)."""
    registry = load_registry()
    found: dict[str, list[str]] = defaultdict(list)
    with gzip.open(shared_data / "tico19_health_sentences.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if row["text"].startswith("{NS}") or row["lang"] not in languages:
                continue
            code = registry.normalize_code(row["lang"])
            if len(found[code]) < per_language:
                found[code].append(row["text"])
    return dict(found)


def write_shards(shards_dir: Path, rows: list[dict]) -> Manifest:
    """Write records in the final shard layout plus manifest.json (as the shards stage does)."""
    registry = load_registry()
    scheme = registry.scheme(registry.default_scheme)
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for row in rows:
        language = row["language"]
        row = {
            "family": registry.get(language).family,
            "expert": scheme.expert_for(language).name,
            "expert_id": scheme.expert_for(language).id,
            "tier": registry.get(language).tier,
            **row,
        }
        groups[(row["split"], row["family"], language)].append(row)
    files = []
    for (split, family, language), group in sorted(groups.items()):
        relpath = shard_relpath(split, family, language, 0)
        path = shards_dir / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(rows_to_table([empty_record(**row) for row in group]), path)
        files.append(
            ShardFile(
                relpath,
                split,
                family,
                language,
                len(group),
                sum(len(r["text"]) for r in group),
                path.stat().st_size,
                file_sha256(path),
            )
        )
    manifest = Manifest(config_hash="test", scheme=scheme.name, files=files)
    write_manifest(shards_dir, manifest)
    return manifest


def tico_shards(
    shards_dir: Path, shared_data: Path, languages: list[str], valid: int = 4, train: int = 8
) -> Manifest:
    """Validation and train shards of real health sentences; every other valid row is a chat turn."""
    rows = []
    for language, sentences in tico_sentences(shared_data, languages, valid + train).items():
        for i, text in enumerate(sentences):
            split = "validation" if i < valid else "train"
            extra = {}
            if split == "validation" and i % 2:
                extra["messages"] = [
                    {"role": "user", "content": "Translate."},
                    {"role": "assistant", "content": text},
                ]
            rows.append(record(f"{language}-{i}", text, language, split=split, **extra))
    return write_shards(shards_dir, rows)


def xmed_subset(shared_data: Path, destination: Path, per_source: int) -> Path:
    """The first `per_source` XMedBench dev questions of every source, as a .jsonl file."""
    kept: dict[str, int] = defaultdict(int)
    with (
        gzip.open(shared_data / XMED, "rt", encoding="utf-8") as fh,
        open(destination, "w", encoding="utf-8") as out,
    ):
        for line in fh:
            row = json.loads(line)
            if kept[row["source"]] < per_source:
                kept[row["source"]] += 1
                out.write(line)
    return destination


MINOR_QUESTIONS = [
    {
        "id": "sw-1",
        "question": "Ni kiungo gani husukuma damu mwilini?",
        "options": "(A) Moyo\n(B) Figo\n(C) Ini\n(D) Mapafu",
        "answer": "(A)",
        "language": "sw",
        "source": "sample/sw",
    },
    {
        "id": "sw-2",
        "question": "Malaria huenezwa na nini?",
        "options": "(A) Nzi\n(B) Mbu\n(C) Panya\n(D) Maji",
        "answer": "(B)",
        "language": "sw",
        "source": "sample/sw",
    },
    {
        "id": "sw-3",
        "question": "Vitamini gani hutengenezwa na ngozi kwenye jua?",
        "options": "(A) Vitamini A\n(B) Vitamini B12\n(C) Vitamini C\n(D) Vitamini D",
        "answer": "(D)",
        "language": "sw",
        "source": "sample/sw",
    },
]

_RUNS: dict[str, Path] = {}


def evaluated_run(tmp_root: Path, shared_data: Path) -> tuple[Path, Path]:
    """OUT with a tiny exported model, TICO shards and a completed eval stage, built once per test
    session (the eval and report tests share it). Returns (config path, OUT)."""
    if "run" in _RUNS:
        return _RUNS["config"], _RUNS["run"]
    import yaml

    from pipeline.config import load_config
    from pipeline.dag import run_stage

    root = tmp_root / "evaluated_run"
    out = root / "out"
    make_tiny_moe(out / "train" / "export")
    (out / "train" / ".done").write_text("test-fixture\n")
    tico_shards(out / "shards", shared_data, ["en", "zh", "ar", "hi", "sw", "ckb"], valid=2, train=2)
    xmed = xmed_subset(shared_data, root / "xmed.jsonl", per_source=1)
    minor = root / "minor.jsonl"
    minor.write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in MINOR_QUESTIONS) + "{broken\n")
    config = {
        "run": {"name": "eval-test", "seed": 0},
        "train": {"chat_template": "User:{q}\nAssistant:{a}<|endoftext|>"},
        "eval": {
            "benchmarks": [
                {"name": "xmedbench", "path": str(xmed), "format": "xmedbench"},
                {"name": "minor", "path": str(minor), "format": "xmedbench"},
            ],
            "shots": 2,
            "max_prompt_tokens": 600,
            "max_new_tokens": 6,
            "batch_size": 8,
            "valid_max_docs_per_language": 2,
            "valid_max_tokens": 48,
        },
        "experiments": {"spread": {"seq_len": 32}},
    }
    config_path = root / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    run_stage("eval", load_config(config_path), out)
    _RUNS.update(config=config_path, run=out)
    return config_path, out
