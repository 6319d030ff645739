"""Source share along one epoch of the training stream: `weighted_shuffle` (the paper) against `phases`.

    .venv/bin/python bench/sampling_order.py            # writes bench/results/sampling_order.{json,png}

A synthetic corpus in shards with the original's three kinds of data and its weights and repeats
(rewritten medical QA: weight 16, once; exams and general data: weight 2, twice), ordered by medbabel's
own streams (moe_train.data). The documents are not tokenised: only the order is measured. The
reference curve is the original sampler itself, torch.multinomial without replacement over every item.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import write_result  # noqa: E402

from moe_train.data import Document  # noqa: E402
from moe_train.sampling import DataSelection, open_stream  # noqa: E402
from pipeline.manifest import Manifest, ShardFile, file_sha256, shard_relpath, write_manifest  # noqa: E402
from pipeline.schema import RECORD_SCHEMA, empty_record  # noqa: E402

# kind -> (origin, source_type, rows per language); three languages
KINDS = {
    "rewritten QA": ("rewritten", "book", 600),
    "exam": ("original", "exam", 200),
    "general": ("original", "general", 400),
}
WEIGHTS = {"rewritten": 16.0, "*": 2.0}
REPEATS = {"rewritten": 1.0, "*": 2.0}
LANGUAGES = {"en": ("indo_european", 4), "zh": ("chinese", 0), "sw": ("niger_congo", 6)}
BINS = 20


class OrderOnly:
    """Stands in for the DocumentTokenizer: one dummy document per row, remembering the row's kind."""

    def __init__(self):
        self.kinds: list[str] = []

    def documents(self, rows):
        for row in rows:
            self.kinds.append(row["source"])
        return [Document([0, 0], [-100, -100], 0, row["language"]) for row in rows]


def write_corpus(shards: Path) -> None:
    files = []
    for language, (family, expert) in LANGUAGES.items():
        rows = [
            empty_record(
                id=f"{language}-{kind}-{i}",
                text="x",
                language=language,
                source=kind,
                source_type=source_type,
                origin=origin,
                license="CC0",
                family=family,
                expert_id=expert,
                split="train",
            )
            for kind, (origin, source_type, n) in KINDS.items()
            for i in range(n)
        ]
        rel = shard_relpath("train", family, language, 0)
        (shards / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=RECORD_SCHEMA), shards / rel, row_group_size=1000)
        files.append(
            ShardFile(
                rel,
                "train",
                family,
                language,
                len(rows),
                len(rows),
                (shards / rel).stat().st_size,
                file_sha256(shards / rel),
            )
        )
    write_manifest(shards, Manifest(config_hash="bench", scheme="family7", files=files))


def shares(kinds: list[str]) -> dict[str, list[float]]:
    """Share of each kind in each of BINS equal slices of the stream."""
    slices = np.array_split(np.array(kinds), BINS)
    return {kind: [float((s == kind).mean()) for s in slices] for kind in KINDS}


def stream_kinds(shards: Path, mode: str, seed: int) -> list[str]:
    priorities = WEIGHTS if mode == "weighted_shuffle" else {"rewritten": 1.0}  # phases: QA last
    selection = DataSelection(
        shards, source_priorities=priorities, source_repeats=REPEATS, seed=seed, sampling=mode
    )
    spy = OrderOnly()
    for _ in open_stream(selection, spy, epochs=1):
        pass
    return spy.kinds


def reference_kinds(seed: int) -> list[str]:
    """The original sampler's order of the same items: torch.multinomial(weights, n, replacement=False)."""
    items = []
    for kind, (origin, _, n) in KINDS.items():
        repeats = int(REPEATS.get(origin, REPEATS["*"]))
        items += [kind] * (n * len(LANGUAGES) * repeats)
    weights = torch.tensor([WEIGHTS.get(KINDS[k][0], WEIGHTS["*"]) for k in items], dtype=torch.double)
    order = torch.multinomial(weights, len(items), False, generator=torch.Generator().manual_seed(seed))
    return [items[i] for i in order.tolist()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench/results/sampling_order.json")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        shards = Path(tmp) / "shards"
        write_corpus(shards)
        curves = {
            "weighted_shuffle": shares(stream_kinds(shards, "weighted_shuffle", args.seed)),
            "original (torch.multinomial)": shares(reference_kinds(args.seed)),
            "phases": shares(stream_kinds(shards, "phases", args.seed)),
        }
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), sharey=True)
    x = (np.arange(BINS) + 0.5) / BINS
    for ax, (name, curve) in zip(axes, curves.items(), strict=True):
        for kind, ys in curve.items():
            ax.plot(x, ys, marker="o", markersize=3, label=kind)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("position in the epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of rows")
    axes[0].legend(fontsize=8)
    png = Path(args.out).with_suffix(".png")
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110, bbox_inches="tight")
    for name, curve in curves.items():
        print(
            f"{name:30s} QA share by fifth of the epoch:",
            [round(float(np.mean(c)), 2) for c in np.array_split(curve["rewritten QA"], 5)],
        )
    write_result(
        {"bins": BINS, "kinds": {k: list(v) for k, v in KINDS.items()}, "curves": curves, "plot": str(png)},
        "sampling_order.py",
        argv,
        Path(args.out),
    )


if __name__ == "__main__":
    main()
