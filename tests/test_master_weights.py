"""bf16 compute parameters with float32 master weights (`train.bf16_params`), checked on CPU."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from moe_train.causal_lm import prepare_model
from moe_train.distributed import Runtime, full_state_dict
from moe_train.loss import IGNORE_INDEX
from moe_train.packing import PackedSequence, collate
from moe_train.precision import MasterWeights
from moe_train.train import make_optimizer, train_step
from moe_train.upcycle import PRESETS, upcycle
from pipeline.config import TrainSection


class TiedPair(torch.nn.Module):
    """Two layers sharing one weight (like tied embeddings and LM head), plus a bias and a buffer."""

    def __init__(self):
        super().__init__()
        self.first = torch.nn.Linear(8, 8, bias=False)
        self.second = torch.nn.Linear(8, 8)
        self.second.weight = self.first.weight
        self.register_buffer("frequencies", torch.linspace(0.001, 1.0, 8))

    def forward(self, x):
        return self.second(torch.tanh(self.first(x))) * self.frequencies.to(x.dtype)


def test_master_weights_accumulate_bf16_gradients_in_float32_and_sync_back():
    torch.manual_seed(0)
    module = TiedPair()
    reference = copy.deepcopy(module)
    master = MasterWeights(module)

    assert all(p.dtype == torch.bfloat16 for p in module.parameters())
    assert module.frequencies.dtype == torch.float32  # buffers keep their precision
    assert len(master.master_params) == 2  # the tied weight has one master
    for got, want in zip(master.module.parameters(), reference.parameters(), strict=True):
        assert got.dtype == torch.float32 and torch.equal(got, want)

    inputs = [torch.randn(5, 8, dtype=torch.bfloat16) for _ in range(3)]
    for x in inputs:
        module(x).float().square().sum().backward()
    assert all(p.grad is None for p in module.parameters())  # handed over to the masters

    expected = [torch.zeros_like(p) for p in reference.parameters()]
    for x in inputs:  # each micro-batch's bf16 gradients, summed in float32
        plain = copy.deepcopy(reference).to(torch.bfloat16)
        plain(x).float().square().sum().backward()
        for total, p in zip(expected, plain.parameters(), strict=True):
            total += p.grad.float()
    for got, want in zip(master.master_params, expected, strict=True):
        assert got.grad.dtype == torch.float32
        torch.testing.assert_close(got.grad, want, rtol=0, atol=0)

    torch.optim.SGD(master.master_params, lr=0.1).step()
    master.sync()
    for compute, weights in zip(master.compute_params, master.master_params, strict=True):
        assert torch.equal(compute, weights.detach().to(torch.bfloat16))
        assert not torch.equal(compute.float(), reference.get_parameter("first.weight"))


def _rows(n: int, seq_len: int, vocab: int, seed: int) -> list[PackedSequence]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        tokens = rng.integers(0, vocab, seq_len)
        labels = np.full(seq_len, IGNORE_INDEX)
        labels[:-1] = tokens[1:]
        positions = np.concatenate([np.arange(seq_len // 2), np.arange(seq_len - seq_len // 2)])
        experts = rng.integers(0, 7, seq_len)
        rows.append(PackedSequence(tokens, labels, positions, experts, np.zeros(seq_len, dtype=np.int64),
                                   [seq_len // 2, seq_len - seq_len // 2]))  # fmt: skip
    return rows


@pytest.mark.slow  # trains a Post-MoE model
def test_a_postmoe_model_trains_with_bf16_params_and_saves_float32_masters():
    torch.manual_seed(0)
    config = Qwen2Config(**{**PRESETS["tiny"], "vocab_size": 256})
    lm = upcycle(Qwen2ForCausalLM(config), 7, moe_layers=2, top_k=2)
    before = {k: v.clone() for k, v in lm.state_dict().items() if "shared_expert" not in k}  # empty, dropped
    cfg = TrainSection(model="tiny", seq_len=32, micro_batch_size=2, grad_accum=2, lr=1e-2, warmup_steps=1)
    runtime = Runtime(torch.device("cpu"), rank=0, world=1, bf16=True)  # bf16 runs on CPU too
    model = prepare_model(lm, cfg, runtime)
    assert model.master is not None
    optimizer = make_optimizer(model, cfg)
    assert all(p.dtype == torch.float32 for group in optimizer.param_groups for p in group["params"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    rows = _rows(4, cfg.seq_len, config.vocab_size, seed=1)
    step = [collate(rows[:2]), collate(rows[2:])]

    saved = full_state_dict(model.trained_module())
    assert saved.keys() == before.keys()
    assert all(torch.equal(saved[k], before[k]) and saved[k].dtype == torch.float32 for k in before)

    losses = [train_step(model, optimizer, scheduler, step, cfg, runtime, i + 1).loss for i in range(8)]
    assert losses[-1] < losses[0] - 0.5, losses
    for compute, weights in zip(model.master.compute_params, model.master.master_params, strict=True):
        assert compute.dtype == torch.bfloat16 and weights.dtype == torch.float32
        assert torch.equal(compute, weights.detach().to(torch.bfloat16))
    saved = full_state_dict(model.trained_module())
    assert all(v.dtype == torch.float32 for v in saved.values())
    assert not torch.equal(saved["model.layers.3.mlp.experts.gate_up_proj"],
                           before["model.layers.3.mlp.experts.gate_up_proj"])  # fmt: skip
