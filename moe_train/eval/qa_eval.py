"""Medical QA accuracy of a causal LM in the two scoring modes.

- `loglik`: one forward pass per question; the prediction is the option letter with the highest
  log-probability right after "The correct answer is (" (in the question's language). No
  generation, deterministic, batched.
- `generate`: the paper's protocol: greedy decoding from the few-shot prompt until the first
  non-empty line is complete, then the paper's extraction rule on that line.
"""

from __future__ import annotations

import json
import re

import torch
from tqdm.auto import tqdm
from transformers import StoppingCriteria, StoppingCriteriaList

from moe_train.eval.inference import length_batches, position_ids_for, stop_token_ids
from moe_train.eval.mcq import (
    ChatFormat,
    MCQItem,
    Prediction,
    Prompt,
    build_prompt,
    canonical_letter,
    extract_answer,
    scoring_prefix,
    select_shots,
)

_FIRST_LINE_DONE = re.compile(r"\S[^\n]*\n")


def build_prompts(
    items: list[MCQItem],
    pool: list[MCQItem],
    tokenizer,
    chat_template: str,
    shots: int,
    seed: int,
    max_prompt_tokens: int | None,
) -> list[Prompt]:
    chat = ChatFormat(chat_template)

    def count_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return [
        build_prompt(item, select_shots(item, pool, shots, seed), chat, count_tokens, max_prompt_tokens)
        for item in items
    ]


def letter_token_id(tokenizer, label: str) -> int:
    ids = tokenizer(label, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(
            f"option label {label!r} is {len(ids)} tokens; the loglik mode needs single-token labels"
        )
    return ids[0]


@torch.no_grad()
def next_token_logprobs(
    model, tokenizer, contexts: list[str], candidates: list[list[int]], batch_size: int, desc: str = "loglik"
) -> list[list[float]]:
    """log P(candidate token | context) for each context's candidates, in input order."""
    device = next(model.parameters()).device
    encoded = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in contexts]
    results: list[list[float]] = [[] for _ in contexts]
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
    model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int, desc: str = "generate"
) -> list[str]:
    """Greedy continuations, in input order."""
    device = next(model.parameters()).device
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    outputs: list[str] = [""] * len(prompts)
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


def score_loglik(model, tokenizer, prompts: list[Prompt], batch_size: int) -> list[Prediction]:
    contexts = [p.text + scoring_prefix(p.item) for p in prompts]
    candidates = [[letter_token_id(tokenizer, label) for label, _ in p.item.options] for p in prompts]
    logprobs = next_token_logprobs(model, tokenizer, contexts, candidates, batch_size)
    predictions = []
    for prompt, scores in zip(prompts, logprobs, strict=True):
        letters = [canonical_letter(label) for label, _ in prompt.item.options]
        best = max(range(len(letters)), key=lambda i: (scores[i], -i))
        predictions.append(
            _prediction(
                prompt,
                "loglik",
                letters[best],
                json.dumps(dict(zip(letters, [round(s, 4) for s in scores], strict=True))),
            )
        )
    return predictions


def score_generate(
    model, tokenizer, prompts: list[Prompt], batch_size: int, max_new_tokens: int
) -> list[Prediction]:
    texts = greedy_generate(model, tokenizer, [p.text for p in prompts], max_new_tokens, batch_size)
    return [_prediction(p, "generate", extract_answer(t), t) for p, t in zip(prompts, texts, strict=True)]


def _prediction(prompt: Prompt, mode: str, predicted: str | None, output: str) -> Prediction:
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
        output=output,
    )
