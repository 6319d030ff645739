"""Each training step's micro-batches for this rank, produced ahead of the step in a thread."""

from __future__ import annotations

import queue
import threading

from moe_train.distributed import Runtime
from moe_train.flops import attention_pairs
from moe_train.packing import Batch, SequencePacker, collate
from pipeline.config import TrainSection


class StepFeeder:
    """Produces each step's micro-batches for this rank (with the data state after them) in a thread.

    Every rank packs the same deterministic sequence stream and takes its own slice of each step's
    global batch, so the data a step sees does not depend on the number of ranks."""

    def __init__(self, packer: SequencePacker, cfg: TrainSection, runtime: Runtime, prefetch: int = 2):
        self.packer = packer
        self.micro = cfg.micro_batch_size
        self.accum = cfg.grad_accum
        self.runtime = runtime
        self._queue: queue.Queue = queue.Queue(maxsize=prefetch)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        per_rank = self.micro * self.accum
        try:
            while not self._stop.is_set():
                sequences = [next(self.packer) for _ in range(per_rank * self.runtime.world)]
                mine = sequences[self.runtime.rank * per_rank : (self.runtime.rank + 1) * per_rank]
                micro_batches = [collate(mine[i : i + self.micro]) for i in range(0, per_rank, self.micro)]
                pairs = attention_pairs([n for s in sequences for n in s.doc_lengths])
                self._put((micro_batches, pairs, self.packer.state()))
        except BaseException as exc:  # surfaced in the training thread
            self._put(exc)

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def next(self) -> tuple[list[Batch], int, dict]:
        """(this rank's micro-batches, attention pairs of the global batch for the FLOP count, data
        state after this step)."""
        if self._stop.is_set():
            raise RuntimeError("this Trainer has finished; create a new one (resume=True) to continue")
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
