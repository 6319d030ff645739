"""Matplotlib figures for the evaluation and the report (Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from pipeline import atomic  # noqa: E402

DPI = 110


def _save(fig, path: Path) -> Path:
    with atomic.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def share_heatmap(
    shares: np.ndarray,
    row_labels: list[str],
    col_labels: list[str],
    title: str,
    path: Path,
    highlight: list[int | None] | None = None,
    row_groups: list[str] | None = None,
) -> Path:
    """Rows (languages) x columns (experts) of percentages; `highlight[i]` outlines row i's own
    (family) expert; `row_groups` draws a separator and a label between groups of rows."""
    n_rows, n_cols = shares.shape
    fig, ax = plt.subplots(figsize=(2.2 + 0.95 * n_cols, 1.4 + 0.34 * n_rows))
    image = ax.imshow(
        100 * shares, cmap="viridis", vmin=0, vmax=max(1e-9, 100 * float(shares.max())), aspect="auto"
    )
    ax.set_xticks(range(n_cols), col_labels, rotation=35, ha="right", fontsize=9)
    ax.set_yticks(range(n_rows), row_labels, fontsize=9)
    ax.set_xlabel("expert")
    ax.set_ylabel("language")
    ax.set_title(title + ("\nred box: the language's own (family) expert" if highlight else ""), fontsize=11)
    threshold = 0.6 * 100 * float(shares.max())
    for r in range(n_rows):
        for c in range(n_cols):
            value = 100 * shares[r, c]
            ax.text(
                c,
                r,
                f"{value:.0f}",
                ha="center",
                va="center",
                fontsize=8,
                color="black" if value > threshold else "white",
            )
    for r, c in enumerate(highlight or []):
        if c is not None:
            ax.add_patch(
                plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="#ff3b30", linewidth=2)
            )
    if row_groups:
        for r in range(1, n_rows):
            if row_groups[r] != row_groups[r - 1]:
                ax.axhline(r - 0.5, color="white", linewidth=1.5)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="% of the language's expert assignments")
    return _save(fig, path)


def grouped_bars(
    values: dict[str, list[float]],
    categories: list[str],
    title: str,
    ylabel: str,
    path: Path,
    reference: float | None = None,
    reference_label: str = "",
    percent: bool = True,
    ylim: tuple[float, float] | None = None,
) -> Path:
    """One group of bars per category, one bar per series (e.g. per MoE layer)."""
    n_series = max(1, len(values))
    width = 0.8 / n_series
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * len(categories) * max(1, n_series) ** 0.5 + 2), 3.6))
    x = np.arange(len(categories))
    scale = 100 if percent else 1
    for i, (name, series) in enumerate(values.items()):
        ax.bar(
            x + (i - (n_series - 1) / 2) * width, scale * np.asarray(series, dtype=float), width, label=name
        )
    if reference is not None:
        ax.axhline(scale * reference, color="#444", linestyle="--", linewidth=1, label=reference_label)
    crowded = len(categories) > 8 or sum(len(c) for c in categories) > 6 * len(categories)
    ax.set_xticks(
        x, categories, rotation=35 if crowded else 0, ha="right" if crowded else "center", fontsize=9
    )
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_title(title, fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, frameon=False, ncol=min(4, n_series + 1))
    return _save(fig, path)


def line_plot(
    series: dict[str, tuple[list[float], list[float]]],
    title: str,
    xlabel: str,
    ylabel: str,
    path: Path,
    logy: bool = False,
    markers: bool = False,
    integer_x: bool = False,
    zero_based: bool = False,
) -> Path:
    """Several named (x, y) series on one axis."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    sparse = markers or any(len(xs) <= 20 for xs, _ in series.values())  # a lone point needs a marker
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, label=name, marker="o" if sparse else None, linewidth=1.5, markersize=4)
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    values = [y for _, ys in series.values() for y in ys]
    if logy and values and min(values) > 0 and max(values) / min(values) > 3:  # log only for wide ranges
        ax.set_yscale("log")
    elif zero_based:
        ax.set_ylim(bottom=0)
    if integer_x:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8, frameon=False, ncol=2 if len(series) > 6 else 1)
    return _save(fig, path)
