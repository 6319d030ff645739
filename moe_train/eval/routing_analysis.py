"""Routing analysis of MoE layers: which experts each language's tokens go to (the paper's
Figure 3), how often the stock top-k router already picks the token's family expert, expert load
balance, and how differently languages are routed layer by layer (Jensen-Shannon divergence, which
the "Spread Out in the End" experiment in `moe_train.spread` plots).

The statistics come from the stock router (`output_router_logits=True` in `transformers`), i.e.
exactly what inference (and vLLM) does with the exported checkpoint.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from moe_train.eval import plots


def routed_layers(model) -> list[int]:
    """Decoder layers whose MLP is a routed mixture of experts, in forward order (read off the
    modules, so any Qwen2-MoE layout works, `decoder_sparse_step` included)."""
    return [
        i
        for i, layer in enumerate(model.model.layers)
        if hasattr(layer.mlp, "gate") and hasattr(layer.mlp, "experts")
    ]


class RoutingStats:
    """Accumulates top-k expert assignments per language and MoE layer, and agreement with the
    family expert, over any number of batches."""

    def __init__(self, layers: list[int], num_experts: int, top_k: int):
        self.layers = list(layers)
        self.num_experts = num_experts
        self.top_k = top_k
        self.languages: list[str] = []
        self.counts = np.zeros((0, len(self.layers), num_experts))  # assignments [language, layer, expert]
        self.agree = np.zeros((0, len(self.layers)))  # tokens whose top-k holds the family expert
        self.tokens = np.zeros(0, dtype=np.int64)
        self.known = np.zeros(0, dtype=np.int64)  # tokens whose family expert is known
        self.family = np.zeros((0, num_experts))  # [language, expert]: tokens by their family expert

    def language_index(self, language: str) -> int:
        if language not in self.languages:
            self.languages.append(language)
            self.counts = np.concatenate([self.counts, np.zeros((1, *self.counts.shape[1:]))])
            self.agree = np.concatenate([self.agree, np.zeros((1, len(self.layers)))])
            self.tokens = np.append(self.tokens, 0)
            self.known = np.append(self.known, 0)
            self.family = np.concatenate([self.family, np.zeros((1, self.num_experts))])
        return self.languages.index(language)

    @torch.no_grad()
    def update(
        self,
        router_logits: list[torch.Tensor],
        valid: torch.Tensor,
        language_ids: torch.Tensor,
        family_experts: torch.Tensor,
    ) -> None:
        """`router_logits[l]` is (tokens, experts) for MoE layer l; the other tensors are per token:
        which positions are real, the language index, and the family expert (-1 when unknown)."""
        if len(router_logits) != len(self.layers):
            raise ValueError(
                f"got router logits for {len(router_logits)} layers, expected {len(self.layers)}"
            )
        n_languages = len(self.languages)
        language = language_ids[valid]
        family = family_experts[valid].to(language.device)
        known = family >= 0
        for position, logits in enumerate(router_logits):
            logits = logits.to(valid.device)[valid].float()
            top = logits.topk(self.top_k, dim=-1).indices
            hits = F.one_hot(top, self.num_experts).sum(dim=1).double()
            per_language = torch.zeros(n_languages, self.num_experts, dtype=torch.float64, device=hits.device)
            self.counts[:, position] += per_language.index_add_(0, language, hits).cpu().numpy()
            agreed = ((top == family[:, None]).any(dim=-1) & known).double()
            per_language_agree = torch.zeros(n_languages, dtype=torch.float64, device=hits.device)
            self.agree[:, position] += per_language_agree.index_add_(0, language, agreed).cpu().numpy()
        self.tokens += torch.bincount(language, minlength=n_languages).cpu().numpy()
        self.known += torch.bincount(language[known], minlength=n_languages).cpu().numpy()
        cell = language[known] * self.num_experts + family[known].long()
        self.family += (
            torch.bincount(cell, minlength=n_languages * self.num_experts)
            .reshape(n_languages, self.num_experts)
            .cpu()
            .numpy()
        )

    # ---- derived quantities ----------------------------------------------------------------------
    def shares(self) -> np.ndarray:
        """[language, layer, expert]: each language's assignments as fractions (rows sum to 1)."""
        totals = self.counts.sum(axis=-1, keepdims=True)
        return np.divide(self.counts, totals, out=np.zeros_like(self.counts), where=totals > 0)

    def agreement(self) -> np.ndarray:
        """[language, layer]: fraction of tokens whose stock top-k contains their family expert (NaN if unknown)."""
        known = self.known[:, None].astype(float)
        return np.divide(self.agree, known, out=np.full_like(self.agree, np.nan), where=known > 0)

    def blind_agreement(self) -> np.ndarray:
        """[language, layer]: the agreement a language-blind router would score: for each token, the share
        of all tokens whose top-k holds its family expert (that expert's load share x top_k)."""
        covered = np.minimum(1.0, self.load() * self.top_k)  # [layer, expert]
        known = self.known[:, None].astype(float)
        expected = self.family @ covered.T  # [language, layer]
        return np.divide(expected, known, out=np.full_like(expected, np.nan), where=known > 0)

    def load(self) -> np.ndarray:
        """[layer, expert]: fraction of all assignments each expert receives."""
        totals = self.counts.sum(axis=0)
        sums = totals.sum(axis=-1, keepdims=True)
        return np.divide(totals, sums, out=np.zeros_like(totals), where=sums > 0)

    def divergence(self, min_tokens: int = 1) -> dict[str, list[float | None]]:
        """Per layer: the Jensen-Shannon divergence (bits) between languages' expert distributions,
        as the mean over language pairs and as the generalised JSD of all of them."""
        keep = self.tokens >= max(1, min_tokens)
        shares = self.shares()[keep]
        pairwise: list[float | None] = []
        general: list[float | None] = []
        for layer in range(len(self.layers)):
            dists = shares[:, layer]
            pairs = [js_divergence(dists[[a, b]]) for a, b in itertools.combinations(range(len(dists)), 2)]
            pairwise.append(float(np.mean(pairs)) if pairs else None)
            general.append(js_divergence(dists) if len(dists) > 1 else None)
        return {"mean_pairwise_jsd": pairwise, "generalized_jsd": general}

    def to_json(self, expert_names: list[str] | None = None, min_tokens: int = 1) -> dict:
        shares, agreement, load = self.shares(), self.agreement(), self.load()
        blind = self.blind_agreement()
        names = expert_names or [str(e) for e in range(self.num_experts)]
        overall_agree = [
            float(self.agree[:, position].sum() / self.known.sum()) if self.known.sum() else None
            for position in range(len(self.layers))
        ]
        return {
            "layers": self.layers,
            "num_experts": self.num_experts,
            "top_k": self.top_k,
            "experts": names,
            "chance_agreement": self.top_k / self.num_experts,
            "tokens": {lang: int(n) for lang, n in zip(self.languages, self.tokens, strict=True)},
            "expert_share": {
                str(layer): {
                    lang: dict(zip(names, np.round(shares[i, position], 6).tolist(), strict=True))
                    for i, lang in enumerate(self.languages)
                }
                for position, layer in enumerate(self.layers)
            },
            "agreement": {
                str(layer): {
                    lang: (
                        None
                        if math.isnan(agreement[i, position])
                        else round(float(agreement[i, position]), 6)
                    )
                    for i, lang in enumerate(self.languages)
                }
                for position, layer in enumerate(self.layers)
            },
            "agreement_overall": {str(layer): overall_agree[p] for p, layer in enumerate(self.layers)},
            "blind_agreement": {  # what a router blind to language scores: the baseline of "agreement"
                str(layer): {
                    lang: None if math.isnan(blind[i, position]) else round(float(blind[i, position]), 6)
                    for i, lang in enumerate(self.languages)
                }
                for position, layer in enumerate(self.layers)
            },
            "load_balance": {
                str(layer): balance_summary(load[position], names)
                for position, layer in enumerate(self.layers)
            },
            "divergence": {
                k: dict(zip(map(str, self.layers), v, strict=True))
                for k, v in self.divergence(min_tokens).items()
            },
        }


def entropy_bits(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def js_divergence(distributions: np.ndarray) -> float:
    """Generalised Jensen-Shannon divergence (bits, equal weights) of the rows of `distributions`:
    H(mean) - mean(H). For two rows it lies in [0, 1]."""
    distributions = np.asarray(distributions, dtype=float)
    mixture = distributions.mean(axis=0)
    return max(0.0, entropy_bits(mixture) - float(np.mean([entropy_bits(row) for row in distributions])))


def balance_summary(load: np.ndarray, names: list[str]) -> dict:
    """Expert load fractions plus three balance numbers: coefficient of variation (0 = perfectly
    even), max/mean (1 = even), and entropy normalised to [0, 1] (1 = even)."""
    mean = float(load.mean()) if load.size else 0.0
    return {
        "load": dict(zip(names, np.round(load, 6).tolist(), strict=True)),
        "cv": float(load.std() / mean) if mean else None,
        "max_over_mean": float(load.max() / mean) if mean else None,
        "normalized_entropy": entropy_bits(load) / math.log2(len(load))
        if len(load) > 1 and load.sum()
        else None,
    }


def ordered_languages(stats: RoutingStats, family_expert: dict[str, int | None]) -> list[int]:
    """Language rows grouped by family expert (unknown last), then by code."""
    return sorted(
        range(len(stats.languages)),
        key=lambda i: (
            family_expert.get(stats.languages[i]) is None,
            family_expert.get(stats.languages[i]) or 0,
            stats.languages[i],
        ),
    )


def write_routing_plots(
    stats: RoutingStats, expert_names: list[str], family_expert: dict[str, int | None], directory: Path
) -> list[Path]:
    """Heatmap per MoE layer, agreement per language, expert load per layer."""
    order = ordered_languages(stats, family_expert)
    languages = [stats.languages[i] for i in order]
    shares = stats.shares()[order]
    written = []
    for position, layer in enumerate(stats.layers):
        written.append(
            plots.share_heatmap(
                shares[:, position],
                languages,
                [f"{e}: {name}" for e, name in enumerate(expert_names)],
                f"Layer {layer}: share of each language's tokens routed to each expert (top-{stats.top_k})",
                directory / f"routing_share_layer{layer:02d}.png",
                highlight=[family_expert.get(lang) for lang in languages],
                row_groups=[str(family_expert.get(lang)) for lang in languages],
            )
        )
    agreement = stats.agreement()[order]
    if np.isfinite(agreement).any():
        written.append(
            plots.grouped_bars(
                {
                    f"layer {layer}": np.nan_to_num(agreement[:, p]).tolist()
                    for p, layer in enumerate(stats.layers)
                },
                languages,
                "Stock top-k router picks the family expert",
                "tokens (%)",
                directory / "routing_agreement.png",
                reference=stats.top_k / stats.num_experts,
                reference_label=f"chance ({stats.top_k}/{stats.num_experts})",
                ylim=(0, 105),
            )
        )
    load = stats.load()
    written.append(
        plots.grouped_bars(
            {f"layer {layer}": load[p].tolist() for p, layer in enumerate(stats.layers)},
            [f"{e}: {n}" for e, n in enumerate(expert_names)],
            "Expert load (share of all top-k assignments)",
            "assignments (%)",
            directory / "expert_load.png",
            reference=1 / stats.num_experts,
            reference_label="even",
        )
    )
    return written


def write_divergence_plot(stats: RoutingStats, path: Path, title: str, min_tokens: int = 1) -> Path:
    divergence = stats.divergence(min_tokens)
    series = {}
    for key, label in (("mean_pairwise_jsd", "mean pairwise JSD"), ("generalized_jsd", "generalised JSD")):
        points = [
            (layer, value)
            for layer, value in zip(stats.layers, divergence[key], strict=True)
            if value is not None
        ]
        if points:
            series[label] = ([p[0] for p in points], [p[1] for p in points])
    return plots.line_plot(
        series,
        title,
        "decoder layer",
        "Jensen-Shannon divergence (bits)",
        path,
        markers=True,
        integer_x=True,
        zero_based=True,
    )
