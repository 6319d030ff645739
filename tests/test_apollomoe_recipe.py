"""configs/apollomoe.yaml against the original's schedule, optimizer groups and sampler settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from moe_train.sampling import DataSelection
from moe_train.train import lr_factor, no_decay, warmup_steps
from pipeline.config import load_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def recipe():
    return load_config(ROOT / "configs" / "apollomoe.yaml").train


def test_schedule_is_the_originals_cosine_cut_at_its_horizon(recipe):
    """The original: get_cosine_schedule_with_warmup(warmup = 0.03 x T, T = steps x 1.35), run for steps."""
    from transformers import get_cosine_schedule_with_warmup

    steps = recipe.max_steps
    horizon = int(steps * 1.35)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    original = get_cosine_schedule_with_warmup(optimizer, int(0.03 * horizon), horizon)
    expected = []
    for _ in range(steps):
        expected.append(original.get_last_lr()[0])
        optimizer.step()
        original.step()
    ours = [lr_factor(step, recipe) for step in range(steps)]
    assert warmup_steps(recipe) == int(0.03 * horizon)
    # the original's warmup starts at 0 and ours one step later; past warmup the curves coincide
    assert max(abs(a - b) for a, b in zip(ours[50:], expected[50:], strict=True)) < 2e-3
    assert ours[-1] == pytest.approx(expected[-1], abs=2e-3) and 0.15 < ours[-1] < 0.2


def test_norm_weights_decay_only_when_asked(recipe):
    norm = torch.nn.Parameter(torch.ones(8))
    bias = torch.nn.Parameter(torch.zeros(8))
    name = "model.layers.0.input_layernorm.weight"
    assert no_decay(name, norm, recipe.decay_norm_weights)  # the listed difference
    assert not no_decay(name, norm, decay_norm_weights=True)  # the original decays Qwen2's norms
    assert no_decay("model.layers.0.self_attn.q_proj.bias", bias, decay_norm_weights=True)


def test_sampler_settings_are_the_originals(recipe, tmp_path):
    assert recipe.sampling.mode == "weighted_shuffle"
    selection = DataSelection(
        tmp_path,
        source_priorities=recipe.source_priorities,
        source_repeats=recipe.source_repeats,
        sampling="weighted_shuffle",
    )
    qa = {"source": "medical_books", "source_type": "book", "origin": "rewritten"}
    exam = {"source": "exams", "source_type": "exam", "origin": "original"}
    assert (selection.priority(qa), selection.repeats(qa)) == (16.0, 1.0)
    assert (selection.priority(exam), selection.repeats(exam)) == (2.0, 2.0)
    assert recipe.seq_len * recipe.micro_batch_size * recipe.grad_accum == 131_072  # on one GPU
    assert (recipe.routing, recipe.moe_layers, recipe.top_k, recipe.norm_topk_prob) == ("hybrid", 2, 2, False)
    assert recipe.router_aux_loss_coef == 0 and recipe.lr == 1e-4 and recipe.weight_decay == 0.1
    assert recipe.packing.chat == "whole" and not recipe.packing.cross_document_attention
