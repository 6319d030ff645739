"""Atomic training checkpoints and the final stock export.

A checkpoint is a directory `checkpoints/step-000100/` holding

    model.safetensors     the full (unsharded) Qwen2-MoE state dict, tied duplicates dropped
    config.json           the Qwen2-MoE config (a resume rebuilds the model from it)
    optimizer.pt          the full AdamW state, keyed by parameter name (world-size independent)
    rng.pt                torch CPU (and CUDA) RNG state
    trainer.json          step, tokens seen, scheduler state, data position, metrics so far

It is written under a temporary name and renamed into place, then `checkpoints/latest` (a one-line
file) is replaced atomically, so a crash never leaves a half checkpoint that `--resume` would pick.
Everything is loaded with `weights_only=True` / safetensors.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

LATEST = "latest"


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def dedupe_tied(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop entries sharing storage with an earlier one (safetensors refuses shared tensors)."""
    seen: set[tuple[int, int]] = set()
    out = {}
    for name, tensor in state.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if tensor.numel() and key in seen:
            continue
        seen.add(key)
        out[name] = tensor.contiguous()
    return out


def save_checkpoint(
    root: Path,
    step: int,
    model_state: dict[str, torch.Tensor],
    model_config,
    optimizer_state: dict,
    trainer_state: dict,
    keep: int,
) -> Path:
    """Write one checkpoint atomically under `root` and prune all but the newest `keep`."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    tmp = root / f".tmp-{checkpoint_name(step)}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(dedupe_tied(model_state), tmp / "model.safetensors")
    model_config.to_json_file(tmp / "config.json")
    torch.save(optimizer_state, tmp / "optimizer.pt")
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    torch.save(rng, tmp / "rng.pt")
    (tmp / "trainer.json").write_text(json.dumps(trainer_state, indent=1) + "\n")
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _write_text_atomic(root / LATEST, final.name + "\n")
    checkpoints = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in checkpoints[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    path = root / pointer.read_text().strip()
    return path if (path / "trainer.json").is_file() else None


def load_checkpoint(path: Path) -> dict:
    """model (state dict), optimizer, rng and trainer entries of a checkpoint directory."""
    return {
        "model": load_file(path / "model.safetensors"),
        "optimizer": torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu"),
        "rng": torch.load(path / "rng.pt", weights_only=True),
        "trainer": json.loads((path / "trainer.json").read_text()),
    }


def export_model(
    export_dir: Path,
    model_state: dict[str, torch.Tensor],
    config,
    tokenizer,
    dtype: torch.dtype,
    eos_token_ids: list[int],
    pad_token_id: int,
) -> Path:
    """Write a stock Qwen2-MoE checkpoint (safetensors, config, tokenizer, generation config) atomically."""
    from transformers import GenerationConfig

    from moe_train.upcycle import complete_state_dict, new_moe_model

    config = config.__class__.from_dict(config.to_dict())
    config.eos_token_id = eos_token_ids[0]
    config.pad_token_id = pad_token_id
    model = new_moe_model(config, device="meta")
    state = complete_state_dict(config, model_state)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(f"export: state dict does not fit Qwen2MoeForCausalLM: {missing=} {unexpected=}")
    if config.tie_word_embeddings:
        model.tie_weights()
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config)
    model.to(dtype)
    model.generation_config = GenerationConfig(
        eos_token_id=eos_token_ids, pad_token_id=pad_token_id, do_sample=False, max_new_tokens=256
    )
    tmp = export_dir.with_name(f".{export_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if export_dir.exists():
        shutil.rmtree(export_dir)
    os.replace(tmp, export_dir)
    return export_dir
