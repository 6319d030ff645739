"""The exported checkpoint loads exactly in the engines that serve Qwen2-MoE.

vLLM's expectation is written here from its public source, not imported (vLLM is not installed here):
`vllm/model_executor/models/qwen2_moe.py` at commit 002fb90788ae749626fb09c6272f0cb604de46b6 of
vllm-project/vllm (the main branch of late 2025, after the v0.11 series: the version that reads
`config.rope_parameters`). There, `Qwen2MoeDecoderLayer` makes layer i a `Qwen2MoeSparseMoeBlock` when
i is not in `mlp_only_layers`, `num_experts > 0` and `(i + 1) % decoder_sparse_step == 0`, else a dense
`Qwen2MoeMLP`; the sparse block always declares `gate` and `shared_expert_gate`, and a `shared_expert`
only when `shared_expert_intermediate_size > 0`; attention has q/k/v biases and no o_proj bias; `lm_head`
is the embedding when `tie_word_embeddings`. Its `load_weights` looks every checkpoint name up in the
model's parameters (a name with no parameter is a KeyError), and leaves a declared one it never sees
uninitialised: so the export must hold exactly these names.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch
from helpers.train_shards import TINY_TRAIN, write_shards
from safetensors import safe_open

from moe_train.train import Trainer
from pipeline.config import TrainSection

pytestmark = pytest.mark.slow  # trains and exports a model

SMALL = {**TINY_TRAIN, "eval_every": 100, "eval_batches": 1, "checkpoint_every": 100}


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    shards = write_shards(tmp / "shards", {"en": 6, "sw": 4})
    return Trainer(TrainSection(**SMALL, max_steps=1), shards, tmp / "run").fit().export_dir


def vllm_qwen2_moe_tensors(config: dict) -> dict[str, tuple[int, ...]]:
    """Checkpoint tensor name -> shape that vLLM's Qwen2MoeForCausalLM (commit above) declares for `config`."""
    hidden, vocab = config["hidden_size"], config["vocab_size"]
    head_dim = hidden // config["num_attention_heads"]
    q, kv = config["num_attention_heads"] * head_dim, config["num_key_value_heads"] * head_dim
    tensors = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,)}
    if not config.get("tie_word_embeddings", False):
        tensors["lm_head.weight"] = (vocab, hidden)

    def mlp(prefix: str, width: int) -> None:
        tensors[f"{prefix}.gate_proj.weight"] = (width, hidden)
        tensors[f"{prefix}.up_proj.weight"] = (width, hidden)
        tensors[f"{prefix}.down_proj.weight"] = (hidden, width)

    for i in range(config["num_hidden_layers"]):
        layer = f"model.layers.{i}"
        tensors[f"{layer}.input_layernorm.weight"] = (hidden,)
        tensors[f"{layer}.post_attention_layernorm.weight"] = (hidden,)
        for name, rows in (("q_proj", q), ("k_proj", kv), ("v_proj", kv)):
            tensors[f"{layer}.self_attn.{name}.weight"] = (rows, hidden)
            tensors[f"{layer}.self_attn.{name}.bias"] = (rows,)
        tensors[f"{layer}.self_attn.o_proj.weight"] = (hidden, q)
        sparse = (
            i not in config.get("mlp_only_layers", [])
            and config["num_experts"] > 0
            and (i + 1) % config["decoder_sparse_step"] == 0
        )
        if not sparse:
            mlp(f"{layer}.mlp", config["intermediate_size"])
            continue
        tensors[f"{layer}.mlp.gate.weight"] = (config["num_experts"], hidden)
        tensors[f"{layer}.mlp.shared_expert_gate.weight"] = (1, hidden)
        if config["shared_expert_intermediate_size"] > 0:
            mlp(f"{layer}.mlp.shared_expert", config["shared_expert_intermediate_size"])
        for expert in range(config["num_experts"]):
            mlp(f"{layer}.mlp.experts.{expert}", config["moe_intermediate_size"])
    return tensors


def exported_tensors(export) -> dict[str, tuple[int, ...]]:
    with safe_open(export / "model.safetensors", "pt") as fh:
        return {name: tuple(fh.get_slice(name).get_shape()) for name in fh.keys()}  # noqa: SIM118


def test_export_holds_exactly_the_tensors_vllm_declares(export):
    config = json.loads((export / "config.json").read_text())
    assert config["mlp_only_layers"], "the export mixes dense and MoE layers"
    assert exported_tensors(export) == vllm_qwen2_moe_tensors(config)


def test_export_has_no_zero_size_tensor_and_the_keys_older_readers_need(export):
    config = json.loads((export / "config.json").read_text())
    assert all(all(shape) for shape in exported_tensors(export).values())
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"] == 1_000_000.0
    assert config["rope_scaling"] is None and config["torch_dtype"] == "float32"
    # trained without a shared expert: the export's one is all zeros, so it adds exactly nothing
    with safe_open(export / "model.safetensors", "pt") as fh:
        shared = [fh.get_tensor(n) for n in fh.keys() if ".shared_expert." in n]  # noqa: SIM118
    assert shared and all(not t.any() for t in shared)


def test_transformers_loads_it_with_no_key_warning(export, caplog, monkeypatch):
    import warnings

    import transformers
    from transformers import AutoModelForCausalLM, Qwen2MoeForCausalLM

    # transformers' logger does not propagate by default; its load report (MISSING / UNEXPECTED) is a warning
    root = transformers.logging.get_logger()
    monkeypatch.setattr(root, "propagate", True)
    with caplog.at_level(logging.WARNING), warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's zero-element note among them
        model, info = AutoModelForCausalLM.from_pretrained(
            export, local_files_only=True, output_loading_info=True
        )
    assert type(model) is Qwen2MoeForCausalLM
    assert info == {
        "missing_keys": set(),
        "unexpected_keys": set(),
        "mismatched_keys": set(),
        "error_msgs": [],
    }
    assert not [r for r in caplog.records if "MISSING" in r.getMessage() or "UNEXPECTED" in r.getMessage()]
    # the zero shared expert contributes exactly zero to every MoE block
    block = model.model.layers[-1].mlp
    x = torch.randn(5, model.config.hidden_size)
    assert torch.equal(block.shared_expert(x), torch.zeros_like(x))
