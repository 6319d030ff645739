"""Training-time routing: the stock top-k router, with each token's language-family expert forced in.

`train.routing` picks the forcing (`FORCING`): `hybrid` (the paper) as below; `language_specific` (the
paper's ablation, FreedomIntelligence/ApolloMoE src/variants/upcycling/language_specific_routing/
modeling_upcycling_qwen2_moe.py: top-1 replaced by the family expert with weight 1 during training);
`free` (no forcing: the stock router). Tokens without a family are routed like the stock model.

For every token the router's softmax probabilities (float32) give the top-k experts. If the token's
family expert (from its record's `expert_id`) is not among them, it replaces the lowest-weighted of the
k. The combine weights are the raw softmax probabilities of the chosen experts (the paper), or those
renormalised to sum to 1 (`norm_topk_prob`, the stock flag, so training and inference agree).

Wiring. `install_hybrid_routing(model)` swaps each MoE block's `Qwen2MoeTopKRouter` for a
`HybridTopKRouter`: a subclass holding the *same* weight parameter (so state-dict keys and the exported
checkpoint are unchanged) that reads the current batch's per-token expert ids from a shared
`RoutingState`. Without expert ids (evaluation, generation) it is exactly the stock router; the exported
model is built from the stock class and never sees this code. The router also keeps its logits of the
last forward in the state, for the supervision loss and the agreement rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from pipeline.compat import Qwen2MoeTopKRouter

NO_EXPERT = -1  # expert id of tokens without a family (forcing is skipped for them)
FORCING = {"hybrid": "hybrid", "language_specific": "language_specific", "free": None, "dense": None}


def hybrid_topk(
    probs: torch.Tensor, expert_ids: torch.Tensor, k: int, renormalize: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k experts per token with the family expert forced in.

    probs: (tokens, experts) router probabilities; expert_ids: (tokens,) family expert per token, or
    NO_EXPERT (-1) for plain top-k. Returns (weights, indices), each (tokens, k): the chosen experts'
    probabilities (renormalised to sum to 1 when `renormalize`) and their ids. When the family expert is
    not in the top-k it takes the last (lowest-weighted) slot. Equivalently: the k-subset of largest total
    probability among those containing the family expert.
    """
    top_values, top_indices = torch.topk(probs, k, dim=-1)
    family = expert_ids.to(top_indices.dtype).unsqueeze(-1)  # (tokens, 1)
    has_family = family >= 0
    missing = has_family & (top_indices != family).all(dim=-1, keepdim=True)  # (tokens, 1)
    last_slot = torch.zeros_like(top_indices, dtype=torch.bool)
    last_slot[:, -1] = True
    indices = torch.where(missing & last_slot, family.clamp(min=0), top_indices)
    weights = torch.where(
        missing & last_slot, probs.gather(-1, family.clamp(min=0)).expand_as(top_values), top_values
    )
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, indices


def route(
    probs: torch.Tensor, expert_ids: torch.Tensor | None, k: int, renormalize: bool, forcing: str | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights, indices) of the experts each token goes to, under a forcing of `FORCING`."""
    if forcing is None or expert_ids is None:
        weights, indices = torch.topk(probs, k, dim=-1)
        return (weights / weights.sum(dim=-1, keepdim=True) if renormalize else weights), indices
    if forcing == "language_specific":
        weights, indices = torch.topk(probs, k, dim=-1)
        if renormalize:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        family = expert_ids.to(indices.dtype).unsqueeze(-1).expand_as(indices)
        has_family = family >= 0
        return torch.where(has_family, 1.0, weights), torch.where(has_family, family, indices)
    return hybrid_topk(probs, expert_ids, k, renormalize)


@dataclass
class RoutingState:
    """What the hybrid routers share with the training loop for one forward pass.

    expert_ids: flat (batch * seq,) family expert per token, or None to route like the stock model.
    routers: the hybrid routers in layer order; each keeps its own logits of the last forward (a shared
    list that routers append to would make torch.compile guard on its length and compile every MoE layer
    twice: once for the first layer, which finds it empty, once for the rest).
    """

    expert_ids: torch.Tensor | None = None
    routers: list[HybridTopKRouter] = field(default_factory=list)
    forcing: str | None = "hybrid"  # a value of FORCING

    def begin(self, expert_ids: torch.Tensor | None) -> None:
        self.expert_ids = None if expert_ids is None else expert_ids.reshape(-1)
        for router in self.routers:
            router.last_logits = None

    @property
    def router_logits(self) -> list[torch.Tensor]:
        """Each MoE layer's (tokens, experts) router logits of the last forward, in layer order."""
        return [router.last_logits for router in self.routers if router.last_logits is not None]


class HybridTopKRouter(Qwen2MoeTopKRouter):
    """The stock Qwen2-MoE router plus family-expert forcing when the batch carries expert ids."""

    def __init__(self, stock: Qwen2MoeTopKRouter, state: RoutingState):
        torch.nn.Module.__init__(self)
        self.top_k = stock.top_k
        self.num_experts = stock.num_experts
        self.norm_topk_prob = stock.norm_topk_prob
        self.hidden_dim = stock.hidden_dim
        self.weight = stock.weight  # the same Parameter: identical state-dict key and storage
        self.state = state
        self.last_logits: torch.Tensor | None = None

    def forward(self, hidden_states: torch.Tensor):
        hidden_states = hidden_states.reshape(-1, self.hidden_dim)
        router_logits = F.linear(hidden_states, self.weight)
        probs = F.softmax(router_logits, dtype=torch.float32, dim=-1)
        weights, indices = route(
            probs, self.state.expert_ids, self.top_k, self.norm_topk_prob, self.state.forcing
        )
        self.last_logits = router_logits
        return router_logits, weights.to(router_logits.dtype), indices


def install_hybrid_routing(model: torch.nn.Module, forcing: str | None = "hybrid") -> RoutingState:
    """Replace every stock router in `model` by a HybridTopKRouter sharing one RoutingState."""
    state = RoutingState(forcing=forcing)
    for module in list(model.modules()):
        gate = getattr(module, "gate", None)
        if isinstance(gate, Qwen2MoeTopKRouter) and not isinstance(gate, HybridTopKRouter):
            module.gate = HybridTopKRouter(gate, state)
            state.routers.append(module.gate)
    return state


def router_supervision_loss(router_logits: torch.Tensor, expert_ids: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of one layer's router logits toward each token's family expert.

    Tokens without a family (NO_EXPERT) are ignored. Returns a sum; the caller normalises.
    """
    return F.cross_entropy(
        router_logits.float(), expert_ids.reshape(-1).long(), ignore_index=NO_EXPERT, reduction="sum"
    )


@torch.no_grad()
def routing_stats(
    router_logits: torch.Tensor, expert_ids: torch.Tensor, k: int, forcing: str | None = "hybrid"
) -> dict[str, torch.Tensor]:
    """Per-token routing facts of one MoE layer (all detached, on the logits' device).

    agree: (tokens,) bool, the stock top-k already contains the family expert (only meaningful where
    the token has one); has_family: (tokens,) bool; load: (experts,) how many token-slots each expert
    received under the training routing (`forcing`); stock_load: (experts,) the same under the stock
    top-k, over the tokens with a family (what a language-blind router's agreement is measured against).
    """
    probs = F.softmax(router_logits.float(), dim=-1)
    expert_ids = expert_ids.reshape(-1)
    stock = torch.topk(probs, k, dim=-1).indices
    has_family = expert_ids >= 0
    agree = (stock == expert_ids.unsqueeze(-1)).any(dim=-1) & has_family
    _, routed = route(probs, expert_ids, k, False, forcing)
    return {
        "agree": agree,
        "has_family": has_family,
        "load": _counts(routed, probs.shape[-1]),
        "stock_load": _counts(stock[has_family], probs.shape[-1]),
    }


def _counts(indices: torch.Tensor, n_experts: int) -> torch.Tensor:
    flat = indices.reshape(-1)
    load = torch.zeros(n_experts, device=flat.device, dtype=torch.float64)
    load.scatter_add_(0, flat, torch.ones_like(flat, dtype=torch.float64))  # bincount would sync the GPU
    return load


def blind_agreement(stock_load: torch.Tensor, k: int) -> torch.Tensor:
    """Per expert: the agreement a language-blind router would score for a language whose family is that
    expert, i.e. the share of tokens whose stock top-k holds it (its load share times k)."""
    return (stock_load / stock_load.sum().clamp(min=1) * k).clamp(max=1.0)


def load_entropy(load: torch.Tensor) -> float:
    """Entropy of an expert load distribution over log(experts): 1 = perfectly even, 0 = one expert."""
    p = load.double() / load.sum().clamp(min=1)
    nonzero = p[p > 0]
    return float(-(nonzero * nonzero.log()).sum() / math.log(len(load))) if len(load) > 1 else 0.0


class RoutingTally:
    """Running sums of `routing_stats` (and of the router supervision loss) over one step's
    micro-batches, as float64 tensors on the device, so they are summed over ranks and read back with
    the step's other numbers instead of synchronising the GPU per layer."""

    def __init__(
        self,
        layers: list[int],
        num_experts: int,
        top_k: int,
        device: torch.device,
        forcing: str | None = "hybrid",
    ):
        self.layers = layers  # decoder-layer index of each MoE layer, in forward order
        self.top_k = top_k
        self.forcing = forcing  # the training routing, whose expert load is counted
        self.agree = torch.zeros((), dtype=torch.float64, device=device)
        self.has_family = torch.zeros((), dtype=torch.float64, device=device)
        self.supervision = torch.zeros((), dtype=torch.float64, device=device)
        self.load = torch.zeros(max(len(layers), 1), num_experts, dtype=torch.float64, device=device)

    def add(self, router_logits: list[torch.Tensor], expert_ids: torch.Tensor) -> None:
        for position, logits in enumerate(router_logits[: len(self.layers)]):
            stats = routing_stats(logits.detach(), expert_ids, self.top_k, self.forcing)
            self.agree += stats["agree"].sum()
            self.has_family += stats["has_family"].sum()
            self.load[position] += stats["load"]

    def sums(self) -> dict[str, torch.Tensor]:
        return {
            "router_agree": self.agree,
            "router_has_family": self.has_family,
            "router_supervision": self.supervision,
            "expert_load": self.load,
        }

    def metrics(self, values: dict, routed_tokens: float, supervised: bool) -> dict:
        """Agreement rate, each layer's expert load as shares, and the mean supervision loss per routed
        token, from `sums()` as read back to the host (summed over ranks)."""
        if not self.layers:
            return {}
        metrics = {
            "router_agreement": values["router_agree"] / max(values["router_has_family"], 1.0),
            "expert_load": {
                f"layer_{layer}": [x / max(sum(load), 1.0) for x in load]
                for layer, load in zip(self.layers, values["expert_load"], strict=True)
            },
        }
        if supervised:
            metrics["router_supervision_loss"] = values["router_supervision"] / routed_tokens
        return metrics
