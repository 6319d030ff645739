"""Training data records: documents (chat template and loss masks) and the the language index of a run.

How rows are selected and ordered is moe_train/sampling.py; how documents become fixed-length rows,
moe_train/packing.py.

Documents. `messages` rows are rendered with the chat template (default the paper's
`User:{q}\\nAssistant:{a}<|endoftext|>`): everything from `{a}` on is trained, the prompt is not.
Plain-text rows are trained on every token and end with `<|endoftext|>`. Text inside records is
tokenised with special tokens split, so a record cannot inject control tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from moe_train.loss import IGNORE_INDEX
from moe_train.routing import NO_EXPERT
from pipeline.manifest import load_manifest

EOS_TOKEN = "<|endoftext|>"


class DataError(ValueError):
    """The data selection or a record cannot be used for training; the message says which and why."""


@dataclass
class Document:
    tokens: list[int]
    labels: list[int]  # next-token targets, already shifted; IGNORE_INDEX where not trained
    expert_id: int
    language: str
    kind: str = "text"  # "chat" (a messages row: never split) or "text" (may continue in the next row)
    prompt_len: int = 0  # chat: tokens before the first trained one (the whole first prompt)
    offset: int = 0  # where this piece starts in its document (> 0: a continuation)

    @property
    def trained(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


class DocumentTokenizer:
    """Turns records into Documents with the chat template and loss masks."""

    def __init__(self, tokenizer, chat_template: str = "User:{q}\nAssistant:{a}" + EOS_TOKEN):
        if "{q}" not in chat_template or "{a}" not in chat_template:
            raise DataError(f"chat_template must contain {{q}} and {{a}}: {chat_template!r}")
        if chat_template.index("{q}") > chat_template.index("{a}"):
            raise DataError(f"chat_template must put {{q}} before {{a}}: {chat_template!r}")
        self.tokenizer = tokenizer
        self.eos_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
        if self.eos_id is None or self.eos_id == tokenizer.unk_token_id:
            raise DataError(f"the tokenizer has no {EOS_TOKEN} token")
        pieces = re.split(r"(\{q\}|\{a\})", chat_template)
        literal_ids = self._encode([p for p in pieces if p not in ("{q}", "{a}")], split_special=False)
        self.template: list[tuple[str, list[int]]] = []  # ("q" | "a" | "lit", ids)
        literal_iter = iter(literal_ids)
        for piece in pieces:
            if piece in ("{q}", "{a}"):
                self.template.append((piece[1], []))
            else:
                self.template.append(("lit", next(literal_iter)))

    def _encode(self, texts: list[str], split_special: bool) -> list[list[int]]:
        if not texts:
            return []
        return self.tokenizer(
            texts, add_special_tokens=False, split_special_tokens=split_special, verbose=False
        )["input_ids"]

    def chat_ids(self, question: str, answer: str | None = None) -> list[int]:
        """One chat turn's tokens exactly as `documents` builds them; without an answer, up to where
        the answer starts (what an evaluation prompt ends with)."""
        q_ids, a_ids = self._encode([question, answer or ""], split_special=True)
        ids: list[int] = []
        for kind, literal in self.template:
            if kind == "a" and answer is None:
                break
            ids.extend(q_ids if kind == "q" else a_ids if kind == "a" else literal)
        return ids

    def documents(self, rows: list[dict]) -> list[Document | None]:
        """One Document per row (None when a row has no usable text)."""
        # Gather every free-text piece of every row and tokenise them in one batched call.
        texts: list[str] = []
        plans: list[list[tuple[str, int]] | None] = []
        for row in rows:
            turns = _turns(row.get("messages"))
            if turns is None:
                text = row.get("text") or ""
                if not text.strip():
                    plans.append(None)
                    continue
                plans.append([("text", len(texts))])
                texts.append(text)
            elif not turns:
                plans.append(None)
            else:
                plan = []
                for question, answer in turns:
                    plan.append(("q", len(texts)))
                    texts.append(question)
                    plan.append(("a", len(texts)))
                    texts.append(answer)
                plans.append(plan)
        encoded = self._encode(texts, split_special=True)
        docs: list[Document | None] = []
        for row, plan in zip(rows, plans, strict=True):
            if plan is None:
                docs.append(None)
                continue
            tokens: list[int] = []
            trained: list[bool] = []
            doc_kind = "text" if plan[0][0] == "text" else "chat"
            if doc_kind == "text":
                ids = [*encoded[plan[0][1]], self.eos_id]
                tokens, trained = ids, [True] * len(ids)
            else:
                for turn in range(0, len(plan), 2):
                    q_ids, a_ids = encoded[plan[turn][1]], encoded[plan[turn + 1][1]]
                    in_answer = False
                    for kind, ids in self.template:
                        if kind == "q":
                            ids = q_ids
                        elif kind == "a":
                            ids, in_answer = a_ids, True
                        tokens.extend(ids)
                        trained.extend([in_answer] * len(ids))
            labels = [t if m else IGNORE_INDEX for t, m in zip(tokens[1:], trained[1:], strict=True)] + [
                IGNORE_INDEX
            ]
            expert = row.get("expert_id")
            prompt_len = trained.index(True) if doc_kind == "chat" and True in trained else 0
            docs.append(
                Document(
                    tokens,
                    labels,
                    NO_EXPERT if expert is None else int(expert),
                    row["language"],
                    kind=doc_kind,
                    prompt_len=prompt_len,
                )
            )
        return docs


def _turns(messages) -> list[tuple[str, str]] | None:
    """(question, answer) pairs of a messages list; None for a plain-text row.

    System turns are prepended to the next question; a trailing question without answer is dropped.
    """
    if messages is None:
        return None
    turns, pending = [], []
    for message in messages:
        role, content = message.get("role"), message.get("content") or ""
        if role in ("system", "user"):
            pending.append(content)
        elif role == "assistant":
            turns.append(("\n".join(pending), content))
            pending = []
    return turns


# --------------------------------------------------------------------------------------------------
# Batches


def manifest_languages(shards_dir: Path) -> list[str]:
    """Every language in the manifest, sorted: the index space of `language_ids`."""
    return sorted({f.language for f in load_manifest(shards_dir).files})
