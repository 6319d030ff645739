"""The Hugging Face dataset card of the final shards (OUT/shards/README.md) and its plots.

The YAML header is built with `huggingface_hub`'s `DatasetCardData` (so `DatasetCard.load` reads it
back as written) and declares one `datasets` config per language (and per family, plus `all`), so
`datasets.load_dataset(OUT/shards, "<code>")` loads one language; its licence comes from the sources
(their SPDX ids, or `other` with a link to the card's section listing each source's licence). The body
says at a glance what the corpus is: documents and tokens per language, family and source type, and the
curation funnel (what every stage removed and why, from each `OUT/<stage>/summary.json`).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from huggingface_hub import DatasetCard, DatasetCardData

from pipeline import atomic
from pipeline.funnel import FunnelRow, stage_funnel, stages_before
from pipeline.manifest import Manifest
from pipeline.schema import COLUMNS, SCHEMA_VERSION, SPLITS

PLOTS_DIR = "plots"
CARD_NAME = "README.md"
LICENSES_SECTION = "licenses"  # the card's heading that lists each source's licence

# SPDX ids the Hugging Face Hub accepts as `license` (it spells them in lower case); a source licence
# outside this set makes the card's licence `other` with a link to the per-source list.
HUB_SPDX_LICENSES = frozenset(
    {
        "apache-2.0", "mit", "afl-3.0", "artistic-2.0", "bsl-1.0", "bsd-2-clause", "bsd-3-clause",
        "bsd-3-clause-clear", "cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0",
        "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0",
        "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0",
        "cdla-sharing-1.0", "cdla-permissive-1.0", "cdla-permissive-2.0", "wtfpl", "ecl-2.0", "epl-1.0",
        "epl-2.0", "etalab-2.0", "eupl-1.1", "eupl-1.2", "agpl-3.0", "gpl-2.0", "gpl-3.0", "lgpl-2.1",
        "lgpl-3.0", "isc", "lppl-1.3c", "ms-pl", "mpl-2.0", "odc-by", "odbl", "osl-3.0", "postgresql",
        "ofl-1.1", "ncsa", "unlicense", "zlib", "pddl",
    }
)  # fmt: skip


def write_dataset_card(ctx, manifest: Manifest, group_infos: list[dict]) -> Path:
    """Write README.md and plots/*.png into the shards directory; returns the card's path."""
    from pipeline.dag import summarize_counters

    shards_dir = ctx.stage_dir
    stats = _corpus_stats(manifest, group_infos)
    funnel = [row for row in stage_funnel(ctx.out, stages_before("shards")) if row.ran and row.saw_documents]
    funnel.append(FunnelRow.from_summary("shards", summarize_counters(ctx.counters())))
    plots = _plots(shards_dir / PLOTS_DIR, stats, funnel, ctx.registry)
    card = DatasetCard(
        f"---\n{card_data(ctx, manifest, stats).to_yaml()}\n---\n\n{_body(ctx, manifest, stats, funnel, plots)}"
    )
    path = shards_dir / CARD_NAME
    atomic.write_text(path, str(card))
    return path


# ---- numbers -------------------------------------------------------------------------------------------


def _corpus_stats(manifest: Manifest, group_infos: list[dict]) -> dict:
    per_language: dict[str, dict] = defaultdict(
        lambda: {
            "docs": 0,
            "tokens": 0,
            "family": None,
            "splits": defaultdict(int),
            "source_types": defaultdict(int),
            "origins": defaultdict(int),
        }
    )
    per_family: dict[str, dict] = defaultdict(
        lambda: {"docs": 0, "tokens": 0, "languages": set(), "source_types": defaultdict(int)}
    )
    per_split: dict[str, dict] = defaultdict(lambda: {"docs": 0, "tokens": 0, "files": 0})
    per_source_type: dict[str, dict] = defaultdict(lambda: {"docs": 0, "tokens": 0})
    origins: dict[str, int] = defaultdict(int)
    licenses: dict[str, int] = defaultdict(int)
    sources: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for f in manifest.files:
        language = per_language[f.language]
        language["docs"] += f.rows
        language["tokens"] += f.tokens
        language["family"] = f.family
        language["splits"][f.split] += f.rows
        per_family[f.family]["docs"] += f.rows
        per_family[f.family]["tokens"] += f.tokens
        per_family[f.family]["languages"].add(f.language)
        per_split[f.split]["docs"] += f.rows
        per_split[f.split]["tokens"] += f.tokens
        per_split[f.split]["files"] += 1
    for info in group_infos:
        _, family, language = info["group"]
        for source_type, counts in info["source_types"].items():
            per_language[language]["source_types"][source_type] += counts["docs"]
            per_family[family]["source_types"][source_type] += counts["docs"]
            per_source_type[source_type]["docs"] += counts["docs"]
            per_source_type[source_type]["tokens"] += counts["tokens"]
        for origin, n in info["origins"].items():
            origins[origin] += n
            per_language[language]["origins"][origin] += n
        for license_name, n in info["licenses"].items():
            licenses[license_name] += n
        for source, by_license in info.get("sources", {}).items():
            for license_name, n in by_license.items():
                sources[source][license_name] += n
    return {
        "languages": dict(sorted(per_language.items(), key=lambda kv: (-kv[1]["tokens"], kv[0]))),
        "families": dict(sorted(per_family.items(), key=lambda kv: (-kv[1]["tokens"], kv[0]))),
        "splits": dict(per_split),
        "source_types": dict(sorted(per_source_type.items(), key=lambda kv: (-kv[1]["tokens"], kv[0]))),
        "origins": dict(sorted(origins.items(), key=lambda kv: (-kv[1], kv[0]))),
        "licenses": dict(sorted(licenses.items(), key=lambda kv: (-kv[1], kv[0]))),
        "sources": {k: dict(sorted(v.items())) for k, v in sorted(sources.items())},
        "totals": manifest.totals,
    }


# ---- plots ---------------------------------------------------------------------------------------------


def human(n: float) -> str:
    """12345 -> 12.3k, 2500000 -> 2.5M."""
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= limit:
            return f"{n / limit:.3g}{suffix}"
    return f"{n:.0f}"


_STYLE = {"font.size": 10, "axes.spines.top": False, "axes.spines.right": False}


def _plots(directory: Path, stats: dict, funnel: list[FunnelRow], registry) -> dict[str, str]:
    """PNG plots; returns {name: path relative to the card}."""
    if not stats["languages"]:
        return {}
    import matplotlib

    with matplotlib.rc_context(_STYLE):
        return _draw_plots(directory, stats, funnel)


def _draw_plots(directory: Path, stats: dict, funnel: list[FunnelRow]) -> dict[str, str]:
    """Figures saved straight to PNG (Agg): pyplot, its import, figure managers and global state
    are not needed to write files; the images are byte for byte the same."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import FuncFormatter

    directory.mkdir(parents=True, exist_ok=True)
    families = list(stats["families"])
    cmap = colormaps["tab10" if len(families) <= 10 else "tab20"]
    colour = {family: cmap(i % cmap.N) for i, family in enumerate(families)}
    made = {}

    def subplots(figsize: tuple[float, float]):
        fig = Figure(figsize=figsize)
        return fig, fig.subplots()

    def save(fig, name: str) -> None:
        path = directory / f"{name}.png"
        with atomic.atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight", metadata={"Software": None})
        made[name] = f"{PLOTS_DIR}/{name}.png"

    numbers = FuncFormatter(lambda value, _: human(value))

    # tokens per language, log scale, coloured by family
    languages = stats["languages"]
    codes = list(languages)
    many = len(codes) > 16
    fig, ax = subplots(figsize=(max(6.5, 0.3 * len(codes) + 2.5), 4.5))
    values = [max(languages[c]["tokens"], 1) for c in codes]
    bars = ax.bar(range(len(codes)), values, color=[colour[languages[c]["family"]] for c in codes])
    ax.bar_label(bars, labels=[human(v) for v in values], padding=2, fontsize=7, rotation=90 if many else 0)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(numbers)
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda *_: ""))
    ax.set_ylim(top=max(values) * (6 if many else 3))
    ax.set_xticks(range(len(codes)), codes, rotation=90 if many else 0)
    ax.set_xlim(-0.6, len(codes) - 0.4)
    ax.set_ylabel("Qwen2 tokens (log scale)")
    ax.set_title(f"Tokens per language: {len(codes)} languages, {human(stats['totals']['tokens'])} tokens")
    ax.legend(
        handles=[Rectangle((0, 0), 1, 1, color=colour[f]) for f in families],
        labels=[f"{f} ({len(stats['families'][f]['languages'])})" for f in families],
        title="family (languages)",
        fontsize=8,
        title_fontsize=8,
        loc="upper right",
        ncols=2 if len(families) > 6 else 1,
        frameon=False,
    )
    ax.grid(axis="y", which="major", alpha=0.3)
    save(fig, "tokens_per_language")

    for key, title, name in (
        ("families", "Tokens per language family", "tokens_per_family"),
        ("source_types", "Tokens per source type", "tokens_per_source_type"),
    ):
        items = stats[key]
        labels = list(items)[::-1]
        values = [items[k]["tokens"] for k in labels]
        fig, ax = subplots(figsize=(7, 0.42 * len(labels) + 1.3))
        bars = ax.barh(labels, values, color=[colour[k] for k in labels] if key == "families" else "#4c72b0")
        total = max(sum(values), 1)
        ax.bar_label(
            bars,
            labels=[
                f"{human(v)} tokens, {human(items[k]['docs'])} docs ({v / total:.0%})"
                for k, v in zip(labels, values, strict=True)
            ],
            padding=3,
            fontsize=8,
        )
        ax.xaxis.set_major_formatter(numbers)
        ax.set_xlabel("Qwen2 tokens")
        ax.set_title(title)
        ax.set_xlim(0, max(max(values), 1) * 1.6)
        save(fig, name)

    if funnel:
        rows = funnel[::-1]
        names = [r.stage for r in rows]
        kept = [r.docs_out for r in rows]
        removed = [sum(r.removed.values()) for r in rows]
        fig, ax = subplots(figsize=(8.5, 0.45 * len(rows) + 1.4))
        ax.barh(names, kept, color=["#4c72b0" if r.adds else "#55a868" for r in rows])
        bars = ax.barh(names, removed, left=kept, color="#dd8452")
        notes = []
        for r, n_removed in zip(rows, removed, strict=True):
            top = next(iter(r.removed), "")
            notes.append(
                ("+" if r.adds else "")
                + f"{r.docs_out:,}"
                + (f"   −{n_removed:,} ({top}{', …' if len(r.removed) > 1 else ''})" if n_removed else "")
            )
        ax.bar_label(bars, labels=notes, padding=4, fontsize=8)
        ax.xaxis.set_major_formatter(numbers)
        ax.set_xlabel("documents")
        ax.set_title("Curation funnel: documents kept and set aside by each stage")
        ax.set_xlim(0, max(k + r for k, r in zip(kept, removed, strict=True)) * 1.75 or 1)
        legend = [("#55a868", "kept"), ("#dd8452", "set aside")]
        if any(r.adds for r in rows):
            legend.append(("#4c72b0", "added (translations, rewrites)"))
        ax.legend(
            handles=[Rectangle((0, 0), 1, 1, color=c) for c, _ in legend],
            labels=[label for _, label in legend],
            loc="lower right",
            fontsize=8,
            frameon=False,
        )
        save(fig, "funnel")
    return made


# ---- text ----------------------------------------------------------------------------------------------


def _size_category(n: int) -> str:
    for limit, label in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
    ):
        if n < limit:
            return label
    return "1M<n<10M" if n < 10_000_000 else "n>10M"


def _data_files(manifest: Manifest, pattern: str, **select) -> list[dict]:
    """One entry per split that has files for the selection (a split without files would fail to load)."""
    return [
        {"split": split, "path": pattern.format(split=split, **select)}
        for split in SPLITS
        if manifest.select(
            split=split,
            languages=[select["language"]] if "language" in select else None,
            families=[select["family"]] if "family" in select else None,
        )
    ]


def hub_license(license_name: str) -> str | None:
    """The Hub's (lower-case SPDX) id of a source licence, or None when it has none."""
    candidate = license_name.strip().lower()
    return candidate if candidate in HUB_SPDX_LICENSES else None


def license_fields(licenses: list[str]) -> dict:
    """The card's licence: the SPDX ids when every source has one, else `other` with a name and a
    link to the card's section that lists each source's licence."""
    ids = [hub_license(name) for name in licenses]
    if ids and all(ids):
        return {"license": sorted(set(ids))}
    return {
        "license": "other",
        "license_name": "medbabel-source-licenses",
        "license_link": f"{CARD_NAME}#{LICENSES_SECTION}",
    }


def card_data(ctx, manifest: Manifest, stats: dict) -> DatasetCardData:
    """The card's YAML header, in the Hub's own type."""
    configs = []
    if manifest.files:
        configs.append(
            {
                "config_name": "all",
                "default": True,
                "data_files": _data_files(manifest, "data/{split}/*/*/*.parquet"),
            }
        )
        for code in sorted(stats["languages"]):
            configs.append(
                {
                    "config_name": code,
                    "data_files": _data_files(manifest, "data/{split}/*/{language}/*.parquet", language=code),
                }
            )
        for family in sorted(stats["families"]):
            configs.append(
                {
                    "config_name": f"family_{family}",
                    "data_files": _data_files(manifest, "data/{split}/{family}/*/*.parquet", family=family),
                }
            )
    return DatasetCardData(
        pretty_name=f"medbabel medical corpus ({ctx.cfg.run.name})",
        language=sorted(stats["languages"]),
        multilinguality="multilingual",
        task_categories=["text-generation"],
        size_categories=[_size_category(stats["totals"]["rows"])],
        tags=["medical", "multilingual", "medbabel"],
        configs=configs,
        **license_fields(list(stats["licenses"])),
    )


def _table(header: list[str], rows: list[list]) -> str:
    """A Markdown table: numbers right-aligned, text left-aligned."""
    align = ["---" if i == 0 or h in _TEXT_HEADERS else "---:" for i, h in enumerate(header)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


_TEXT_HEADERS = {
    "language", "family", "expert", "source", "license", "SPDX", "tier", "source types (documents)",
    "why", "description", "type", "languages",
}  # fmt: skip


def _type_counts(counts: dict[str, int]) -> str:
    """'book 12, exam 3', most documents first."""
    return ", ".join(f"{t} {n:,}" for t, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _share(part: int, total: int) -> str:
    return f"{part / total:.1%}" if total else "-"


def _body(ctx, manifest: Manifest, stats: dict, funnel: list[FunnelRow], plots: dict[str, str]) -> str:
    registry, totals = ctx.registry, stats["totals"]
    scheme = manifest.scheme
    n_languages, n_families = len(stats["languages"]), len(stats["families"])
    parts = [f"# medbabel medical corpus — {ctx.cfg.run.name}\n"]
    if not manifest.files:
        parts.append(
            "\nThis run produced **no documents**: every record was removed upstream (see the funnel).\n"
        )
    parts.append(
        f"\nA multilingual **medical** text corpus for training language-family Mixture-of-Experts models "
        f"(ApolloMoE recipe): **{totals['rows']:,} documents** and **{totals['tokens']:,} Qwen2 tokens** in "
        f"**{n_languages} languages** of **{n_families} language families** (expert scheme `{scheme}`: the "
        f"`expert` and `expert_id` columns). "
        f"Split by translation family into train ({stats['splits'].get('train', {}).get('docs', 0):,} docs) "
        f"and validation ({stats['splits'].get('validation', {}).get('docs', 0):,} docs); a translation always shares "
        f"its source's split. Built by medbabel; record schema v{SCHEMA_VERSION}; config hash "
        f"`{manifest.config_hash}`.\n"
    )
    if "tokens_per_language" in plots:
        parts.append(f"\n![Tokens per language]({plots['tokens_per_language']})\n")

    parts.append("\n## At a glance\n\n")
    parts.append(
        _table(
            ["split", "documents", "tokens", "files"],
            [
                [s, f"{v['docs']:,}", f"{v['tokens']:,}", v["files"]]
                for s, v in sorted(stats["splits"].items())
            ]
            + [["**total**", f"**{totals['rows']:,}**", f"**{totals['tokens']:,}**", totals["files"]]],
        )
    )
    if stats["origins"]:
        parts.append(
            "\nOrigin of the documents: "
            + ", ".join(f"{k} {v:,} ({_share(v, totals['rows'])})" for k, v in stats["origins"].items())
            + ".\n"
        )

    parts.append("\n## Languages\n\n")
    scheme_spec = registry.schemes.get(scheme)
    expert_of = {e_code: e.name for e in scheme_spec.experts for e_code in e.languages} if scheme_spec else {}
    rows = []
    for code, v in stats["languages"].items():
        language = registry.languages.get(code)
        types = _type_counts(v["source_types"])
        rows.append(
            [
                f"`{code}`",
                language.name if language else code,
                v["family"],
                expert_of.get(code, ""),
                language.tier if language else "",
                f"{v['docs']:,}",
                f"{v['tokens']:,}",
                _share(v["tokens"], totals["tokens"]),
                _share(v["docs"] - v["origins"].get("original", 0), v["docs"]),
                types,
            ]
        )
    parts.append(
        _table(
            [
                "code",
                "language",
                "family",
                "expert",
                "tier",
                "documents",
                "tokens",
                "token share",
                "translated",
                "source types (documents)",
            ],
            rows,
        )
    )

    parts.append("\n## Families\n\n")
    if "tokens_per_family" in plots:
        parts.append(f"![Tokens per family]({plots['tokens_per_family']})\n\n")
    parts.append(
        _table(
            [
                "family",
                "languages",
                "documents",
                "tokens",
                "token share",
                "source types (documents)",
            ],
            [
                [
                    f,
                    ", ".join(sorted(v["languages"])),
                    f"{v['docs']:,}",
                    f"{v['tokens']:,}",
                    _share(v["tokens"], totals["tokens"]),
                    _type_counts(v["source_types"]),
                ]
                for f, v in stats["families"].items()
            ],
        )
    )

    parts.append("\n## Source types\n\n")
    if "tokens_per_source_type" in plots:
        parts.append(f"![Tokens per source type]({plots['tokens_per_source_type']})\n\n")
    parts.append(
        _table(
            ["source type", "documents", "tokens", "token share"],
            [
                [t, f"{v['docs']:,}", f"{v['tokens']:,}", _share(v["tokens"], totals["tokens"])]
                for t, v in stats["source_types"].items()
            ],
        )
    )

    parts.append(
        "\n## Curation funnel\n\nWhat each stage received, kept and set aside (with the reasons, most frequent first); the records set aside are kept in `OUT/<stage>/quarantine/`.\n\n"
    )
    if "funnel" in plots:
        parts.append(f"![Curation funnel]({plots['funnel']})\n\n")
    parts.append(
        _table(
            ["stage", "in", "out", "removed", "why"],
            [
                [
                    r.stage + (" (adds)" if r.adds else ""),
                    f"{r.docs_in:,}",
                    f"{r.docs_out:,}",
                    f"{sum(r.removed.values()):,}",
                    "; ".join(f"{k} {v:,}" for k, v in r.removed.items()) or "-",
                ]
                for r in funnel
            ],
        )
    )

    warned = [(r.stage, w) for r in funnel for w in r.warnings]
    parts.append(
        "\n### Removal per language and source\n\n"
        "Every filtering stage reports what it removed per language and per source "
        "(`removal_by_language_source` in `OUT/<stage>/summary.json`) and warns when it removes more than "
        f"{ctx.cfg.run.warn_removed_share:.0%} of one language of one source (`run.warn_removed_share`). "
    )
    if warned:
        parts.append("This run's warnings (`medbabel explain <id>` shows every signal of a record):\n\n")
        parts.append(
            _table(
                ["stage", "language", "source", "removed", "mostly", "example"],
                [
                    [
                        stage,
                        w["language"],
                        w["source"],
                        f"{w['removed']:,} of {w['in']:,} ({w['share']:.1%})",
                        w["rule"],
                        (
                            w["examples"][0]["text"][:80].replace("|", "\\|").replace("\n", " ")
                            if w["examples"]
                            else "-"
                        ),
                    ]
                    for stage, w in warned
                ],
            )
        )
    else:
        parts.append("This run has none.\n")

    parts.append(_loading_section())
    parts.append("\n## Fields\n\n")
    parts.append(
        _table(["column", "type", "description"], [[f"`{c.name}`", f"`{c.type}`", c.doc] for c in COLUMNS])
    )
    if stats["sources"]:
        parts.append(
            "\n## Licenses\n\nEach document keeps the licence of its source (`license` column); the corpus as a "
            "whole is under the licences of its sources:\n\n"
        )
        parts.append(
            _table(
                ["source", "license", "SPDX", "documents"],
                [
                    [source, name, hub_license(name) or "-", f"{n:,}"]
                    for source, by_license in stats["sources"].items()
                    for name, n in by_license.items()
                ],
            )
        )
    parts.append(
        "\n## Processing\n\n"
        "collect → translate / rewrite → dedup (exact + MinHash, per language) → langid (fastText, declared "
        "language verified) → families (registry) → quality (heuristic signals + run-time medical classifier, "
        "personal data replaced by `<EMAIL>`, `<PHONE>`, `<IP>`, `<URL>`, `<ID>`) → decontam (long n-gram "
        "overlap with benchmark questions removed) → shards (Qwen2 token counts, split, this layout). "
        "`manifest.json` lists every file with its rows, tokens, bytes and sha256.\n"
    )
    return "".join(parts)


def _loading_section() -> str:
    return """
## Loading

Every file holds all the columns below (`split`, `family` and `language` included); the directories
`data/<split>/<family>/<language>/` are plain names, so any Parquet reader gives the same columns and types.

```python
from datasets import load_dataset

sw = load_dataset("path/to/shards", "sw")  # one language (configs: all, <code>, family_<name>)
everything = load_dataset("path/to/shards")  # all languages, splits train and validation

import pandas as pd

df = pd.read_parquet("path/to/shards/data/train")
df.groupby(["family", "language"]).n_tokens.sum()
```

```sql
-- DuckDB
SELECT language, count(*) AS docs, sum(n_tokens) AS tokens
FROM read_parquet('path/to/shards/data/*/*/*/*.parquet')
GROUP BY language ORDER BY tokens DESC;
```
"""
