"""Validation loss / perplexity per language and family, and the routing statistics of the same
forward passes, over the `valid` shards.

Documents are tokenised by training's own `DocumentTokenizer`: a `messages` row in the chat format
with loss on the assistant tokens only, a plain row on every token; each document is truncated to
`max_tokens`. The lm head runs on the scored positions only, in chunks, so a 152k vocabulary never
materialises a (batch x sequence x vocabulary) tensor.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from moe_train.data import DocumentTokenizer
from moe_train.eval.inference import length_batches
from moe_train.eval.routing_analysis import RoutingStats, routed_layers
from moe_train.loss import IGNORE_INDEX
from moe_train.routing import NO_EXPERT
from pipeline.manifest import load_manifest
from pipeline.registry import Scheme

_COLUMNS = ("id", "text", "messages", "language", "family", "expert_id")
_LM_HEAD_CHUNK = 4096


@dataclass
class ValidDoc:
    id: str
    language: str
    family: str
    expert_id: int | None
    input_ids: list[int]
    labels: list[int]  # next-token target of each position, IGNORE_INDEX where not trained


def configured_valid_documents(cfg, shards_dir: Path, tokenizer, scheme: Scheme) -> list[ValidDoc]:
    """`read_valid_documents` with the config's chat template and `eval:` limits (the eval stage and the
    spread experiment read the same documents)."""
    return read_valid_documents(
        shards_dir,
        tokenizer,
        cfg.train.chat_template,
        scheme,
        cfg.eval.valid_max_docs_per_language,
        cfg.eval.valid_max_tokens,
    )


def read_valid_documents(
    shards_dir: Path,
    tokenizer,
    chat_template: str,
    scheme: Scheme,
    max_docs_per_language: int | None,
    max_tokens: int,
) -> list[ValidDoc]:
    """The valid split, read through the manifest and tokenised exactly as training does
    (`moe_train.data.DocumentTokenizer`), at most `max_docs_per_language` per language (the first
    ones in shard order, so the selection is the same on every run), each cut to `max_tokens`."""
    manifest = load_manifest(shards_dir)
    encoder = DocumentTokenizer(tokenizer, chat_template)
    per_language: dict[str, int] = defaultdict(int)
    docs: list[ValidDoc] = []
    for shard in sorted(manifest.select(split="validation"), key=lambda f: f.path):
        if max_docs_per_language is not None and per_language[shard.language] >= max_docs_per_language:
            continue
        rows = pq.read_table(Path(shards_dir) / shard.path, columns=list(_COLUMNS)).to_pylist()
        if max_docs_per_language is not None:
            rows = rows[: max_docs_per_language - per_language[shard.language]]
        for row, document in zip(rows, encoder.documents(rows), strict=True):
            if document is None:
                continue
            labels = document.labels[:max_tokens]
            if all(label == IGNORE_INDEX for label in labels):
                continue
            expert_id = None if document.expert_id == NO_EXPERT else document.expert_id
            if expert_id is None and scheme.has(row["language"]):
                expert_id = scheme.expert_for(row["language"]).id
            docs.append(
                ValidDoc(
                    row["id"],
                    row["language"],
                    row.get("family") or shard.family,
                    expert_id,
                    document.tokens[:max_tokens],
                    labels,
                )
            )
            per_language[row["language"]] += 1
    return docs


@dataclass
class LossTotals:
    nll: float = 0.0
    tokens: int = 0
    documents: int = 0

    def to_json(self) -> dict:
        mean = self.nll / self.tokens if self.tokens else None
        return {
            "documents": self.documents,
            "tokens": self.tokens,
            "loss": mean,
            "perplexity": math.exp(mean) if mean is not None and mean < 50 else None,
        }


@torch.no_grad()
def evaluate_valid(
    model, tokenizer, docs: list[ValidDoc], batch_size: int, num_scheme_experts: int | None
) -> tuple[dict, RoutingStats | None]:
    """Loss per language and per family, and routing statistics when the model has MoE layers."""
    device = next(model.parameters()).device
    layers = routed_layers(model)
    routing = (
        RoutingStats(layers, model.config.num_experts, model.config.num_experts_per_tok) if layers else None
    )
    by_language: dict[str, LossTotals] = defaultdict(LossTotals)
    by_family: dict[str, LossTotals] = defaultdict(LossTotals)
    overall = LossTotals()
    pad = tokenizer.pad_token_id
    for batch in tqdm(
        length_batches([len(d.input_ids) for d in docs], batch_size), desc="valid", unit="batch"
    ):
        group = [docs[i] for i in batch]
        width = max(len(d.input_ids) for d in group)
        input_ids = torch.full((len(group), width), pad, dtype=torch.long)
        attention = torch.zeros((len(group), width), dtype=torch.long)
        labels = torch.full((len(group), width), IGNORE_INDEX, dtype=torch.long)
        for row, doc in enumerate(group):
            n = len(doc.input_ids)
            input_ids[row, :n] = torch.tensor(doc.input_ids)
            attention[row, :n] = 1
            labels[row, :n] = torch.tensor(doc.labels)
        input_ids, attention, labels = input_ids.to(device), attention.to(device), labels.to(device)
        out = model.model(
            input_ids=input_ids,
            attention_mask=attention,
            output_router_logits=routing is not None,
            use_cache=False,
        )
        doc_nll = _document_nll(model, out.last_hidden_state, labels)
        for row, doc in enumerate(group):
            scored = int((labels[row] != IGNORE_INDEX).sum())
            for totals in (by_language[doc.language], by_family[doc.family], overall):
                totals.nll += float(doc_nll[row])
                totals.tokens += scored
                totals.documents += 1
        if routing is not None:
            language_ids = torch.tensor([routing.language_index(d.language) for d in group], device=device)
            expert_ids = torch.tensor(
                [d.expert_id if d.expert_id is not None and num_scheme_experts else -1 for d in group],
                device=device,
            )
            width_index = attention.bool().reshape(-1)
            routing.update(
                list(out.router_logits),
                width_index,
                language_ids[:, None].expand(-1, width).reshape(-1),
                expert_ids[:, None].expand(-1, width).reshape(-1),
            )
    result = {
        "overall": overall.to_json(),
        "per_language": {k: v.to_json() for k, v in sorted(by_language.items())},
        "per_family": {k: v.to_json() for k, v in sorted(by_family.items())},
    }
    return result, routing


def _document_nll(model, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token NLL per row over the trained positions, with the lm head applied in chunks."""
    rows, cols = (labels != IGNORE_INDEX).nonzero(as_tuple=True)
    states = hidden[rows, cols]
    targets = labels[rows, cols]
    nll = torch.zeros(hidden.shape[0], dtype=torch.float64, device=hidden.device)
    for start in range(0, targets.numel(), _LM_HEAD_CHUNK):
        chunk = slice(start, start + _LM_HEAD_CHUNK)
        logits = model.lm_head(states[chunk]).float()
        losses = F.cross_entropy(logits, targets[chunk], reduction="none")
        nll.index_add_(0, rows[chunk], losses.double())
    return nll.cpu()
