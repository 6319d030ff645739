"""Training's device and process helpers: the one device resolver, named sums over ranks, and the
one-transfer read-back of step metrics."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from moe_train.device import resolve_device, to_host
from moe_train.distributed import Runtime, all_reduce_sum, sum_over_ranks

needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only answers")


@needs_no_cuda
def test_auto_and_cpu_resolve_to_the_cpu_here():
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@needs_no_cuda
@pytest.mark.parametrize("option", ["cuda", "cuda:1"])
def test_asking_for_cuda_without_one_names_the_option(option):
    with pytest.raises(RuntimeError, match=f"device '{option}': no CUDA device"):
        resolve_device(option)


def test_a_bad_device_string_is_torchs_clear_error():
    with pytest.raises(RuntimeError, match="Expected one of"):
        resolve_device("gpu")


def test_to_host_returns_each_tensor_under_its_name_and_shape():
    values = to_host(
        {
            "loss": torch.tensor(2.5, dtype=torch.float64),
            "norm": torch.tensor(0.25),  # float32 comes back exactly
            "load": torch.arange(6, dtype=torch.float64).view(2, 3),
            "counts": torch.tensor([1, 2], dtype=torch.int64),
        }
    )
    assert values == {
        "loss": 2.5,
        "norm": 0.25,
        "load": [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]],
        "counts": [1.0, 2.0],
    }


def test_one_process_sums_are_the_inputs():
    runtime = Runtime(torch.device("cpu"), rank=0, world=1, bf16=False)
    named = {"a": torch.ones(2, 3, dtype=torch.float64), "b": torch.zeros((), dtype=torch.float64)}
    assert all_reduce_sum(named, runtime) is named
    assert sum_over_ranks({"trained": 3, "routed": 0}, runtime) == {"trained": 3.0, "routed": 0.0}


def _sum_on_rank(rank: int, world: int, init_file: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        runtime = Runtime(torch.device("cpu"), rank=rank, world=world, bf16=False)
        sums = all_reduce_sum(
            {
                "scalar": torch.tensor(float(rank + 1), dtype=torch.float64),
                "matrix": torch.full((2, 3), float(rank), dtype=torch.float64),
            },
            runtime,
        )
        counts = sum_over_ranks({"trained": 10 * (rank + 1), "routed": rank}, runtime)
        results[rank] = (to_host(sums), counts)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_sums_over_two_processes_come_back_under_their_names(tmp_path):
    results = mp.Manager().dict()
    mp.spawn(_sum_on_rank, args=(2, str(tmp_path / "init"), results), nprocs=2)
    for rank in range(2):
        sums, counts = results[rank]
        assert sums == {"scalar": 3.0, "matrix": [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]}
        assert counts == {"trained": 30.0, "routed": 1.0}
