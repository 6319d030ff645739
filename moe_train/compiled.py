"""Small elementwise functions compiled by torch.compile on CUDA, run eagerly elsewhere."""

from __future__ import annotations

import torch

_COMPILED: dict = {}


def on_cuda(fn, device: torch.device, dynamic: bool = False):
    """`fn` compiled for CUDA (once per function and `dynamic` setting), `fn` itself elsewhere."""
    if device.type != "cuda":
        return fn
    key = (fn, dynamic)
    if key not in _COMPILED:
        _COMPILED[key] = torch.compile(fn, dynamic=dynamic)
    return _COMPILED[key]
