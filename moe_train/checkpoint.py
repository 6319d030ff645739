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


# Width of the all-zero shared expert an export without one carries (see `null_shared_expert`): divisible
# by every tensor-parallel size vLLM accepts for 7 experts (it refuses more ranks than experts).
NULL_SHARED_EXPERT_WIDTH = 8


def null_shared_expert(config, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Give a model trained without a shared expert an all-zero one of NULL_SHARED_EXPERT_WIDTH units.

    Engines disagree about a zero-width shared expert: stock transformers always builds it (reporting
    its tensors missing when the file leaves them out) while vLLM builds none at width 0 (refusing them
    when present), and zero-size tensors break other readers. A shared expert whose weights are all zero
    outputs exactly 0 (`sigmoid(gate(x)) * down(0)`), so the model computes the same function and every
    engine loads every tensor it declares. Sets `config.shared_expert_intermediate_size` accordingly."""
    if config.shared_expert_intermediate_size:
        return state
    width, hidden = NULL_SHARED_EXPERT_WIDTH, config.hidden_size
    config.shared_expert_intermediate_size = width
    shapes = {"gate_proj": (width, hidden), "up_proj": (width, hidden), "down_proj": (hidden, width)}
    state = dict(state)
    for name, tensor in list(state.items()):
        part = name.split(".shared_expert.", 1)[-1].split(".")[0] if ".shared_expert." in name else None
        if part in shapes:
            state[name] = torch.zeros(shapes[part], dtype=tensor.dtype)
    return state


# Keys that readers written before transformers moved RoPE settings into `rope_parameters` look for
# (vLLM's and llama.cpp's converters, transformers 4.x); absent, some assume rope_theta = 10000.
def legacy_config_keys(config: dict) -> dict:
    """config.json's keys plus `rope_theta`, `rope_scaling` and `torch_dtype` as older readers spell them."""
    rope = config.get("rope_parameters") or {}
    extra = {"rope_theta": rope.get("rope_theta", config.get("rope_theta"))}
    extra["rope_scaling"] = None if rope.get("rope_type", "default") == "default" else dict(rope)
    if "dtype" in config:
        extra["torch_dtype"] = config["dtype"]
    return {**config, **{k: v for k, v in extra.items() if k not in config}}


def export_model(
    export_dir: Path,
    model_state: dict[str, torch.Tensor],
    config,
    tokenizer,
    dtype: torch.dtype,
    eos_token_ids: list[int],
    pad_token_id: int,
) -> Path:
    """Write a stock Qwen2-MoE checkpoint (safetensors, config, tokenizer, generation config) atomically:
    no zero-size tensor, and the config keys older readers need (see null_shared_expert, legacy_config_keys)."""
    from transformers import GenerationConfig

    from moe_train.upcycle import complete_state_dict, new_moe_model

    config = config.__class__.from_dict(config.to_dict())
    config.eos_token_id = eos_token_ids[0]
    config.pad_token_id = pad_token_id
    state = null_shared_expert(config, complete_state_dict(config, model_state))
    model = new_moe_model(config, device="meta")
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
    config_path = tmp / "config.json"
    config_path.write_text(
        json.dumps(legacy_config_keys(json.loads(config_path.read_text())), indent=2) + "\n"
    )
    if export_dir.exists():
        shutil.rmtree(export_dir)
    os.replace(tmp, export_dir)
    return export_dir
