"""Upcycling a dense Qwen2 into the Post-MoE model: copies, function preservation, checkpoints."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2MoeForCausalLM

from moe_train.upcycle import PRESETS, build_model, dense_config, moe_layer_indices, upcycle

NUM_EXPERTS = 7


def small_dense(seed: int = 0, tie: bool = True) -> Qwen2ForCausalLM:
    """The tiny preset's shape with a small vocabulary (fast), random weights and random norm gains."""
    torch.manual_seed(seed)
    config = Qwen2Config(**{**PRESETS["tiny"], "vocab_size": 512, "tie_word_embeddings": tie})
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():  # non-trivial norms and biases, so copying them is actually checked
        for param in model.parameters():
            if param.ndim == 1:
                param.add_(torch.randn_like(param) * 0.1)
    return model


def test_presets_are_multiples_of_eight():
    for name in PRESETS:
        config = dense_config(name)
        for value in (config.hidden_size, config.intermediate_size, config.vocab_size):
            assert value % 8 == 0, (name, value)


@pytest.mark.parametrize("tie", [True, False])
def test_every_copied_tensor_is_equal(tie):
    dense = small_dense(tie=tie)
    moe = upcycle(dense, NUM_EXPERTS, moe_layers=2)
    assert moe.config.mlp_only_layers == [0, 1]
    assert moe_layer_indices(moe.config) == [2, 3]
    assert moe.config.num_experts == NUM_EXPERTS and moe.config.num_experts_per_tok == 2
    assert moe.config.moe_intermediate_size == dense.config.intermediate_size
    assert moe.config.norm_topk_prob is False and moe.config.shared_expert_intermediate_size == 0
    dense_state, moe_state = dense.state_dict(), moe.state_dict()
    checked = 0
    for name, tensor in dense_state.items():
        layer_mlp = name.startswith("model.layers.") and name.split(".")[3] == "mlp"
        if layer_mlp and int(name.split(".")[2]) >= 2:
            continue
        assert torch.equal(moe_state[name], tensor), name
        checked += 1
    assert checked == len(dense_state) - 2 * 3  # everything but the two upcycled MLPs
    for layer in (2, 3):
        prefix = f"model.layers.{layer}.mlp"
        gate = dense_state[f"{prefix}.gate_proj.weight"]
        up = dense_state[f"{prefix}.up_proj.weight"]
        down = dense_state[f"{prefix}.down_proj.weight"]
        for expert in range(NUM_EXPERTS):
            assert torch.equal(moe_state[f"{prefix}.experts.gate_up_proj"][expert], torch.cat([gate, up]))
            assert torch.equal(moe_state[f"{prefix}.experts.down_proj"][expert], down)
        router = moe_state[f"{prefix}.gate.weight"]
        assert router.shape == (NUM_EXPERTS, 64)
        assert 0.015 < router.std().item() < 0.025 and abs(router.mean().item()) < 0.01
    assert (moe.lm_head.weight is moe.model.embed_tokens.weight) == tie


def test_norm_topk_prob_true_preserves_the_dense_function():
    dense = small_dense()
    moe = upcycle(dense, NUM_EXPERTS, norm_topk_prob=True).eval()
    tokens = torch.randint(0, 512, (2, 24))
    with torch.no_grad():
        expected = dense(tokens).logits
        got = moe(tokens).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_without_renormalisation_each_moe_mlp_is_p1_plus_p2_times_the_dense_mlp():
    dense = small_dense()
    moe = upcycle(dense, NUM_EXPERTS, norm_topk_prob=False).eval()
    captured: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = [
        moe.model.layers[layer].mlp.register_forward_hook(
            lambda module, args, output, layer=layer: captured.__setitem__(layer, (args[0], output))
        )
        for layer in (2, 3)
    ]
    with torch.no_grad():
        moe(torch.randint(0, 512, (2, 24)))
        for layer in (2, 3):
            hidden, output = captured[layer]
            flat = hidden.reshape(-1, hidden.shape[-1])
            probs = torch.softmax(moe.model.layers[layer].mlp.gate.weight @ flat.T, dim=0).T
            top2 = probs.topk(2, dim=-1).values.sum(-1, keepdim=True)
            expected = top2 * dense.model.layers[layer].mlp(flat)
            torch.testing.assert_close(output.reshape(-1, flat.shape[-1]), expected, rtol=1e-5, atol=1e-6)
            assert not torch.allclose(top2, torch.ones_like(top2))  # the scaling is really there
    for hook in hooks:
        hook.remove()


def test_shared_expert_option_adds_a_copy_of_the_dense_mlp():
    dense = small_dense()
    moe = upcycle(dense, NUM_EXPERTS, shared_expert=True)
    assert moe.config.shared_expert_intermediate_size == dense.config.intermediate_size
    block = moe.model.layers[3].mlp
    assert torch.equal(block.shared_expert.gate_proj.weight, dense.model.layers[3].mlp.gate_proj.weight)
    assert torch.equal(block.shared_expert.down_proj.weight, dense.model.layers[3].mlp.down_proj.weight)


def test_build_model_from_dense_and_moe_checkpoint_dirs(tmp_path):
    dense = small_dense()
    dense.save_pretrained(tmp_path / "dense")
    moe = build_model(tmp_path / "dense", NUM_EXPERTS, moe_layers=1)
    assert isinstance(moe, Qwen2MoeForCausalLM) and moe.config.mlp_only_layers == [0, 1, 2]
    assert torch.equal(
        moe.model.layers[0].self_attn.q_proj.weight, dense.model.layers[0].self_attn.q_proj.weight
    )
    moe.save_pretrained(tmp_path / "moe")
    again = build_model(tmp_path / "moe", NUM_EXPERTS)  # an MoE checkpoint is trained further as it is
    for (name, a), (_, b) in zip(moe.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="experts"):
        build_model(tmp_path / "moe", NUM_EXPERTS + 1)
    with pytest.raises(FileNotFoundError, match="not a model preset"):
        build_model(tmp_path / "missing", NUM_EXPERTS)
