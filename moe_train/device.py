"""Devices: the one place that turns a `device:` option into a torch device, and the one way metrics
come back from it."""

from __future__ import annotations

import os
import resource

import torch


def resolve_device(option: str = "auto") -> torch.device:
    """`auto` is CUDA when present, else CPU; otherwise any torch device string (`cpu`, `cuda`, `cuda:1`).

    A CUDA device without an index is this process's local rank under torchrun (`LOCAL_RANK`), device 0
    otherwise. Asking for CUDA where there is none fails here, with the option named, rather than later
    inside a kernel launch.
    """
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if option == "auto" else option)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {option!r}: no CUDA device is available")
        if device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def to_host(named: dict[str, torch.Tensor]) -> dict[str, float | list]:
    """Named tensors copied to Python in one transfer, so the GPU is synchronised once: a scalar comes
    back as a float, any other tensor as a (nested) list of its shape."""
    flat = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in named.values()]).tolist()
    values, start = {}, 0
    for name, tensor in named.items():
        chunk = flat[start : start + tensor.numel()]
        start += tensor.numel()
        values[name] = chunk[0] if tensor.dim() == 0 else _reshape(chunk, list(tensor.shape))
    return values


def _reshape(flat: list[float], shape: list[int]) -> list:
    if len(shape) == 1:
        return flat
    step = len(flat) // shape[0]
    return [_reshape(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (for honest step timings); a no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_gb(device: torch.device) -> float:
    """Peak GPU memory allocated by torch on CUDA; the process's peak resident memory elsewhere."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
