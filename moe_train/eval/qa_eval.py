"""Medical QA accuracy of a causal LM in the two scoring modes.

- `loglik`: one forward pass per question; the prediction is the option whose answer ("The correct
  answer is (C)." in the question's language, tokenised as training tokenises an answer) is the most
  likely where the options' answers part (the letter, or "(C" where the tokenizer merges it). No
  generation, deterministic, batched by length. A multi-answer question's predicted set is every
  option more likely than a uniform guess among the options.
- `generate`: the paper's protocol: greedy decoding from the few-shot prompt until the first
  non-empty line is complete, then the protocol's extraction rule.

Prompts are token ids (see `mcq.ChatTokens`): nothing here re-tokenises a prompt string.
"""

from __future__ import annotations

import json
import re

import torch
from tqdm.auto import tqdm
from transformers import StoppingCriteria, StoppingCriteriaList

from moe_train.eval.inference import length_batches, position_ids_for, stop_token_ids
from moe_train.eval.mcq import ChatTokens, Prediction, Prompt, Protocol, build_prompt, select_shots
from pipeline.benchmarks import BenchmarkItem
from pipeline.benchmarks.options import canonical_letter

_FIRST_LINE_DONE = re.compile(r"\S[^\n]*\n")


def build_prompts(
    items: list[BenchmarkItem],
    pool: list[BenchmarkItem],
    protocol: Protocol,
    tokenizer,
    chat_template: str,
    shots: int,
    seed: int,
    max_prompt_tokens: int | None,
) -> list[Prompt]:
    chat = ChatTokens(tokenizer, chat_template)
    return [
        build_prompt(item, select_shots(item, pool, shots, seed), protocol, chat, max_prompt_tokens)
        for item in items
    ]


def answer_choices(tokenizer, protocol: Protocol, item: BenchmarkItem) -> tuple[list[int], list[int]]:
    """The answer's tokens shared by every option (the lead) and, per option, the token where the
    answers part: what the log-likelihood mode compares."""
    encoded = [
        tokenizer(protocol.answer_text(item, label), add_special_tokens=False)["input_ids"]
        for label, _ in item.options
    ]
    lead = 0
    while all(len(e) > lead + 1 for e in encoded) and len({e[lead] for e in encoded}) == 1:
        lead += 1
    parting = [e[lead] for e in encoded]
    if len(set(parting)) != len(parting):
        raise ValueError(f"{item.benchmark} {item.id}: the options' answers do not part at one token")
    return encoded[0][:lead], parting


@torch.no_grad()
def next_token_logprobs(
    model,
    tokenizer,
    encoded: list[list[int]],
    candidates: list[list[int]],
    batch_size: int,
    desc: str = "loglik",
) -> list[list[float]]:
    """log P(candidate token | context) for each context (token ids) and its candidates, in input
    order; contexts of similar length share a batch, so little is padded."""
    device = next(model.parameters()).device
    results: list[list[float]] = [[] for _ in encoded]
    for batch in tqdm(length_batches([len(e) for e in encoded], batch_size), desc=desc, unit="batch"):
        padded = tokenizer.pad(
            {"input_ids": [encoded[i] for i in batch]}, padding_side="left", return_tensors="pt"
        )
        mask = padded["attention_mask"].to(device)
        logits = model(
            input_ids=padded["input_ids"].to(device),
            attention_mask=mask,
            position_ids=position_ids_for(mask),
            logits_to_keep=1,
            use_cache=False,
        ).logits[:, -1, :]
        logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
        for row, index in enumerate(batch):
            results[index] = logprobs[row, candidates[index]].tolist()
    return results


class FirstLineComplete(StoppingCriteria):
    """Stop a sequence once its generated text holds a complete non-empty line: the paper only
    reads the first non-empty line."""

    def __init__(self, tokenizer, prompt_length: int):
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length :], skip_special_tokens=True)
        return torch.tensor([bool(_FIRST_LINE_DONE.search(t)) for t in texts], device=input_ids.device)


@torch.no_grad()
def greedy_generate(
    model, tokenizer, encoded: list[list[int]], max_new_tokens: int, batch_size: int, desc: str = "generate"
) -> list[str]:
    """Greedy continuations of prompts given as token ids, in input order."""
    device = next(model.parameters()).device
    outputs: list[str] = [""] * len(encoded)
    eos = stop_token_ids(tokenizer)
    for batch in tqdm(length_batches([len(e) for e in encoded], batch_size), desc=desc, unit="batch"):
        padded = tokenizer.pad(
            {"input_ids": [encoded[i] for i in batch]}, padding_side="left", return_tensors="pt"
        )
        input_ids = padded["input_ids"].to(device)
        generated = model.generate(
            input_ids=input_ids,
            attention_mask=padded["attention_mask"].to(device),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=eos,
            pad_token_id=tokenizer.pad_token_id,
            stopping_criteria=StoppingCriteriaList([FirstLineComplete(tokenizer, input_ids.shape[1])]),
            temperature=None,
            top_p=None,
            top_k=None,
        )
        texts = tokenizer.batch_decode(generated[:, input_ids.shape[1] :], skip_special_tokens=True)
        for index, text in zip(batch, texts, strict=True):
            outputs[index] = text
    return outputs


def score_loglik(
    model, tokenizer, prompts: list[Prompt], protocol: Protocol, batch_size: int
) -> list[Prediction]:
    choices = [answer_choices(tokenizer, protocol, p.item) for p in prompts]
    contexts = [[*p.ids, *lead] for p, (lead, _) in zip(prompts, choices, strict=True)]
    candidates = [parting for _, parting in choices]
    logprobs = next_token_logprobs(model, tokenizer, contexts, candidates, batch_size)
    predictions = []
    for prompt, scores in zip(prompts, logprobs, strict=True):
        letters = [canonical_letter(label) for label, _ in prompt.item.options]
        best = max(range(len(letters)), key=lambda i: (scores[i], -i))
        predicted = letters[best]
        if prompt.item.multi and not protocol.single_letter_answers:
            probabilities = torch.softmax(torch.tensor(scores), dim=0).tolist()
            predicted = ",".join(
                letter for letter, p in zip(letters, probabilities, strict=True) if p > 1 / len(letters)
            )
        output = json.dumps(dict(zip(letters, [round(s, 4) for s in scores], strict=True)))
        predictions.append(_prediction(prompt, protocol, "loglik", predicted, output))
    return predictions


def score_generate(
    model, tokenizer, prompts: list[Prompt], protocol: Protocol, batch_size: int, max_new_tokens: int
) -> list[Prediction]:
    texts = greedy_generate(model, tokenizer, [list(p.ids) for p in prompts], max_new_tokens, batch_size)
    return [
        _prediction(p, protocol, "generate", protocol.extract(t, p.item), t)
        for p, t in zip(prompts, texts, strict=True)
    ]


def _prediction(
    prompt: Prompt, protocol: Protocol, mode: str, predicted: str | None, output: str
) -> Prediction:
    item = prompt.item
    return Prediction(
        id=item.id,
        benchmark=item.benchmark,
        source=item.source,
        language=item.language,
        mode=mode,
        answer=item.answer,
        predicted=predicted,
        shots=prompt.shots,
        correct=protocol.is_correct(item, predicted),
        multi=item.multi,
        output=output,
    )
