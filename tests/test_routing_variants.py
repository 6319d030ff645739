"""The routing variants (train.routing): each trains on CPU, exports and reloads in stock transformers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.train_shards import TINY_TRAIN, write_shards

from moe_train.routing import NO_EXPERT, blind_agreement, load_entropy, route
from moe_train.train import Trainer
from moe_train.upcycle import no_shared_expert_warning
from pipeline.config import ConfigError, TrainSection, load_config

SMALL = {
    **TINY_TRAIN,
    "micro_batch_size": 2,
    "max_steps": 2,
    "eval_every": 2,
    "checkpoint_every": 2,
    "loss_chunk_size": 32,
}
VARIANTS = {
    "hybrid": dict(routing="hybrid"),
    "language_specific": dict(routing="language_specific", top_k=1, shared_expert=True),
    "free": dict(routing="free"),
    "dense": dict(routing="dense"),
}


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return write_shards(tmp_path_factory.mktemp("variants") / "shards", {"en": 16, "zh": 8, "sw": 8})


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_variant_trains_exports_and_reloads_in_stock_transformers(variant, shards, tmp_path):
    from transformers import AutoModelForCausalLM

    result = Trainer(TrainSection(**SMALL, **VARIANTS[variant]), shards, tmp_path).fit()
    assert result.steps == 2 and all(torch.isfinite(torch.tensor(result.losses)))
    config = json.loads((result.export_dir / "config.json").read_text())
    with no_shared_expert_warning():
        model = AutoModelForCausalLM.from_pretrained(result.export_dir, local_files_only=True).eval()
    if variant == "dense":
        assert config["model_type"] == "qwen2" and type(model).__name__ == "Qwen2ForCausalLM"
        assert "agreement" not in result.validation
    else:
        assert config["model_type"] == "qwen2_moe" and type(model).__name__ == "Qwen2MoeForCausalLM"
        assert config["num_experts"] == 7
        assert config["num_experts_per_tok"] == (1 if variant == "language_specific" else 2)
        # every export carries a shared expert (engines need one); only language_specific trains it,
        # the others export an all-zero one that adds nothing
        shared = model.model.layers[-1].mlp.shared_expert.down_proj.weight
        assert bool(shared.abs().sum() > 0) == (variant == "language_specific")
        v = result.validation
        assert set(v["blind_agreement_by_language"]) == set(v["agreement_by_language"]) != set()
        assert all(0 <= x <= 1 for x in v["blind_agreement_by_language"].values())
        assert all(0 <= x <= 1 for x in v["expert_load_entropy_by_layer"].values())
    with torch.no_grad():
        logits = model(torch.tensor([[1, 2, 3, 4]])).logits
    assert logits.shape[-1] == model.config.vocab_size and torch.isfinite(logits).all()
    log = [json.loads(line) for line in (tmp_path / "logs" / "train.jsonl").read_text().splitlines()]
    end = next(r for r in log if r.get("event") == "end")
    assert end["packing"]["examples"] > 0 and end["packing"]["trained_without_prompt_share"] == 0


def test_language_specific_routes_each_token_to_its_family_expert_alone():
    probs = torch.softmax(torch.randn(6, 7), dim=-1)
    family = torch.tensor([0, 3, 6, NO_EXPERT, 2, 2])
    weights, indices = route(probs, family, 1, False, "language_specific")
    assert indices[:, 0].tolist()[:3] == [0, 3, 6] and indices[4:, 0].tolist() == [2, 2]
    assert weights[[0, 1, 2, 4, 5], 0].tolist() == [1.0] * 5
    assert indices[3, 0] == probs[3].argmax() and weights[3, 0] == probs[3].max()  # no family: stock
    stock_weights, stock_indices = route(probs, family, 2, False, None)  # free: the family is ignored
    assert torch.equal(stock_indices, torch.topk(probs, 2).indices)
    assert torch.equal(stock_weights, torch.topk(probs, 2).values)


def test_blind_agreement_and_load_entropy():
    # a router that sends every token to experts 0 and 1 (top-2 of 4): a blind router "agrees" fully with
    # families 0 and 1 and never with 2 and 3
    load = torch.tensor([10.0, 10.0, 0.0, 0.0])
    assert blind_agreement(load, 2).tolist() == [1.0, 1.0, 0.0, 0.0]
    assert load_entropy(load) == pytest.approx(0.5)  # two of four experts: log 2 / log 4
    assert load_entropy(torch.ones(7)) == pytest.approx(1.0)
    assert load_entropy(torch.tensor([5.0, 0, 0])) == 0.0


def test_language_specific_needs_top_1(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {routing: language_specific, top_k: 2}\n")
    with pytest.raises(ConfigError, match="top_k: 1"):
        load_config(path)
