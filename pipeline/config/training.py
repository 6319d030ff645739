"""The training side's sections: Post-MoE training, evaluation and the run report (moe_train/)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.config.base import Section
from pipeline.config.curation import BenchmarkRef


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
    moe_layers: int = Field(2, ge=1, description="how many of the last decoder layers become MoE")
    top_k: int = Field(2, ge=1)
    norm_topk_prob: bool = Field(False, description="renormalise the top-k weights (the paper: false)")
    shared_expert: bool = Field(False, description="add a shared 'general' expert to each MoE layer")
    router_aux_loss_coef: float = Field(0.0, ge=0, description="load-balancing loss (the paper: none)")
    router_supervision_coef: float = Field(
        0.0, ge=0, description="cross-entropy of router logits toward the family expert"
    )
    hybrid_routing: bool = Field(True, description="force each token's family expert into its top-k")
    # data
    seq_len: int = Field(4096, ge=8)
    languages: list[str] = Field(default_factory=list, description="[] = every language in the shards")
    families: list[str] = Field(default_factory=list, description="[] = every family")
    source_types: list[str] = Field(default_factory=list, description="[] = every source type")
    source_priorities: dict[str, float] = Field(
        default_factory=dict,
        description="source name or type -> priority; lower priorities come first in each epoch",
    )
    source_repeats: dict[str, float] = Field(
        default_factory=dict, description="source name or type -> times seen per epoch (fractions allowed)"
    )
    chat_template: str = "User:{q}\nAssistant:{a}<|endoftext|>"
    # optimisation
    micro_batch_size: int = Field(1, ge=1, description="sequences per GPU per micro-step")
    grad_accum: int = Field(1, ge=1)
    max_steps: int = Field(100, ge=1)
    lr: float = Field(3e-4, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup_steps: int = Field(10, ge=0)
    weight_decay: float = Field(0.1, ge=0)
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


class EvalSection(Section):
    model: str | None = Field(
        None, description="checkpoint directory to evaluate; OUT/train/export when unset"
    )
    benchmarks: list[BenchmarkRef] = Field(
        default_factory=list, description="XMedBench/ApolloMoE-format MCQ files (.jsonl or .jsonl.gz)"
    )
    modes: list[Literal["loglik", "generate"]] = Field(default_factory=lambda: ["loglik", "generate"])
    shots: int = Field(3, ge=0, description="solved examples per prompt, drawn from the same source")
    max_prompt_tokens: int = Field(3072, description="drop the last examples while a prompt is longer")
    max_new_tokens: int = Field(
        32, description="generate mode: decoding stops earlier at the first full line"
    )
    max_questions_per_language: int | None = Field(None, description="seeded subsample per language")
    batch_size: int = Field(8, ge=1)
    device: str = Field("auto", description="auto (CUDA when present, else CPU), cpu, cuda, cuda:1 ...")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bfloat16 on GPU, float32 on CPU"
    )
    perplexity: bool = Field(True, description="validation loss per language/family on the valid shards")
    valid_max_docs_per_language: int | None = Field(200, description="valid documents scored per language")
    valid_max_tokens: int = Field(1024, description="each valid document is truncated to this many tokens")
    routing: bool = Field(True, description="routing statistics and heatmaps of the MoE layers")
    routing_min_tokens: int = Field(
        1, description="languages with fewer routed tokens are left out of divergences"
    )
    spread_steps: int = Field(30, ge=0, description="`moe_train.spread`: training steps")
    spread_lr: float = Field(1e-3, description="`moe_train.spread`: peak learning rate (train.lr)")
    spread_seq_len: int = Field(256, description="`moe_train.spread`: packed sequence length (train.seq_len)")


class ReportSection(Section):
    title: str = "medbabel run report"
    max_curve_points: int = Field(2000, description="training curves are thinned to at most this many points")
