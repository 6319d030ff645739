"""pipeline/compat.py against the installed datatrove and transformers: each internal medbabel relies
on still exists with the shape it is used in. A failure here names what a library upgrade changed."""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import re

import pytest
import tomllib
from conftest import ROOT
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.base import PipelineStep

from pipeline import compat, console
from pipeline.console import _task_logger


def _params(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_verified_versions_are_the_pinned_and_installed_ones():
    """Bumping a pin means re-checking this module: the pins, the installed versions and
    VERIFIED_WITH must agree (update VERIFIED_WITH once the tests below pass on the new version)."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for name, verified in compat.VERIFIED_WITH.items():
        pins = [d for d in dependencies if re.match(rf"{name}(\[[^\]]*\])?==", d)]
        assert pins and pins[0].endswith(f"=={verified}"), (
            f"pyproject pins {pins}, compat verified {verified}"
        )
        assert importlib.metadata.version(name) == verified


# ---- datatrove ------------------------------------------------------------------------------------
def test_datatrove_loggers_are_looked_up_by_name_with_our_signatures():
    """compat patches module globals: datatrove must still call them by those names, and its own
    task logger (left in datatrove.utils.logging) must take the arguments ours takes."""
    import datatrove.executor.base as executor_base
    from datatrove.utils import logging as datatrove_logging

    console.install()

    assert "add_task_logger" in executor_base.PipelineExecutor._run_for_rank.__code__.co_names
    assert executor_base.add_task_logger is _task_logger
    assert _params(datatrove_logging.add_task_logger) == ["logging_dir", "rank", "local_rank", "node_rank"]
    assert _params(_task_logger) == _params(datatrove_logging.add_task_logger)
    assert "setup_default_logger" in datatrove_logging.close_task_logger.__code__.co_names
    assert compat.datatrove_colorize_logs() in (True, False, None)


def test_local_executor_internals(tmp_path):
    assert _params(LocalPipelineExecutor._run_for_rank) == ["self", "rank", "local_rank", "node_rank"]
    executor = LocalPipelineExecutor(pipeline=[], tasks=3, workers=1, logging_dir=str(tmp_path))
    for name in ("_launched", "local_rank_offset", "local_tasks", "depends", "workers", "pipeline"):
        assert hasattr(executor, name), name
    executor.mark_rank_as_completed(2)
    assert compat.completion_file(tmp_path, 2).is_file()
    assert executor.get_incomplete_ranks(range(3)) == [0, 1]


class _Count(PipelineStep):
    name = "count"

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        self.stat_update("seen", value=rank + 1)
        yield from data or ()


def test_hooked_executor_runs_ranks_in_process_and_leaves_the_stats_layout(tmp_path):
    """The in-process loop completes every rank, calls the hook per task, and datatrove's stats files
    are where and in the shape compat reads them."""
    calls = []

    class Hooked(compat.LocalExecutorWithHooks):
        def before_rank(self) -> None:
            calls.append(1)

    logs = tmp_path / "logs"
    executor = Hooked(pipeline=[_Count()], tasks=2, workers=1, logging_dir=str(logs / "run"))
    stats = executor.run_in_process()
    assert stats is not None and len(calls) == 2
    assert all(compat.completion_file(logs / "run", rank).is_file() for rank in range(2))
    files = list(compat.task_stats_files(logs))
    assert len(files) == 2
    totals = [dict(compat.stat_totals(json.loads(f.read_text()))) for f in files]
    assert sorted(t["seen"] for t in totals) == [1, 2]
    assert executor.run_in_process() is None  # everything complete: nothing re-runs


# ---- transformers ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_moe_layer():
    torch = pytest.importorskip("torch")
    from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

    torch.manual_seed(0)
    config = Qwen2MoeConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        moe_intermediate_size=8,
        shared_expert_intermediate_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_experts=4,
        num_experts_per_tok=2,
    )
    return Qwen2MoeForCausalLM(config).model.layers[0].mlp


def test_qwen2_moe_router_shape(tiny_moe_layer):
    import torch

    router = tiny_moe_layer.gate
    assert isinstance(router, compat.Qwen2MoeTopKRouter)
    for name in compat.ROUTER_ATTRIBUTES:
        assert hasattr(router, name), name
    logits, weights, indices = router(torch.randn(1, 3, 16))
    assert logits.shape == (3, 4) and weights.shape == indices.shape == (3, 2)


def test_experts_interface(tiny_moe_layer):
    import torch

    experts = tiny_moe_layer.experts
    for name in compat.EXPERTS_ATTRIBUTES:
        assert hasattr(experts, name), name
    assert _params(compat.grouped_mm_experts_forward) == [
        "self",
        "hidden_states",
        "top_k_index",
        "top_k_weights",
    ]
    assert "grouped_mm" in compat.ALL_EXPERTS_FUNCTIONS
    assert callable(compat.ExpertsInterface.register)
    view = compat.experts_in_dtype(experts, torch.float64)
    assert view.gate_up_proj.dtype == torch.float64 and view.num_experts == experts.num_experts


def test_load_balancing_loss_signature():
    assert _params(compat.load_balancing_loss_func)[:3] == ["gate_logits", "num_experts", "top_k"]


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'Qwen3Router'"):
        _ = compat.Qwen3Router
