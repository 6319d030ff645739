"""Small elementwise functions compiled by torch.compile on CUDA, run eagerly elsewhere."""

from __future__ import annotations

import warnings

import torch

# Inductor tells, once per compiled softmax it splits over the 152k vocabulary, that it falls back from
# online softmax: a note to PyTorch's developers, not something a user of the loss can act on.
warnings.filterwarnings("ignore", message=r"\s*Online softmax is disabled on the fly", category=UserWarning)

_COMPILED: dict = {}


def on_cuda(fn, device: torch.device, dynamic: bool = False):
    """`fn` compiled for CUDA (once per function and `dynamic` setting), `fn` itself elsewhere."""
    if device.type != "cuda":
        return fn
    key = (fn, dynamic)
    if key not in _COMPILED:
        _COMPILED[key] = torch.compile(fn, dynamic=dynamic)
    return _COMPILED[key]
