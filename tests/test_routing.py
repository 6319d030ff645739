"""Hybrid-k routing: against a brute-force reference, edge cases, and its wiring into Qwen2-MoE."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from test_upcycle import NUM_EXPERTS, small_dense

from moe_train.routing import (
    NO_EXPERT,
    HybridTopKRouter,
    hybrid_topk,
    install_hybrid_routing,
    router_supervision_loss,
    routing_stats,
)
from moe_train.upcycle import upcycle


def reference_best_sum(probs: torch.Tensor, family: int, k: int) -> float:
    """Brute force: the largest total probability of any k experts that include the family expert."""
    experts = range(probs.shape[0])
    return max(
        float(probs[list(subset)].sum())
        for subset in itertools.combinations(experts, k)
        if family == NO_EXPERT or family in subset
    )


def check_against_reference(probs, expert_ids, k, renormalize):
    weights, indices = hybrid_topk(probs, expert_ids, k, renormalize)
    assert weights.shape == indices.shape == (probs.shape[0], k)
    for row in range(probs.shape[0]):
        chosen = indices[row].tolist()
        family = int(expert_ids[row])
        assert len(set(chosen)) == k, chosen
        if family != NO_EXPERT:
            assert family in chosen
        raw = probs[row, indices[row]]
        assert float(raw.sum()) == pytest.approx(reference_best_sum(probs[row], family, k), abs=1e-6)
        expected = raw / raw.sum() if renormalize else raw
        torch.testing.assert_close(weights[row], expected)


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("renormalize", [False, True])
def test_hybrid_topk_matches_brute_force_on_random_inputs(k, renormalize):
    generator = torch.Generator().manual_seed(k + 10 * renormalize)
    probs = torch.softmax(torch.randn(200, NUM_EXPERTS, generator=generator) * 2, dim=-1)
    expert_ids = torch.randint(-1, NUM_EXPERTS, (200,), generator=generator)
    check_against_reference(probs, expert_ids, k, renormalize)


def test_family_already_in_top_k_changes_nothing():
    probs = torch.softmax(torch.randn(50, NUM_EXPERTS), dim=-1)
    top = probs.topk(2, dim=-1)
    for slot in (0, 1):
        weights, indices = hybrid_topk(probs, top.indices[:, slot], 2)
        assert torch.equal(indices, top.indices) and torch.equal(weights, top.values)


def test_missing_family_replaces_the_lowest_weighted_slot():
    probs = torch.tensor([[0.5, 0.3, 0.1, 0.05, 0.05]])
    weights, indices = hybrid_topk(probs, torch.tensor([3]), 2)
    assert indices.tolist() == [[0, 3]]
    torch.testing.assert_close(weights, torch.tensor([[0.5, 0.05]]))  # raw probabilities, not renormalised
    weights, _ = hybrid_topk(probs, torch.tensor([3]), 2, renormalize=True)
    torch.testing.assert_close(weights, torch.tensor([[0.5 / 0.55, 0.05 / 0.55]]))


def test_ties_k1_and_no_family():
    ties = torch.full((4, NUM_EXPERTS), 1.0 / NUM_EXPERTS)
    check_against_reference(ties, torch.tensor([0, 3, 6, NO_EXPERT]), 2, False)
    check_against_reference(ties, torch.tensor([5, 1, NO_EXPERT, 2]), 1, True)
    probs = torch.softmax(torch.randn(30, NUM_EXPERTS), dim=-1)
    family = torch.randint(0, NUM_EXPERTS, (30,))
    _, indices = hybrid_topk(probs, family, 1)
    assert torch.equal(indices[:, 0], family)  # k = 1: the family expert always wins
    weights, indices = hybrid_topk(probs, torch.full((30,), NO_EXPERT), 2)
    top = probs.topk(2, dim=-1)
    assert torch.equal(indices, top.indices) and torch.equal(weights, top.values)


def test_hybrid_router_forces_family_in_training_and_is_stock_without_expert_ids():
    dense = small_dense()
    stock = upcycle(dense, NUM_EXPERTS).eval()
    hybrid = upcycle(dense, NUM_EXPERTS).eval()
    keys_before = list(hybrid.state_dict())
    state = install_hybrid_routing(hybrid)
    assert list(hybrid.state_dict()) == keys_before  # same parameter names: the export is stock
    assert all(isinstance(hybrid.model.layers[i].mlp.gate, HybridTopKRouter) for i in (2, 3))
    tokens = torch.randint(0, 512, (2, 16))
    with torch.no_grad():
        state.begin(None)
        torch.testing.assert_close(hybrid(tokens).logits, stock(tokens).logits, rtol=0, atol=0)
        assert len(state.router_logits) == 2

        chosen = []
        hook = hybrid.model.layers[3].mlp.experts.register_forward_hook(
            lambda module, args, output: chosen.append(args[1])
        )
        family = torch.randint(0, NUM_EXPERTS, (2, 16))
        state.begin(family)
        forced = hybrid(tokens).logits
        hook.remove()
    assert (chosen[0] == family.reshape(-1, 1)).any(dim=-1).all()
    stats = routing_stats(state.router_logits[1], family, 2)
    assert stats["load"].sum() == 2 * 32
    assert not torch.allclose(forced, stock(tokens).logits)  # forcing changed some routes


@pytest.mark.slow
def test_compiled_layers_trace_each_layer_type_once_with_hybrid_routing():
    """Every decoder layer shares one compiled function, so anything a router reads that differs from
    one MoE layer to the next (such as the length of a shared list of logits) makes torch.compile
    trace the MoE layer again; enough such variants exhaust its recompile limit (8)."""
    model = upcycle(small_dense(), NUM_EXPERTS, moe_layers=2)  # layers 0-1 dense, 2-3 MoE
    state = install_hybrid_routing(model)
    traced = []

    def counting_backend(graph, example_inputs):
        traced.append(graph)
        return graph.forward

    torch._dynamo.reset()
    for layer in model.model.layers:
        layer.compile(backend=counting_backend)
    tokens = torch.randint(0, 512, (2, 16))
    for _ in range(2):
        state.begin(torch.randint(0, NUM_EXPERTS, (2, 16)))
        model(tokens, use_cache=False).logits.sum().backward()
    torch._dynamo.reset()
    assert len(traced) == 2  # one dense layer, one MoE layer
    assert len(state.router_logits) == 2 and all(lg.shape == (32, NUM_EXPERTS) for lg in state.router_logits)


def test_router_supervision_loss_and_agreement():
    logits = torch.randn(40, NUM_EXPERTS)
    family = torch.randint(0, NUM_EXPERTS, (40,))
    family[::5] = NO_EXPERT
    keep = family != NO_EXPERT
    expected = F.cross_entropy(logits[keep], family[keep], reduction="sum")
    torch.testing.assert_close(router_supervision_loss(logits, family), expected)
    stats = routing_stats(logits, family, 2)
    top2 = logits.topk(2, dim=-1).indices
    manual = (top2 == family.unsqueeze(-1)).any(-1) & keep
    assert torch.equal(stats["agree"], manual)
    assert torch.equal(stats["has_family"], keep)
