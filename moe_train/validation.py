"""Validation during training: a fixed set of packed batches from the `validation` split, and the loss and
router agreement per language over them (the eval stage, moe_train/eval/, measures the export)."""

from __future__ import annotations

import math

import torch

from moe_train.causal_lm import CausalLMForTraining
from moe_train.data import DocumentTokenizer
from moe_train.distributed import Runtime, all_reduce_sum
from moe_train.loss import IGNORE_INDEX
from moe_train.packing import Batch, SequencePacker, collate
from moe_train.precision import autocast
from moe_train.routing import blind_agreement, load_entropy, routing_stats
from moe_train.sampling import DataSelection, DocumentStream
from pipeline.config import TrainSection


def validation_batches(
    train: DataSelection,
    doc_tokenizer: DocumentTokenizer,
    languages: list[str],
    cfg: TrainSection,
    runtime: Runtime,
) -> list[Batch]:
    """`cfg.eval_batches` micro-batches of the validation split with the training selection's filters,
    this rank's share of them."""
    selection = DataSelection(
        shards_dir=train.shards_dir,
        split="validation",
        languages=train.languages,
        families=train.families,
        source_types=train.source_types,
        seed=train.seed,
    )
    if not selection.files():
        return []
    stream = DocumentStream(selection, doc_tokenizer, epochs=1)
    packer = SequencePacker(stream, cfg.seq_len, languages, doc_tokenizer.eos_id)
    sequences = []
    for seq in packer:
        sequences.append(seq)
        if len(sequences) == cfg.eval_batches * cfg.micro_batch_size:
            break
    micro = cfg.micro_batch_size
    batches = [collate(sequences[i : i + micro]) for i in range(0, len(sequences), micro)]
    # every rank must run the same number of forwards (FSDP collectives): pad with a batch that counts nothing
    per_rank = math.ceil(len(batches) / runtime.world)
    blank = _blank_batch(batches[0])
    batches += [blank] * (per_rank * runtime.world - len(batches))
    return batches[runtime.rank :: runtime.world]


def _blank_batch(batch: Batch) -> Batch:
    """A copy of `batch` that contributes no loss, no routing statistics and no language counts."""
    return Batch(
        batch.input_ids,
        torch.full_like(batch.labels, IGNORE_INDEX),
        batch.position_ids,
        torch.full_like(batch.expert_ids, -1),
        torch.full_like(batch.language_ids, -1),
        batch.cu_seqlens,
        batch.max_doc_len,
        batch.doc_lengths,
    )


@torch.no_grad()
def validation_metrics(
    model: CausalLMForTraining, batches: list[Batch], languages: list[str], runtime: Runtime
) -> dict:
    """Per-language validation loss and router agreement (the stock top-k, no family forcing, contains
    the token's family expert), overall, by language and by MoE layer; beside the agreement, what a
    language-blind router would score (`blind_agreement*`, from the stock expert load shares) and each
    layer's load entropy."""
    if not batches:
        return {}
    n_layers = len(model.moe_layers)
    top_k = getattr(model.lm.config, "num_experts_per_tok", 0)
    zeros = {"dtype": torch.float64, "device": runtime.device}
    # per language: loss sum, scored tokens, agreeing and routed token-layers; per MoE layer the latter two
    sums = {name: torch.zeros(len(languages), **zeros) for name in ("loss", "tokens", "agree", "routed")}
    sums |= {name: torch.zeros(max(n_layers, 1), **zeros) for name in ("layer_agree", "layer_routed")}
    n_experts = getattr(model.lm.config, "num_experts", 1)
    sums["stock_load"] = torch.zeros(max(n_layers, 1), n_experts, **zeros)  # per layer, over family tokens
    sums["family_tokens"] = torch.zeros(len(languages), n_experts, **zeros)  # each language's family experts
    model.train(False)  # evaluation mode (no dropout is used, but be explicit)
    for batch in batches:
        batch = batch.to(runtime.device)
        with autocast(runtime.device):
            losses = model(batch, per_token=True)
        langs = batch.language_ids.reshape(-1)
        valid = (batch.labels.reshape(-1) != IGNORE_INDEX) & (langs >= 0)
        sums["loss"].index_add_(0, langs[valid], losses[valid].double())
        sums["tokens"].index_add_(0, langs[valid], torch.ones_like(losses[valid], dtype=torch.float64))
        for layer, logits in enumerate(model.router_logits()[:n_layers]):
            stats = routing_stats(logits, batch.expert_ids, top_k)
            fam = stats["has_family"] & (langs >= 0)
            sums["agree"].index_add_(0, langs[fam], stats["agree"][fam].double())
            sums["routed"].index_add_(0, langs[fam], torch.ones_like(langs[fam], dtype=torch.float64))
            sums["layer_agree"][layer] += stats["agree"][fam].sum()
            sums["layer_routed"][layer] += fam.sum()
            sums["stock_load"][layer] += stats["stock_load"]
            if layer == 0:
                cell = langs[fam] * n_experts + batch.expert_ids.reshape(-1)[fam]
                sums["family_tokens"].view(-1).index_add_(0, cell, torch.ones_like(cell, dtype=torch.float64))
    model.train()
    sums = all_reduce_sum(sums, runtime)
    loss, tokens, agree, routed = sums["loss"], sums["tokens"], sums["agree"], sums["routed"]
    result: dict = {}
    if tokens.sum() > 0:
        result["val_loss"] = (loss.sum() / tokens.sum()).item()
        result["val_loss_by_language"] = {
            code: (loss[i] / tokens[i]).item() for i, code in enumerate(languages) if tokens[i] > 0
        }
    if n_layers and routed.sum() > 0:
        result["agreement"] = (agree.sum() / routed.sum()).item()
        result["agreement_by_language"] = {
            code: (agree[i] / routed[i]).item() for i, code in enumerate(languages) if routed[i] > 0
        }
        result["agreement_by_layer"] = {
            f"layer_{layer}": (sums["layer_agree"][i] / sums["layer_routed"][i].clamp(min=1)).item()
            for i, layer in enumerate(model.moe_layers)
        }
        # a language-blind router's agreement: its family expert's share of all tokens' stock top-k
        family = sums["family_tokens"]
        blind = torch.stack([blind_agreement(load, top_k) for load in sums["stock_load"][:n_layers]]).mean(0)
        per_language = family @ blind / family.sum(1).clamp(min=1)
        result["blind_agreement"] = ((family @ blind).sum() / family.sum().clamp(min=1)).item()
        result["blind_agreement_by_language"] = {
            code: per_language[i].item() for i, code in enumerate(languages) if routed[i] > 0
        }
        result["expert_load_entropy_by_layer"] = {
            f"layer_{layer}": load_entropy(sums["stock_load"][i]) for i, layer in enumerate(model.moe_layers)
        }
    return result
