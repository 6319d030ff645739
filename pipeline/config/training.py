"""The training side's sections: Post-MoE training, evaluation, the run report and the experiments run by
their own commands (moe_train/)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipeline.config.base import Section
from pipeline.config.curation import BenchmarkRef


class SamplingSection(Section):
    """The order of one epoch of training rows (moe_train/data.py)."""

    mode: Literal["phases", "weighted_shuffle"] = Field(
        "phases",
        description="weighted_shuffle: the paper's sampler, a weighted shuffle without replacement where a "
        "higher `source_priorities` weight comes earlier in expectation; phases: rounds by ascending "
        "priority, so the highest priority comes last",
    )


class PackingSection(Section):
    """How documents are packed into rows of `seq_len` tokens (moe_train/data.py)."""

    chat: Literal["whole", "split"] = Field(
        "whole", description="whole: a chat example never spans two rows (the paper); split: cut it like text"
    )
    overlong: Literal["truncate", "skip"] = Field(
        "truncate",
        description="a chat example longer than seq_len: keep its first seq_len tokens (prompt and the start of "
        "the answer), or leave it out",
    )
    lookahead: int = Field(
        8,
        ge=0,
        description="examples that may wait for the next row while shorter ones fill this one (0: pad)",
    )
    cross_document_attention: bool = Field(
        False,
        description="the original: attention and position ids run across the documents of a row; "
        "medbabel default: each document attends only to itself",
    )


Routing = Literal["hybrid", "language_specific", "free", "dense"]


class TrainSection(Section):
    """Post-MoE training (moe_train/): upcycling, hybrid-k routing, packed data, the loop, export."""

    # model
    model: str = Field(
        "tiny",
        description="a preset (tiny, qwen2-0.5b, qwen2-1.5b: random init), a local dense Qwen2 checkpoint "
        "dir (upcycled) or a Qwen2-MoE checkpoint dir (trained further)",
    )
    tokenizer: str | None = Field(
        None, description="tokenizer dir; default: the checkpoint's own, else the bundled Qwen2 tokenizer"
    )
    routing: Routing = Field(
        "hybrid",
        description="hybrid: top-k with the token's family expert forced in (the paper); language_specific: "
        "top-1 forced to the family expert with weight 1 (top_k 1, shared_expert optional); free: stock "
        "top-k; dense: no upcycling, the dense model trained on the same data",
    )
    moe_layers: int = Field(2, ge=1, description="how many of the last decoder layers become MoE")
    top_k: int = Field(2, ge=1)
    norm_topk_prob: bool = Field(False, description="renormalise the top-k weights (the paper: false)")
    shared_expert: bool = Field(False, description="add a shared 'general' expert to each MoE layer")
    router_aux_loss_coef: float = Field(0.0, ge=0, description="load-balancing loss (the paper: none)")
    router_supervision_coef: float = Field(
        0.0, ge=0, description="cross-entropy of router logits toward the family expert"
    )
    # data
    seq_len: int = Field(4096, ge=8)
    languages: list[str] = Field(default_factory=list, description="[] = every language in the shards")
    families: list[str] = Field(default_factory=list, description="[] = every family")
    source_types: list[str] = Field(default_factory=list, description="[] = every source type")
    source_priorities: dict[str, float] = Field(
        default_factory=dict,
        description="source name, type or glob -> priority: the weight of sampling.mode weighted_shuffle "
        "(higher earlier, default 1), the phase of mode phases (lower first, default 0)",
    )
    source_repeats: dict[str, float] = Field(
        default_factory=dict,
        description="source name, type or glob -> times seen per epoch (fractions allowed)",
    )
    chat_template: str = "User:{q}\nAssistant:{a}<|endoftext|>"
    sampling: SamplingSection = SamplingSection()
    packing: PackingSection = PackingSection()
    # optimisation
    micro_batch_size: int = Field(1, ge=1, description="sequences per GPU per micro-step")
    grad_accum: int = Field(1, ge=1)
    max_steps: int = Field(100, ge=1)
    lr: float = Field(3e-4, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup_steps: int = Field(10, ge=0)
    warmup_ratio: float | None = Field(
        None, ge=0, le=1, description="warmup as a share of the schedule's horizon; overrides warmup_steps"
    )
    cosine_horizon: float = Field(
        1.0,
        ge=1.0,
        description="the cosine reaches min_lr_ratio at horizon x max_steps; the original: 1.35 with "
        "min_lr_ratio 0, so training stops 74% into its cosine",
    )
    weight_decay: float = Field(0.1, ge=0)
    decay_norm_weights: bool = Field(
        False,
        description="also decay norm weights (the original does: its no-decay list names 'LayerNorm.weight', "
        "which no Qwen2 parameter matches); biases are never decayed",
    )
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = Field(1.0, gt=0)
    # evaluation, logging, checkpoints
    eval_every: int = Field(50, ge=1)
    eval_batches: int = Field(8, ge=1, description="validation micro-batches per evaluation")
    log_every: int = Field(1, ge=1)
    checkpoint_every: int = Field(50, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    checkpoint_format: Literal["auto", "full", "sharded"] = Field(
        "auto",
        description="sharded: each rank writes its shard (torch.distributed.checkpoint), resumable at "
        "another world size; full: one unsharded file set written by rank 0; auto: sharded with several "
        "processes, full with one",
    )
    export_dtype: Literal["bfloat16", "float32"] = "bfloat16"
    # speed
    device: str = Field("auto", description="auto (cuda when available), cuda, cpu")
    attention: Literal["auto", "sdpa", "varlen"] = Field(
        "auto", description="auto: FlashAttention varlen on CUDA, SDPA with a block-diagonal mask on CPU"
    )
    experts_implementation: Literal["grouped_mm", "eager", "batched_mm"] = "grouped_mm"
    bf16_params: bool = Field(
        True,
        description="one CUDA device: bf16 parameters compute, float32 master weights train "
        "(false: float32 parameters under bf16 autocast); several processes use FSDP2 mixed precision",
    )
    compile: bool = False
    activation_checkpointing: bool = False
    loss_chunk_size: int = Field(4096, ge=1, description="tokens per chunk of the fused cross-entropy")
    loss_kernel: Literal["medbabel", "liger", "cce"] = Field(
        "medbabel",
        description="fused linear cross-entropy: medbabel's own, Liger-Kernel's or cut cross-entropy's "
        "(the last two need the [kernels] extra; bench/loss_kernels_gpu.py compares them)",
    )
    reshard_after_forward: bool = Field(
        True, description="FSDP2: free each layer's gathered weights after its forward (less memory)"
    )
    cpu_offload: bool = Field(
        False, description="FSDP2: keep the float32 weight shards, gradients and AdamW state in CPU memory"
    )

    @model_validator(mode="after")
    def _routing_fits(self) -> TrainSection:
        if self.routing == "language_specific" and self.top_k != 1:
            raise ValueError(
                f"train.routing language_specific routes each token to its family expert alone: set top_k: 1 "
                f"(got {self.top_k}); shared_expert: true adds the shared expert of the original"
            )
        return self


class EvalSection(Section):
    model: str | None = Field(
        None, description="checkpoint directory to evaluate; OUT/train/export when unset"
    )
    benchmarks: list[BenchmarkRef] = Field(
        default_factory=list, description="benchmark files to evaluate on (name, path, format, language)"
    )
    modes: list[Literal["loglik", "generate"]] = Field(default_factory=lambda: ["loglik", "generate"])
    shots: int = Field(3, ge=0, description="solved examples per prompt, drawn from the same source")
    max_prompt_tokens: int = Field(3072, description="drop the last examples while a prompt is longer")
    protocol: Literal["apollomoe", "medbabel"] = Field(
        "apollomoe",
        description="apollomoe: the original ApolloMoE code's prompts, extraction, 256 new tokens and "
        "aggregation; medbabel: medbabel's variant (docs/eval_report.md lists the differences)",
    )
    max_new_tokens: int | None = Field(
        None, ge=1, description="generate mode; unset: the protocol's (apollomoe 256, medbabel 32)"
    )
    max_questions_per_language: int | None = Field(None, description="seeded subsample per language")
    batch_size: int = Field(8, ge=1)
    device: str = Field("auto", description="auto (CUDA when present, else CPU), cpu, cuda, cuda:1 ...")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bfloat16 on GPU, float32 on CPU"
    )
    perplexity: bool = Field(True, description="validation loss per language/family on the validation shards")
    valid_max_docs_per_language: int | None = Field(200, description="valid documents scored per language")
    valid_max_tokens: int = Field(1024, description="each valid document is truncated to this many tokens")
    routing: bool = Field(True, description="routing statistics and heatmaps of the MoE layers")
    routing_min_tokens: int = Field(
        1, description="languages with fewer routed tokens are left out of divergences"
    )


class SpreadSection(Section):
    """`python -m moe_train.spread`: the "Spread Out in the End" experiment (not part of `make eval`)."""

    steps: int = Field(30, ge=0, description="training steps")
    lr: float = Field(1e-3, description="peak learning rate (its train.lr)")
    seq_len: int = Field(256, description="packed sequence length (its train.seq_len)")


class ExperimentsSection(Section):
    """Experiments run by their own commands (moe_train.spread, moe_train.sweep), outside the stage DAG."""

    spread: SpreadSection = SpreadSection()


class ReportSection(Section):
    title: str = "medbabel run report"
    max_curve_points: int = Field(2000, description="training curves are thinned to at most this many points")
