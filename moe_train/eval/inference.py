"""Batched inference helpers shared by the evaluators: compute dtype, model loading, left-padded
batches whose results do not depend on how questions were grouped into batches."""

from __future__ import annotations

from pathlib import Path

import torch


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto` is bfloat16 on GPU and float32 on CPU (CPU bf16 matmuls are slow and imprecise)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


class ModelLoadError(FileNotFoundError):
    """The checkpoint directory is missing or incomplete."""


def load_model(path: str | Path, device: torch.device, dtype: torch.dtype):
    """A stock `transformers` checkpoint and its tokenizer, in eval mode (no remote code)."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from moe_train.upcycle import no_shared_expert_warning

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ModelLoadError(
            f"{path}: no model checkpoint (config.json missing); run `make train` first "
            f"or set eval.model to a checkpoint directory"
        )
    tokenizer_dir = path if (path / "tokenizer_config.json").is_file() else None
    if tokenizer_dir is None:
        from pipeline.text.tokenizer import qwen2_tokenizer_dir

        tokenizer_dir = qwen2_tokenizer_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        with no_shared_expert_warning():
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, local_files_only=True)
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:  # truncated or corrupt files
        raise ModelLoadError(
            f"{path}: cannot load the model ({type(exc).__name__}: {str(exc).splitlines()[0][:300]}); "
            f"written by stage 'train' (or the directory eval.model names): redo it with "
            f"`python -m pipeline run train --force` (same --config and --out)"
        ) from None
    model = model.to(device)
    model.eval()
    return model, tokenizer


def stop_token_ids(tokenizer) -> list[int]:
    """Both of Qwen2's end markers: `<|endoftext|>` (the training chat format) and the tokenizer's eos."""
    ids = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|endoftext|>")}
    return sorted(i for i in ids if isinstance(i, int) and i >= 0 and i != tokenizer.unk_token_id)


def position_ids_for(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that start at 0 on each row's first real token, so left padding changes nothing."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def length_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first: memory errors show up early)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
