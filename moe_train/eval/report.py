"""The run report (`make report`): one self-contained HTML page, plus its PNGs, under OUT/report/.

Sections: corpus at a glance (shard manifest and dataset card), the stage funnel (every
OUT/<stage>/summary.json), translation accounting, training curves (OUT/train/*.jsonl), medical QA
accuracy, validation loss, routing, and the "Spread Out in the End" plot when it was run. Every
section is optional: a missing input is said on the page, never an error. The page has no
external resources (inline CSS, images next to it), so the directory can be copied anywhere.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

from markupsafe import Markup

from moe_train.eval import plots
from moe_train.eval.mcq import rejected_text
from moe_train.eval.report_page import Image, Section, Table, fmt, mapping_table, pct, render_page
from pipeline import atomic
from pipeline.funnel import stage_funnel
from pipeline.manifest import MANIFEST_NAME, load_manifest

_STANDARD_SUMMARY_KEYS = {
    "stage",
    "docs_in",
    "docs_out",
    "quarantined",
    "quarantined_by_reason",
    "per_language",
    "seconds",
}


def read_json(path: Path):
    """Parsed JSON, or None when the file is missing or unreadable (the page says so)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class ReportBuilder:
    def __init__(self, out: Path, report_dir: Path, max_curve_points: int = 2000):
        self.out = Path(out)
        self.dir = Path(report_dir)
        self.img_dir = self.dir / "img"
        self.max_curve_points = max_curve_points

    def copy_image(self, source: Path, name: str) -> str:
        self.img_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, self.img_dir / name)
        return f"img/{name}"

    # ---- corpus ------------------------------------------------------------------------------
    def corpus(self) -> Section:
        section = Section("corpus", "Corpus at a glance")
        shards = self.out / "shards"
        if not (shards / MANIFEST_NAME).is_file():
            section.missing = f"No shard manifest at {shards / MANIFEST_NAME} (run `make shards`)."
            return section
        try:
            manifest = load_manifest(shards)
        except (ValueError, KeyError, TypeError) as exc:
            section.missing = f"The shard manifest could not be read: {exc}"
            return section
        totals = manifest.totals
        languages = sorted({f.language for f in manifest.files})
        families = sorted({f.family for f in manifest.files})
        section.facts = [
            ("documents", f"{totals['rows']:,}"),
            ("tokens", f"{totals['tokens']:,}"),
            ("languages", str(len(languages))),
            ("families", str(len(families))),
            ("shard files", str(totals["files"])),
            ("expert scheme", manifest.scheme),
        ]

        def split_sums(files, split):
            chosen = [f for f in files if f.split == split]
            return sum(f.rows for f in chosen), sum(f.tokens for f in chosen)

        rows = []
        for language in languages:
            files = [f for f in manifest.files if f.language == language]
            train_docs, train_tokens = split_sums(files, "train")
            valid_docs, valid_tokens = split_sums(files, "validation")
            rows.append([language, files[0].family, train_docs, valid_docs, train_tokens, valid_tokens])
        section.tables.append(
            Table(
                ["language", "family", "train docs", "validation docs", "train tokens", "validation tokens"],
                rows,
                "Per language",
            )
        )
        family_rows = []
        for family in families:
            files = [f for f in manifest.files if f.family == family]
            family_rows.append(
                [
                    family,
                    len({f.language for f in files}),
                    sum(f.rows for f in files),
                    sum(f.tokens for f in files),
                ]
            )
        section.tables.append(
            Table(["family", "languages", "documents", "tokens"], family_rows, "Per family")
        )
        card = shards / "README.md"
        if card.is_file():
            section.details_title = "The dataset card (OUT/shards/README.md)"
            section.html = self.render_card(card)
        return section

    def render_card(self, card: Path) -> Markup:
        """The dataset card as HTML (raw HTML in it is escaped); its local images are copied next to the page."""
        from markdown_it import MarkdownIt

        html = (
            MarkdownIt("commonmark", {"html": False}).enable("table").render(card.read_text(encoding="utf-8"))
        )

        def relink(match: re.Match) -> str:
            src = match.group(1)
            source = (card.parent / src).resolve()
            if (
                re.match(r"^[a-z]+:", src)
                or not source.is_file()
                or card.parent.resolve() not in source.parents
            ):
                return match.group(0)
            name = "card_" + re.sub(r"[^A-Za-z0-9_.-]", "_", src)
            return f'src="{self.copy_image(source, name)}"'

        return Markup(re.sub(r'src="([^"]+)"', relink, html))

    # ---- funnel ------------------------------------------------------------------------------
    def funnel(self) -> Section:
        section = Section("funnel", "Stage funnel")
        rows = []
        names, outs = [], []
        for row in stage_funnel(self.out):
            if not row.ran:
                rows.append([row.stage, "–", "–", "–", "not run", "–"])
                continue
            top = ", ".join(f"{k} {v:,}" for k, v in list(row.removed.items())[:4])
            rows.append(
                [
                    row.stage,
                    fmt(row.docs_in),
                    fmt(row.docs_out),
                    fmt(row.quarantined),
                    top or "–",
                    fmt(row.seconds, 1),
                ]
            )
            if row.docs_out:
                names.append(row.stage)
                outs.append(row.docs_out)
        if not names and all(r[4] == "not run" for r in rows):
            section.missing = f"No stage summaries under {self.out} (run `make all`)."
            return section
        section.tables.append(
            Table(["stage", "docs in", "docs out", "quarantined", "top reasons", "seconds"], rows, wrap=(4,))
        )
        if names:
            path = plots.grouped_bars(
                {"documents out": outs},
                names,
                "Documents leaving each stage",
                "documents",
                self.img_dir / "funnel.png",
                percent=False,
            )
            section.images.append(
                Image(f"img/{path.name}", "Documents written by each stage (record-producing stages).")
            )
        return section

    # ---- translation -------------------------------------------------------------------------
    def translation(self) -> Section:
        section = Section("translation", "Translation accounting")
        summary = read_json(self.out / "translate" / "summary.json")
        if not isinstance(summary, dict):
            section.missing = (
                f"No translation summary at {self.out / 'translate' / 'summary.json'} (run `make translate`)."
            )
            return section
        extra = {k: v for k, v in summary.items() if k not in _STANDARD_SUMMARY_KEYS}
        section.facts = [
            ("documents in", f"{summary.get('docs_in', 0):,}"),
            ("documents out", f"{summary.get('docs_out', 0):,}"),
            ("quarantined", f"{summary.get('quarantined', 0):,}"),
        ]
        section.facts += [(k, str(fmt(v))) for k, v in extra.items() if not isinstance(v, dict | list)]
        for key, value in extra.items():
            if isinstance(value, dict) and value:
                section.tables.append(mapping_table(key, value))
        per_language = summary.get("per_language") or {}
        if per_language:
            section.tables.append(
                Table(
                    ["language", "in", "out", "quarantined"],
                    [
                        [lang, v.get("in", 0), v.get("out", 0), sum((v.get("quarantined") or {}).values())]
                        for lang, v in sorted(per_language.items())
                    ],
                    "Documents per language",
                )
            )
        return section

    # ---- training ----------------------------------------------------------------------------
    def training(self) -> Section:
        section = Section("training", "Training", images_first=True)
        train_dir = self.out / "train"
        logs = sorted(train_dir.glob("*.jsonl")) + sorted((train_dir / "logs").glob("*.jsonl"))
        records = []
        for log in logs:
            with open(log, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    try:
                        row = json.loads(line)
                    except ValueError:
                        continue  # a crash mid-write leaves a broken last line
                    if isinstance(row, dict) and isinstance(row.get("step"), int | float):
                        records.append(row)
        summary = read_json(train_dir / "summary.json")
        if isinstance(summary, dict):
            section.facts = [
                (k, str(fmt(v)))
                for k, v in summary.items()
                if k not in _STANDARD_SUMMARY_KEYS and not isinstance(v, dict | list)
            ][:12]
        if not any("loss" in r for r in records):
            section.missing = (
                f"No training logs (lines with 'step' and 'loss' in OUT/train/logs/*.jsonl) under "
                f"{train_dir} (run `make train`)."
            )
            return section
        section.intro = f"{len(records):,} log lines from {', '.join(p.name for p in logs)}."
        train_loss = self.series(records, "loss")
        curves = {"train": train_loss}
        for key in ("val_loss", "valid_loss"):
            if self.series(records, key)[0]:
                curves["validation"] = self.series(records, key)
                break
        section.images.append(self.curve(curves, "loss", "loss", "train_loss.png", logy=True))
        for key, title, ylabel in (
            ("tokens_per_s", "throughput", "tokens / s"),
            ("mfu", "model FLOPs utilisation", "MFU (%)"),
        ):
            steps, values = self.series(records, key)
            if steps:
                if key == "mfu" and max(values) <= 1:
                    values = [100 * v for v in values]
                section.images.append(self.curve({key: (steps, values)}, title, ylabel, f"train_{key}.png"))
        agreement = {
            label: (steps, [100 * v for v in values])
            for label, key in (
                ("validation (stock top-k)", "agreement"),
                ("training batches", "router_agreement"),
            )
            for steps, values in [self.series(records, key)]
            if steps
        }
        if agreement:
            section.images.append(
                self.curve(agreement, "router holds the family expert", "tokens (%)", "train_agreement.png")
            )
        per_language: dict[str, tuple[list, list]] = {}
        for row in records:
            values = row.get("val_loss_by_language", row.get("val_loss_per_language"))
            if isinstance(values, dict):
                for language, value in values.items():
                    if isinstance(value, int | float) and math.isfinite(value):
                        per_language.setdefault(language, ([], []))
                        per_language[language][0].append(row["step"])
                        per_language[language][1].append(value)
        if per_language:
            section.images.append(
                self.curve(
                    dict(sorted(per_language.items())),
                    "validation loss per language",
                    "loss",
                    "train_val_loss_per_language.png",
                )
            )
        last = next(r for r in reversed(records) if "loss" in r)
        section.tables.append(
            Table(
                ["key", "value"],
                [[k, fmt(v)] for k, v in last.items() if isinstance(v, int | float | str)],
                f"Last training step ({last['step']})",
            )
        )
        return section

    def series(self, records: list[dict], key: str) -> tuple[list, list]:
        points = [
            (r["step"], r[key])
            for r in records
            if isinstance(r.get(key), int | float) and math.isfinite(r[key])
        ]
        stride = max(1, math.ceil(len(points) / self.max_curve_points))
        points = points[::stride]
        return [p[0] for p in points], [p[1] for p in points]

    def curve(self, series: dict, title: str, ylabel: str, name: str, logy: bool = False) -> Image:
        path = plots.line_plot(series, title, "step", ylabel, self.img_dir / name, logy=logy, integer_x=True)
        return Image(f"img/{path.name}", title)

    # ---- evaluation --------------------------------------------------------------------------
    def accuracy(self) -> Section:
        section = Section("accuracy", "Medical QA accuracy")
        results = read_json(self.out / "eval" / "accuracy.json")
        if not isinstance(results, dict) or not results:
            section.missing = f"No accuracy results at {self.out / 'eval' / 'accuracy.json'} (run `make eval` with eval.benchmarks)."
            return section
        modes = list(results)
        summary = read_json(self.out / "eval" / "summary.json")
        summary = summary if isinstance(summary, dict) else {}
        protocol = summary.get("protocol", "apollomoe")
        section.intro = (
            f"Protocol: {protocol}. loglik: the option letter with the highest log-probability (no "
            "generation). generate: greedy decoding, the answer read from the first non-empty line. "
            + (
                "English's and Chinese's accuracy is the mean over their sources, every other language "
                "pools its questions (the original ApolloMoE results scripts); "
                if protocol == "apollomoe"
                else "A language's accuracy is the mean over its sources, multi-answer questions "
                "(exact set match) reported apart; "
            )
            + "Major/Minor are unweighted means over the languages present."
        )
        benchmarks = summary.get("benchmarks") or {}
        if benchmarks:
            section.tables.append(
                Table(
                    ["benchmark", "format", "read", "usable", "scored", "multi-answer", "rejected"],
                    [
                        [
                            name,
                            b.get("format", "–"),
                            b.get("read", 0),
                            b.get("usable", 0),
                            b.get("scored", 0),
                            b.get("multi_answer", 0),
                            rejected_text(b.get("rejected") or {}),
                        ]
                        for name, b in benchmarks.items()
                    ],
                    "Benchmarks (questions read, scored, rejected by reason)",
                )
            )
        section.tables.append(
            Table(
                ["", *modes],
                [
                    ["Major", *[pct(results[m].get("major")) for m in modes]],
                    ["Minor", *[pct(results[m].get("minor")) for m in modes]],
                    ["All questions", *[pct(results[m].get("accuracy_micro")) for m in modes]],
                ],
                "Aggregates (accuracy, %)",
            )
        )
        languages = sorted({lang for r in results.values() for lang in r.get("per_language", {})})
        rows = []
        for lang in languages:
            info = next(
                r["per_language"][lang] for r in results.values() if lang in r.get("per_language", {})
            )
            rows.append(
                [
                    lang,
                    info.get("tier", "–"),
                    info.get("n", 0),
                    *[pct(results[m].get("per_language", {}).get(lang, {}).get("accuracy")) for m in modes],
                ]
            )
        section.tables.append(
            Table(["language", "tier", "questions", *modes], rows, "Per language (accuracy, %)")
        )
        sources = sorted({s for r in results.values() for s in r.get("per_source", {})})
        rows = []
        for source in sources:
            info = next(
                r["per_source"][source] for r in results.values() if source in r.get("per_source", {})
            )
            rows.append(
                [
                    source,
                    ", ".join(info.get("languages", [])),
                    info.get("n", 0),
                    *[pct(results[m].get("per_source", {}).get(source, {}).get("accuracy")) for m in modes],
                ]
            )
        section.tables.append(
            Table(["source", "languages", "questions", *modes], rows, "Per source (accuracy, %)")
        )
        return section

    def validation(self) -> Section:
        section = Section("validation", "Validation loss")
        data = read_json(self.out / "eval" / "perplexity.json")
        if not isinstance(data, dict):
            section.missing = f"No validation results at {self.out / 'eval' / 'perplexity.json'}."
            return section
        overall = data.get("overall") or {}
        section.facts = [
            ("documents", str(fmt(overall.get("documents")))),
            ("tokens", str(fmt(overall.get("tokens")))),
            ("loss", str(fmt(overall.get("loss")))),
            ("perplexity", str(fmt(overall.get("perplexity"), 1))),
        ]
        for key, label in (("per_language", "language"), ("per_family", "family")):
            values = data.get(key) or {}
            section.tables.append(
                Table(
                    [label, "documents", "tokens", "loss", "perplexity"],
                    [
                        [
                            name,
                            v.get("documents"),
                            v.get("tokens"),
                            fmt(v.get("loss")),
                            fmt(v.get("perplexity"), 1),
                        ]
                        for name, v in values.items()
                    ],
                    f"Per {label}",
                )
            )
        return section

    def routing(self) -> Section:
        section = Section("routing", "Routing")
        data = read_json(self.out / "eval" / "routing.json")
        plot_dir = self.out / "eval" / "plots"
        if not isinstance(data, dict):
            section.missing = f"No routing analysis at {self.out / 'eval' / 'routing.json'} (a model without MoE layers, or eval not run)."
            return section
        layers = [str(layer) for layer in data.get("layers", [])]
        section.intro = (
            f"Stock top-{data.get('top_k')} router over {data.get('num_experts')} experts on the valid split. "
            "Agreement: tokens whose top-k contains their family expert "
            f"(chance {pct(data.get('chance_agreement'))}%)."
        )
        agreement = data.get("agreement") or {}
        languages = sorted({lang for per in agreement.values() for lang in per})
        section.tables.append(
            Table(
                ["language", "tokens", *[f"layer {layer}" for layer in layers]],
                [
                    [
                        lang,
                        (data.get("tokens") or {}).get(lang),
                        *[pct(agreement.get(layer, {}).get(lang)) for layer in layers],
                    ]
                    for lang in languages
                ]
                + [
                    [
                        "all",
                        sum((data.get("tokens") or {}).values()),
                        *[pct((data.get("agreement_overall") or {}).get(layer)) for layer in layers],
                    ]
                ],
                "Family-expert agreement (%)",
            )
        )
        balance = data.get("load_balance") or {}
        section.tables.append(
            Table(
                ["layer", "coefficient of variation", "max / mean", "normalised entropy"],
                [
                    [
                        layer,
                        fmt(balance.get(layer, {}).get("cv")),
                        fmt(balance.get(layer, {}).get("max_over_mean")),
                        fmt(balance.get(layer, {}).get("normalized_entropy")),
                    ]
                    for layer in layers
                ],
                "Expert load balance (0 / 1 / 1 = perfectly even)",
            )
        )
        order = ["routing_share_layer", "routing_agreement", "expert_load", "routing_divergence"]
        pngs = sorted(
            plot_dir.glob("*.png"),
            key=lambda p: (
                next((i for i, o in enumerate(order) if p.stem.startswith(o)), len(order)),
                p.name,
            ),
        )
        for png in pngs:
            wide = png.stem.startswith(("routing_share_layer", "routing_agreement"))
            section.images.append(Image(self.copy_image(png, f"eval_{png.name}"), _caption(png.stem), wide))
        return section

    def spread(self) -> Section:
        section = Section("spread", "Spread out in the end")
        data = read_json(self.out / "spread" / "spread.json")
        plot = self.out / "spread" / "jsd_by_layer.png"
        if not isinstance(data, dict) or not plot.is_file():
            section.missing = (
                "Not run. `python -m moe_train.spread --config CONFIG --out OUT` "
                "upcycles every layer, trains briefly and plots routing divergence by layer."
            )
            return section
        section.intro = (
            f"Every layer upcycled, {data.get('steps')} training steps, "
            f"{len(data.get('languages', []))} languages."
        )
        section.images.append(
            Image(
                self.copy_image(plot, "spread_jsd_by_layer.png"),
                "Jensen-Shannon divergence of the languages' expert distributions, by layer.",
            )
        )
        return section


def _caption(stem: str) -> str:
    if stem.startswith("routing_share_layer"):
        return f"Share of each language's tokens per expert, layer {int(stem.rsplit('layer', 1)[1])} (the paper's Figure 3)."
    return {
        "routing_agreement": "How often the stock router's top-k already contains the family expert.",
        "expert_load": "Expert load per MoE layer.",
        "routing_divergence": "Routing divergence across languages by MoE layer.",
    }.get(stem, stem.replace("_", " "))


def build_report(
    out: Path, report_dir: Path, title: str, run_name: str = "", max_curve_points: int = 2000
) -> dict:
    """Write report_dir/index.html and its images; returns which sections had data."""
    report_dir = Path(report_dir)
    shutil.rmtree(report_dir / "img", ignore_errors=True)
    builder = ReportBuilder(out, report_dir, max_curve_points)
    sections = [
        builder.corpus(),
        builder.funnel(),
        builder.translation(),
        builder.training(),
        builder.accuracy(),
        builder.validation(),
        builder.routing(),
        builder.spread(),
    ]
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    subtitle = f"run {run_name} · output {Path(out).resolve()} · generated {generated}"
    html = render_page(title, subtitle, sections)
    atomic.write_text(report_dir / "index.html", html)
    return {
        "page": str(report_dir / "index.html"),
        "sections": {s.id: ("missing" if s.missing else "ok") for s in sections},
        "images": len(list((report_dir / "img").glob("*.png"))),
    }


def run(ctx) -> dict:
    return build_report(
        ctx.out, ctx.stage_dir, ctx.cfg.report.title, ctx.cfg.run.name, ctx.cfg.report.max_curve_points
    )
