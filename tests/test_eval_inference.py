"""Scoring with a real (tiny, random-init) Qwen2-MoE checkpoint: both QA modes against brute-force
references, validation loss, routing statistics and divergence maths."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from helpers.eval_helpers import make_tiny_moe, tico_shards

from moe_train.eval.apollomoe import TEMPLATES, ApolloMoEProtocol
from moe_train.eval.inference import load_model
from moe_train.eval.mcq import ChatTokens, MedbabelProtocol, build_prompt
from moe_train.eval.qa_eval import (
    FirstLineComplete,
    answer_choices,
    greedy_generate,
    score_generate,
    score_loglik,
)
from moe_train.eval.routing_analysis import RoutingStats, balance_summary, js_divergence, routed_layers
from moe_train.eval.valid_eval import evaluate_valid, read_valid_documents
from moe_train.loss import IGNORE_INDEX
from pipeline.benchmarks import BenchmarkItem
from pipeline.benchmarks.options import canonical_letter

pytestmark = pytest.mark.slow  # trains or runs a model: not in `make test-fast`

CHAT_TEMPLATE = "User:{q}\nAssistant:{a}<|endoftext|>"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = make_tiny_moe(tmp_path_factory.mktemp("tiny") / "model")
    return load_model(path, torch.device("cpu"), torch.float32)


PROTOCOLS = [ApolloMoEProtocol(), MedbabelProtocol()]


def _items(n: int, language: str = "en", letters: str = "ABCD") -> list[BenchmarkItem]:
    return [
        BenchmarkItem(
            f"q{i}",
            "b",
            "s",
            language,
            "What is the cause? " * (1 + 3 * i),
            tuple((letter, f"option {letter} {i}") for letter in letters),
            (canonical_letter(letters[i % len(letters)]),),
        )
        for i in range(n)
    ]


def _prompts(items, tokenizer, protocol=PROTOCOLS[0]):
    chat = ChatTokens(tokenizer, CHAT_TEMPLATE)
    return [
        build_prompt(item, [other for other in items if other is not item][:2], protocol, chat)
        for item in items
    ]


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.name)
@pytest.mark.parametrize("language", sorted(TEMPLATES))
def test_options_part_at_one_token_of_the_answer_as_training_tokenises_it(tiny, protocol, language):
    """The loglik mode reads one next-token distribution: the options' answers, tokenised alone as a
    training answer is, share a lead and then differ in one token ("C", or "(C" where merged)."""
    _, tokenizer = tiny
    for letters in ("ABCDE", "أبجده"):
        item = _items(1, language, letters)[0]
        lead, parting = answer_choices(tokenizer, protocol, item)
        for (label, _), token in zip(item.options, parting, strict=True):
            answer = tokenizer(protocol.answer_text(item, label), add_special_tokens=False)["input_ids"]
            assert answer[: len(lead) + 1] == [*lead, token]


def test_loglik_matches_unbatched_forward_and_picks_the_argmax(tiny):
    model, tokenizer = tiny
    protocol = PROTOCOLS[0]
    prompts = _prompts(_items(3), tokenizer)
    predictions = score_loglik(model, tokenizer, prompts, protocol, batch_size=2)
    for prompt, prediction in zip(prompts, predictions, strict=True):
        lead, parting = answer_choices(tokenizer, protocol, prompt.item)
        ids = torch.tensor([[*prompt.ids, *lead]])
        with torch.no_grad():
            reference = torch.log_softmax(model(input_ids=ids).logits[0, -1].float(), dim=-1)
        expected = {letter: reference[token].item() for letter, token in zip("ABCD", parting, strict=True)}
        scores = json.loads(prediction.output)
        assert scores == pytest.approx(expected, abs=1e-3)
        assert prediction.predicted == max(expected, key=expected.get)
        assert prediction.correct == (prediction.predicted == prompt.item.answer)


def test_generation_is_batch_invariant_and_stops_after_the_first_line(tiny):
    model, tokenizer = tiny
    protocol = PROTOCOLS[1]
    prompts = _prompts(_items(3), tokenizer, protocol)
    single = greedy_generate(model, tokenizer, [list(p.ids) for p in prompts], max_new_tokens=8, batch_size=1)
    predictions = score_generate(model, tokenizer, prompts, protocol, batch_size=3, max_new_tokens=8)
    assert [p.output for p in predictions] == single
    assert [p.predicted for p in predictions] == [
        protocol.extract(t, p.item) for t, p in zip(single, prompts, strict=True)
    ]
    for text in single:
        first_line = re.match(r"^\s*\S[^\n]*\n", text)
        assert first_line is None or text[first_line.end() :].strip() == ""


def test_first_line_stopping_criterion(tiny):
    _, tokenizer = tiny
    prompt = tokenizer("User:Q\nAssistant:", return_tensors="pt")["input_ids"]
    criterion = FirstLineComplete(tokenizer, prompt.shape[1])
    cases = {
        "The correct answer is (B).\n": True,
        "  \n\n": False,
        "The correct answer is (B)": False,
        "\n\n(C)\nmore": True,
    }
    for text, expected in cases.items():
        ids = torch.cat([prompt, tokenizer(text, return_tensors="pt")["input_ids"]], dim=1)
        assert criterion(ids, None).tolist() == [expected], text


@pytest.fixture(scope="module")
def valid_docs(tiny, tmp_path_factory, registry):
    from conftest import SHARED_DATA, require_shared_data

    require_shared_data()
    shards = tmp_path_factory.mktemp("shards")
    tico_shards(shards, SHARED_DATA, ["en", "zh", "ar", "sw"], valid=3, train=1)
    _, tokenizer = tiny
    scheme = registry.scheme("family7")
    return read_valid_documents(
        shards, tokenizer, CHAT_TEMPLATE, scheme, max_docs_per_language=2, max_tokens=64
    )


def test_valid_documents_follow_the_manifest_and_the_chat_loss_mask(valid_docs, tiny):
    _, tokenizer = tiny
    assert sorted({d.language for d in valid_docs}) == ["ar", "en", "sw", "zh"]
    assert all(sum(d.language == lang for d in valid_docs) == 2 for lang in ["ar", "en", "sw", "zh"])
    chat_doc = next(d for d in valid_docs if IGNORE_INDEX in d.labels[:-1])  # rows 1, 3.. are chat turns
    # training tokenises the template's literal pieces and the turn texts separately
    pieces = tokenizer(["User:", "Translate.", "\nAssistant:"], add_special_tokens=False)["input_ids"]
    prompt_tokens = [token for piece in pieces for token in piece]
    assert chat_doc.input_ids[: len(prompt_tokens)] == prompt_tokens
    # the prompt is not trained; from the answer on, each position's label is the next token
    n_prompt = len(prompt_tokens)
    assert chat_doc.labels[: n_prompt - 1] == [IGNORE_INDEX] * (n_prompt - 1)
    assert chat_doc.labels[n_prompt - 1 : -1] == chat_doc.input_ids[n_prompt:]
    plain_doc = next(d for d in valid_docs if IGNORE_INDEX not in d.labels[:-1])
    assert plain_doc.labels[:-1] == plain_doc.input_ids[1:]
    assert {d.expert_id for d in valid_docs if d.language == "zh"} == {0}
    assert all(len(d.input_ids) == len(d.labels) <= 64 for d in valid_docs)


def test_valid_loss_and_routing_match_one_document_at_a_time(tiny, valid_docs):
    model, tokenizer = tiny
    losses, stats = evaluate_valid(model, tokenizer, valid_docs, batch_size=3, num_scheme_experts=7)
    layers = routed_layers(model)
    assert layers == [2, 3] and stats.layers == layers
    nll: dict[str, float] = {}
    tokens: dict[str, int] = {}
    counts = {lang: np.zeros((2, 7)) for lang in stats.languages}
    agree = {lang: np.zeros(2) for lang in stats.languages}
    for doc in valid_docs:
        ids = torch.tensor([doc.input_ids])
        with torch.no_grad():
            out = model(input_ids=ids, output_router_logits=True)
        logprobs = torch.log_softmax(out.logits[0].float(), dim=-1)
        targets = torch.tensor(doc.labels)
        scored = targets != IGNORE_INDEX
        nll[doc.language] = nll.get(doc.language, 0.0) - logprobs[scored, targets[scored]].sum().item()
        tokens[doc.language] = tokens.get(doc.language, 0) + int(scored.sum())
        for position, logits in enumerate(out.router_logits):
            top = logits.topk(2, dim=-1).indices
            for row in top:
                counts[doc.language][position, row.tolist()] += 1
                agree[doc.language][position] += doc.expert_id in row.tolist()
    for lang, result in losses["per_language"].items():
        assert result["tokens"] == tokens[lang]
        assert result["loss"] == pytest.approx(nll[lang] / tokens[lang], rel=1e-4)
        assert result["perplexity"] == pytest.approx(np.exp(nll[lang] / tokens[lang]), rel=1e-3)
    for i, lang in enumerate(stats.languages):
        assert np.abs(stats.counts[i] - counts[lang]).sum() <= 2  # float near-ties may flip one pick
        assert stats.tokens[i] == sum(len(d.input_ids) for d in valid_docs if d.language == lang)
        assert np.abs(stats.agree[i] - agree[lang]).sum() <= 2
    assert losses["overall"]["tokens"] == sum(tokens.values())
    assert set(losses["per_family"]) == {"sino_tibetan", "afro_asiatic", "indo_european", "kongolese"}


def test_routing_stats_on_known_router_logits():
    stats = RoutingStats([5, 6], num_experts=4, top_k=2)
    en, sw = stats.language_index("en"), stats.language_index("sw")
    # four tokens: en, en, sw, padding; layer 5 prefers experts 0+1 for en and 2+3 for sw
    layer5 = torch.tensor([[9.0, 8, 0, 0], [9, 8, 0, 0], [0, 0, 9, 8], [9, 9, 9, 9]])
    layer6 = torch.tensor([[0.0, 9, 8, 0], [9, 8, 0, 0], [0, 9, 8, 0], [0, 0, 0, 0]])
    valid = torch.tensor([True, True, True, False])
    languages = torch.tensor([en, en, sw, sw])
    family = torch.tensor([2, 2, 3, 3])
    stats.update([layer5, layer6], valid, languages, family)
    assert stats.counts[en].tolist() == [[2, 2, 0, 0], [1, 2, 1, 0]]
    assert stats.counts[sw].tolist() == [[0, 0, 1, 1], [0, 1, 1, 0]]
    assert stats.agreement().tolist() == [[0.0, 0.5], [1.0, 0.0]]
    assert stats.load().tolist() == [[1 / 3, 1 / 3, 1 / 6, 1 / 6], [1 / 6, 1 / 2, 1 / 3, 0]]
    divergence = stats.divergence()
    assert divergence["mean_pairwise_jsd"][0] == pytest.approx(1.0)  # disjoint expert sets
    summary = stats.to_json(["a", "b", "c", "d"])
    assert summary["expert_share"]["5"]["en"] == {"a": 0.5, "b": 0.5, "c": 0.0, "d": 0.0}
    assert summary["agreement_overall"] == {"5": pytest.approx(1 / 3), "6": pytest.approx(1 / 3)}
    # a language-blind router's agreement: the family expert's share of top-k slots x k, per language
    np.testing.assert_allclose(stats.blind_agreement(), [[1 / 3, 2 / 3], [1 / 3, 0.0]])
    assert summary["blind_agreement"]["6"] == {"en": pytest.approx(2 / 3), "sw": 0.0}


def test_js_divergence_and_balance_summaries():
    uniform = np.full(4, 0.25)
    assert js_divergence(np.stack([uniform, uniform])) == pytest.approx(0.0)
    assert js_divergence(np.eye(2)) == pytest.approx(1.0)
    assert js_divergence(np.eye(4)) == pytest.approx(2.0)  # generalised: log2(n) for n disjoint rows
    assert 0 < js_divergence(np.array([[0.5, 0.5], [0.9, 0.1]])) < 1
    even = balance_summary(uniform, list("abcd"))
    assert even["cv"] == pytest.approx(0) and even["max_over_mean"] == pytest.approx(1)
    assert even["normalized_entropy"] == pytest.approx(1)
    skewed = balance_summary(np.array([1.0, 0, 0, 0]), list("abcd"))
    assert skewed["max_over_mean"] == pytest.approx(4) and skewed["normalized_entropy"] == pytest.approx(0)
