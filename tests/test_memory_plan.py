"""The memory plan against the real model: parameter counts on the meta device, saved activations as
autograd really keeps them, and the plan's verdicts for the paper's 7B Post-MoE."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2MoeForCausalLM

from moe_train import memory_plan
from moe_train.memory_plan import GIB, ModelShape, Setup, plan
from moe_train.upcycle import (
    dense_config,
    drop_empty_shared_experts,
    moe_config_from_dense,
    no_shared_expert_warning,
    upcycle,
)


def meta_parameter_count(config) -> int:
    """What training really holds: the stock model with zero-width shared experts dropped."""
    with no_shared_expert_warning(), torch.device("meta"):
        model = Qwen2MoeForCausalLM(config)
    drop_empty_shared_experts(model)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("preset", "moe_layers", "shared_expert"),
    [
        ("tiny", 2, False),
        ("tiny", 4, True),
        ("qwen2-0.5b", 2, False),
        ("qwen2-7b", 2, False),
        ("qwen2-7b", 4, True),
    ],
)
def test_parameter_count_matches_the_model(preset: str, moe_layers: int, shared_expert: bool) -> None:
    config = moe_config_from_dense(
        dense_config(preset), 7, moe_layers=moe_layers, shared_expert=shared_expert
    )
    assert ModelShape.from_config(config).total_params() == meta_parameter_count(config)


def test_dense_shape_counts_like_the_dense_model() -> None:
    config = dense_config("qwen2-0.5b")
    with torch.device("meta"):
        model = Qwen2ForCausalLM(config)
    assert ModelShape.from_config(config).total_params() == sum(p.numel() for p in model.parameters())


def test_the_papers_7b_post_moe_is_about_10b_with_8b_active() -> None:
    shape = ModelShape.from_config(moe_config_from_dense(dense_config("qwen2-7b"), 7, moe_layers=2))
    assert 9.9e9 < shape.total_params() < 10.3e9
    assert 7.8e9 < shape.active_params() < 8.2e9


def measured_saved_bytes_per_token(layer, hidden: int, tokens: int, rotary, parameters: set[int]) -> float:
    """Bytes of the distinct tensors autograd saves in one layer's forward pass, per token."""
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    x = torch.randn(1, tokens, hidden, dtype=torch.bfloat16, requires_grad=True)
    positions = torch.arange(tokens)[None]
    cos_sin = rotary(x, positions)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        layer(x, attention_mask=None, position_ids=positions, position_embeddings=cos_sin)
    return sum(saved.values()) / tokens


@pytest.mark.parametrize(("experts_implementation", "tolerance"), [("eager", 0.02), ("grouped_mm", 0.08)])
def test_activation_bytes_match_what_autograd_saves(experts_implementation: str, tolerance: float) -> None:
    config = Qwen2Config(
        vocab_size=512,
        hidden_size=256,
        intermediate_size=704,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6},
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = upcycle(Qwen2ForCausalLM(config), 7, moe_layers=1, top_k=2)
    drop_empty_shared_experts(model)
    model = model.to(torch.bfloat16)
    model.set_attn_implementation("sdpa")
    model.set_experts_implementation(experts_implementation)
    shape = ModelShape.from_config(model.config)
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    rope_bytes = 2 * 2 * shape.head_dim  # cos and sin, measured with each layer here
    for index, layer in enumerate(model.model.layers):
        measured = measured_saved_bytes_per_token(layer, 256, 512, model.model.rotary_emb, parameters)
        assert shape.layer_activation_bytes(index) + rope_bytes == pytest.approx(measured, rel=tolerance)


def paper_7b_shape() -> ModelShape:
    return ModelShape.from_config(moe_config_from_dense(dense_config("qwen2-7b"), 7, moe_layers=2))


def test_7b_does_not_fit_one_gpu_and_fits_eight_with_fsdp() -> None:
    shape = paper_7b_shape()
    h100 = 80 * GIB
    assert not plan(shape, Setup(world_size=1, seq_len=4096, activation_checkpointing=True)).fits(h100)
    eight = plan(shape, Setup(world_size=8, seq_len=4096, activation_checkpointing=True))
    assert eight.fits(h100)
    # the float32 weights, gradients and moments are 16 bytes per parameter, split eight ways
    sharded = sum(v for k, v in eight.parts.items() if "shards" in k)
    assert sharded == pytest.approx(16 * shape.total_params() / 8, rel=1e-6)


def test_settings_move_memory_the_way_they_should() -> None:
    shape = paper_7b_shape()
    base = Setup(world_size=8, seq_len=4096, micro_batch_size=2)
    full = plan(shape, base).total
    checkpointed = plan(shape, Setup(**{**base.__dict__, "activation_checkpointing": True})).total
    kept = plan(shape, Setup(**{**base.__dict__, "reshard_after_forward": False})).total
    offloaded = plan(shape, Setup(**{**base.__dict__, "cpu_offload": True})).total
    assert checkpointed < full < kept
    assert offloaded < full


def test_cli_prints_the_plan_and_the_settings_table(tmp_path, capsys) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("train:\n  model: qwen2-7b\n  seq_len: 4096\n  moe_layers: 2\n")
    assert memory_plan.main(["--config", str(config), "--gpu-gb", "80", "--world-size", "8"]) == 0
    out = capsys.readouterr().out
    assert "10.06B parameters (8.02B active)" in out.splitlines()[0]
    assert "total per GPU" in out and "checkpointing  reshard  offload" in out
    assert len([line for line in out.splitlines() if line.endswith(("yes", "no"))]) == 8


def test_train_command_prints_the_plan(tmp_path, capsys) -> None:
    from moe_train import train

    config = tmp_path / "config.yaml"
    config.write_text("train:\n  model: qwen2-7b\n  seq_len: 4096\n  activation_checkpointing: true\n")
    assert train.main(["--plan", "--config", str(config), "--world-size", "8"]) == 0
    out = capsys.readouterr().out
    assert "8 GPU(s)" in out and "activation checkpointing on" in out and "fits in 80 GiB" in out


def test_the_7b_preset_config_fits_eight_80gb_gpus() -> None:
    """configs/apollomoe_7b.yaml loads, describes the paper's 10B Post-MoE, and its own settings fit."""
    from pipeline.config import load_config

    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / "apollomoe_7b.yaml")
    shape = memory_plan.shape_from_config(cfg)
    assert 10.0e9 < shape.total_params() < 10.1e9
    train = cfg.train
    setup = Setup(
        world_size=8,
        micro_batch_size=train.micro_batch_size,
        seq_len=train.seq_len,
        activation_checkpointing=train.activation_checkpointing,
        reshard_after_forward=train.reshard_after_forward,
        cpu_offload=train.cpu_offload,
        loss_chunk=train.loss_chunk_size,
    )
    assert plan(shape, setup).fits(80 * GIB)
    assert train.micro_batch_size * train.grad_accum * 8 * train.seq_len == 131_072  # the paper's batch
