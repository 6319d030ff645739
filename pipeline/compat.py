"""Every place medbabel relies on datatrove's or transformers' internals, gathered in one module.

Public APIs are used directly elsewhere; what is here is private or undocumented: names with a
leading underscore, functions patched in place, classes imported from modeling modules, attributes
read off library modules, and datatrove's on-disk layout of completions and stats. tests/test_compat.py
checks each against the installed libraries, so a pinned upgrade that moves, renames or re-signs one
fails there, by name, instead of deep inside a run. VERIFIED_WITH records the versions it was
checked with; bump it with the pins in pyproject.toml once that test passes.

The transformers names are loaded on first use (module `__getattr__`), so importing this module
does not import torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from copy import deepcopy
from pathlib import Path
from types import SimpleNamespace

from datatrove.executor import LocalPipelineExecutor
from datatrove.utils.stats import PipelineStats

VERIFIED_WITH = {"datatrove": "0.10.1", "transformers": "5.23.0"}


# ---- datatrove: logging ---------------------------------------------------------------------------
def route_datatrove_logging(console_logger: Callable[[], None], task_logger: Callable) -> None:
    """Replace datatrove's console logger set-up and the per-task logger its executors open (module
    functions, looked up by name when called: `PipelineExecutor._run_for_rank` calls
    `add_task_logger(logging_dir, rank, local_rank, node_rank=...)`)."""
    import datatrove.executor.base as executor_base
    from datatrove.utils import logging as datatrove_logging

    datatrove_logging.setup_default_logger = console_logger
    executor_base.add_task_logger = task_logger


def datatrove_colorize_logs() -> bool | None:
    from datatrove.utils import logging as datatrove_logging

    return datatrove_logging.DATATROVE_COLORIZE_LOGS


# ---- datatrove: the local executor ------------------------------------------------------------------
class LocalExecutorWithHooks(LocalPipelineExecutor):
    """datatrove's local executor with its private per-rank entry point (`_run_for_rank`) opened up:
    `before_rank` runs in the worker before each task, and `run_in_process` runs the incomplete ranks
    one after another in this process, as datatrove's own single-worker loop does, without the
    multiprocess Manager it starts only to hand out worker slots."""

    def before_rank(self) -> None:
        """Called in the worker process before each task."""

    def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1) -> PipelineStats:
        self.before_rank()
        return super()._run_for_rank(rank, local_rank, node_rank)

    def run_in_process(self) -> PipelineStats | None:
        self._launched = True  # read by executors that `depends` on this one
        ranks = self.get_incomplete_ranks(
            range(self.local_rank_offset, self.local_rank_offset + self.local_tasks)
        )
        if not ranks:
            return None
        self.save_executor_as_json()
        pipeline, stats = self.pipeline, []
        for rank in ranks:
            self.pipeline = deepcopy(pipeline)  # a fresh copy per task, as datatrove gives each worker
            stats.append(self._run_for_rank(rank))
        merged = sum(stats, start=PipelineStats())
        with self.logging_dir.open("stats.json", "wt") as statsfile:
            merged.save_to_disk(statsfile)
        return merged


# ---- datatrove: what a run leaves on disk ---------------------------------------------------------
def completion_file(logging_dir: Path, rank: int) -> Path:
    """The file datatrove writes when task `rank` has finished (what it checks to skip the task)."""
    return Path(logging_dir) / "completions" / f"{rank:05d}"


def task_stats_files(logs_dir: Path) -> Iterator[Path]:
    """Per-task stats of every pipeline under a stage's logs dir: `<pipeline>/stats/<rank>.json`."""
    return iter(sorted(Path(logs_dir).glob("*/stats/*.json")))


def stat_totals(step_stats: list[dict]) -> Iterator[tuple[str, float]]:
    """(name, total) of every stat in one task's stats file: a list of steps, each with `stats`
    mapping a name to a number or to a {total, ...} dict."""
    for step in step_stats:
        for key, value in step.get("stats", {}).items():
            yield key, value["total"] if isinstance(value, dict) else value


# ---- transformers ---------------------------------------------------------------------------------
# The stock Qwen2-MoE router (subclassed by moe_train.routing.HybridTopKRouter, which copies these
# attributes and returns (router_logits, weights, indices) from forward as the stock one does).
ROUTER_ATTRIBUTES = ("top_k", "num_experts", "norm_topk_prob", "hidden_dim", "weight")
# What `grouped_mm_experts_forward` reads from an experts module (two of them private).
EXPERTS_ATTRIBUTES = (
    "gate_up_proj",
    "down_proj",
    "num_experts",
    "has_gate",
    "has_bias",
    "is_transposed",
    "has_post_expert_norm",
    "_is_expert_parallel",
    "_apply_gate",
    "act_fn",
)
_QWEN2_MOE = "transformers.models.qwen2_moe.modeling_qwen2_moe"
_LAZY = {
    "Qwen2MoeTopKRouter": _QWEN2_MOE,
    "load_balancing_loss_func": _QWEN2_MOE,
    "ALL_EXPERTS_FUNCTIONS": "transformers.integrations.moe",
    "ExpertsInterface": "transformers.integrations.moe",
    "grouped_mm_experts_forward": "transformers.integrations.moe",
}


def experts_in_dtype(experts, dtype) -> SimpleNamespace:
    """The attributes `grouped_mm_experts_forward` reads from an experts module, weights cast to `dtype`."""
    view = SimpleNamespace(**{name: getattr(experts, name) for name in EXPERTS_ATTRIBUTES})
    view.gate_up_proj = experts.gate_up_proj.to(dtype)
    view.down_proj = experts.down_proj.to(dtype)
    return view


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
