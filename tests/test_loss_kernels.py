"""The three fused linear cross-entropy kernels give the same loss and gradients as PyTorch, through the
GPU benchmark's CPU smoke mode (Liger's Triton kernels interpreted on the CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from moe_train.loss import LOSS_KERNELS, linear_cross_entropy, summed_cross_entropy

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_every_kernel_matches_pytorch_in_the_benchmark_smoke_mode(tmp_path: Path) -> None:
    out = tmp_path / "loss_kernels.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "loss_kernels_gpu.py"), "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rows = {row["kernel"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == set(LOSS_KERNELS)
    for kernel, row in rows.items():
        assert "error" not in row, f"{kernel}: {row.get('error')}"
        for key in ("loss_rel_err", "grad_hidden_rel_err", "grad_weight_rel_err"):
            assert row[key] < 1e-5, (kernel, key, row[key])
    assert "medbabel" in run.stdout and "liger" in run.stdout


def test_medbabel_kernel_is_linear_cross_entropy() -> None:
    hidden, weight = torch.randn(10, 8, dtype=torch.float64), torch.randn(20, 8, dtype=torch.float64)
    labels = torch.tensor([1, 2, -100, 3, 4, 5, 6, 7, 8, -100])
    summed = summed_cross_entropy("medbabel", chunk_size=3)(hidden, weight, labels)
    assert torch.equal(summed, linear_cross_entropy(hidden, weight, labels, chunk_size=3))


def test_unknown_kernel_is_named() -> None:
    with pytest.raises(ValueError, match="unknown loss kernel 'xla'"):
        summed_cross_entropy("xla")
