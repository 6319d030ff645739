"""Atomic training checkpoints and the final stock export.

A checkpoint is a directory `checkpoints/step-000100/` holding

    model.safetensors     the full (unsharded) Qwen2-MoE state dict, tied duplicates dropped
    config.json           the Qwen2-MoE config (a resume rebuilds the model from it)
    optimizer.pt          the full AdamW state, keyed by parameter name (world-size independent)
    rng.pt                torch CPU (and CUDA) RNG state
    trainer.json          step, tokens seen, scheduler state, data position, metrics so far
    files.json            size and xxh3-128 digest of each file above

or, sharded (`train.checkpoint_format`; the default with several processes), instead of the model,
optimizer and RNG files:

    dcp/                  model and AdamW state as torch.distributed.checkpoint shards: each rank writes
                          its own part, and a load reshards them to whatever world size resumes
    rng-<rank>.pt         each rank's RNG state

so no rank ever holds the whole model and optimizer state (for the 7B Post-MoE that is ~160 GB).

It is written as one directory by `pipeline.atomic.atomic_dir`, then `checkpoints/latest` (a one-line
file) is replaced atomically, so a crash never leaves a half checkpoint that `--resume` would pick.
A resume verifies the checkpoint against `files.json` first; a damaged latest checkpoint is reported
with its path and the newest earlier one that passes is used. Everything is loaded with
`weights_only=True` / safetensors.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from pathlib import Path

import torch
import xxhash
from safetensors.torch import load_file, save_file

from pipeline import atomic
from pipeline.handoff import HandoffError

LATEST = "latest"


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


FILES = "files.json"
SHARDS = "dcp"


class CorruptCheckpointError(HandoffError):
    """A checkpoint directory whose files do not match what was recorded when it was written."""


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
    final = root / checkpoint_name(step)
    with atomic.atomic_dir(final) as tmp:
        save_file(dedupe_tied(model_state), tmp / "model.safetensors")
        model_config.to_json_file(tmp / "config.json")
        torch.save(optimizer_state, tmp / "optimizer.pt")
        torch.save(_rng_state(), tmp / "rng.pt")
        (tmp / "trainer.json").write_text(json.dumps(trainer_state, indent=1) + "\n")
        files = {f.name: _describe(f) for f in sorted(tmp.iterdir())}
        (tmp / FILES).write_text(json.dumps(files, indent=1) + "\n")
    _point_latest_and_prune(root, final, keep)
    return final


def save_sharded_checkpoint(
    root: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    model_config,
    trainer_state: dict,
    keep: int,
    runtime,
) -> Path | None:
    """Every rank writes its shard of the model and optimizer state into one checkpoint directory, which
    rank 0 completes (config, trainer state, file digests) and publishes atomically; collective."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    final = root / checkpoint_name(step)
    publish = (
        atomic.atomic_dir(final) if runtime.is_main else contextlib.nullcontext(atomic.temporary_name(final))
    )
    with publish as tmp:
        runtime.barrier()  # rank 0 has made the directory
        model_state, optimizer_state = get_state_dict(model, optimizer)
        dcp.save(
            {"model": model_state, "optimizer": optimizer_state},
            checkpoint_id=tmp / SHARDS,
            no_dist=not runtime.sharded,
        )
        torch.save(_rng_state(), tmp / f"rng-{runtime.rank}.pt")
        runtime.barrier()  # every shard is written
        if runtime.is_main:
            model_config.to_json_file(tmp / "config.json")
            (tmp / "trainer.json").write_text(json.dumps(trainer_state, indent=1) + "\n")
            files = {str(f.relative_to(tmp)): _describe(f) for f in sorted(tmp.rglob("*")) if f.is_file()}
            (tmp / FILES).write_text(json.dumps(files, indent=1) + "\n")
    if runtime.is_main:
        _point_latest_and_prune(root, final, keep)
    runtime.barrier()
    return final if runtime.is_main else None


def is_sharded(path: Path) -> bool:
    return (path / SHARDS).is_dir()


def load_sharded_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, rank: int
) -> dict:
    """Load a sharded checkpoint into `model` and `optimizer` as they are sharded now (any world size);
    returns its rng (this rank's, else rank 0's) and trainer entries."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(state, checkpoint_id=path / SHARDS, no_dist=not torch.distributed.is_initialized())
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    rng = path / f"rng-{rank}.pt"
    return {
        "rng": torch.load(rng if rng.is_file() else path / "rng-0.pt", weights_only=True),
        "trainer": json.loads((path / "trainer.json").read_text()),
    }


def _rng_state() -> dict:
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    return rng


def _point_latest_and_prune(root: Path, final: Path, keep: int) -> None:
    atomic.write_text(root / LATEST, final.name + "\n")
    checkpoints = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in checkpoints[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _describe(path: Path) -> dict:
    digest = xxhash.xxh3_128()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return {"bytes": path.stat().st_size, "xxh3_128": digest.hexdigest()}


def verify_checkpoint(path: Path) -> None:
    """Raise `CorruptCheckpointError` (naming the file and the reason) unless every file of the
    checkpoint has the size and digest recorded when it was written."""
    try:
        recorded = json.loads((path / FILES).read_text())
    except (OSError, ValueError) as exc:
        raise CorruptCheckpointError(f"checkpoint {path}: {FILES} unreadable ({exc})") from None
    for name, expected in recorded.items():
        file = path / name
        if not file.is_file():
            raise CorruptCheckpointError(f"checkpoint {path}: {name} is missing")
        actual = {"bytes": file.stat().st_size}
        if actual["bytes"] == expected["bytes"]:
            actual = _describe(file)
        if actual != expected:
            raise CorruptCheckpointError(
                f"checkpoint {file}: {actual['bytes']} bytes"
                + (f", digest {actual['xxh3_128']}" if "xxh3_128" in actual else "")
                + f" but {expected['bytes']} bytes, digest {expected['xxh3_128']} were written"
            )


def latest_checkpoint(root: Path) -> Path | None:
    """The newest checkpoint that passes `verify_checkpoint`: the one `latest` names or, when that
    one is damaged, the newest earlier one (each damaged one reported on stderr with its path).
    None when there is no checkpoint; an error when there are some and none passes."""
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    named = root / pointer.read_text().strip()
    earlier = sorted((p for p in root.glob("step-*") if p.is_dir() and p.name < named.name), reverse=True)
    problems = []
    for candidate in [named, *earlier]:
        try:
            verify_checkpoint(candidate)
        except CorruptCheckpointError as exc:
            problems.append(str(exc))
            print(f"warning: {exc}; trying the previous checkpoint", file=sys.stderr)
            continue
        return candidate
    raise CorruptCheckpointError(
        f"no complete checkpoint under {root} ({'; '.join(problems)}); delete {root} to train from the start"
    )


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
    if getattr(config, "shared_expert_intermediate_size", None) != 0:  # has one, or a dense Qwen2
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
    """Write a stock Qwen2-MoE (or, for the dense baseline, Qwen2) checkpoint (safetensors, config,
    tokenizer, generation config) atomically: no zero-size tensor, and the config keys older readers need
    (see null_shared_expert, legacy_config_keys)."""
    from transformers import GenerationConfig

    from moe_train.upcycle import complete_state_dict, new_model

    config = config.__class__.from_dict(config.to_dict())
    config.eos_token_id = eos_token_ids[0]
    config.pad_token_id = pad_token_id
    state = null_shared_expert(config, complete_state_dict(config, model_state))
    model = new_model(config, device="meta")
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(
            f"export: state dict does not fit {type(model).__name__}: {missing=} {unexpected=}"
        )
    if config.tie_word_embeddings:
        model.tie_weights()
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config)
    model.to(dtype)
    model.generation_config = GenerationConfig(
        eos_token_id=eos_token_ids, pad_token_id=pad_token_id, do_sample=False, max_new_tokens=256
    )
    with atomic.atomic_dir(export_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        config_path = Path(tmp) / "config.json"
        config_path.write_text(
            json.dumps(legacy_config_keys(json.loads(config_path.read_text())), indent=2) + "\n"
        )
    return export_dir
