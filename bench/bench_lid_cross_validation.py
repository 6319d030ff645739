"""Are language ID's common-word settings fitted to the paragraphs they are measured on? A two-fold check.

Texts declared in a language lid.176 lacks (ha rw ln bm nso ig) are also judged by their common words
(`pipeline.text.common_words.common_word_contradiction`), with two settings: the least share of the declared
language's common words (`min_common_word_share`) and how far another listed language's share may
exceed it (`common_word_margin`). The shipped values were chosen on the language-ID benchmark's
paragraphs (`bench/lid_eval.py`), the same ones its figures come from.

Here each language's paragraphs alternate between two halves. On one half the grid's best pair is
chosen: the highest mean catch rate over the checked languages, among the pairs that keep every true
paragraph the check-off run keeps. That pair is then measured on the other half, and the other way
round. If the held-out figures match the tuning-half ones, the settings are not fitted to the text.
Prints a table and writes bench/results/lid_cross_validation.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_curation import TICO  # noqa: E402
from lid_eval import Paragraph, judged_pairs, load_paragraphs  # noqa: E402
from provenance import write_result  # noqa: E402

from pipeline.registry import load_registry  # noqa: E402
from pipeline.text.common_words import common_word_shares  # noqa: E402
from pipeline.text.lid_verify import LanguageVerifier, LidThresholds, verify  # noqa: E402

SHARES = (0.04, 0.06, 0.08, 0.10, 0.12, 0.14, 0.16)
MARGINS = (0.0, 0.025, 0.05, 0.075, 0.10)
CHECK_OFF = (0.0, 1.0)  # no share is below 0 and no rival leads by 100 points: nothing is rejected


def halves(paragraphs: list[Paragraph]) -> tuple[list[int], list[int]]:
    """Indices of the two halves: each language's paragraphs alternate between them."""
    seen: dict[str, int] = {}
    parts: tuple[list[int], list[int]] = ([], [])
    for i, paragraph in enumerate(paragraphs):
        n = seen.get(paragraph.language, 0)
        seen[paragraph.language] = n + 1
        parts[n % 2].append(i)
    return parts


class Scorer:
    """Keep and catch rates of the checked languages under given settings, on a subset of paragraphs
    (fastText predicts every paragraph once)."""

    def __init__(self, verifier: LanguageVerifier, paragraphs: list[Paragraph]):
        self.verifier = verifier
        self.paragraphs = paragraphs
        self.predictions = verifier.identifier.predict([p.text for p in paragraphs], k=verifier.k)
        registry = verifier.registry
        self.checked = sorted(
            code
            for code in verifier.common_words.codes & set(registry.codes)
            if not registry.get(code).lid_labels_for(verifier.model)
        )

    def headroom(self) -> dict[str, dict[str, float]]:
        """Per checked language, over its true paragraphs: the lowest share of its own common words and
        the largest lead of another language's share over it (how close the settings may come)."""
        out = {}
        v = self.verifier
        for code in self.checked:
            shares = [
                common_word_shares(p.text, v.common_words, v.thresholds.min_words_for_common_words)
                for p in self.paragraphs
                if p.in_registry and p.language == code
            ]
            shares = [s for s in shares if s is not None]
            own = [s.get(code, 0.0) for s in shares]
            leads = [
                max((x for c, x in s.items() if c != code), default=0.0) - s.get(code, 0.0) for s in shares
            ]
            out[code] = {
                "paragraphs": len(shares),
                "lowest_own_share": round(min(own), 4),
                "largest_rival_lead": round(max(leads), 4),
            }
        return out

    def rates(self, share: float, margin: float, subset: list[int]) -> dict:
        v = self.verifier
        thresholds: LidThresholds = dataclasses.replace(
            v.thresholds, min_common_word_share=share, common_word_margin=margin
        )
        kept = true = 0
        caught: dict[str, int] = dict.fromkeys(self.checked, 0)
        tried: dict[str, int] = dict.fromkeys(self.checked, 0)
        paragraphs = [self.paragraphs[i] for i in subset]
        for j, declared, truly in judged_pairs(paragraphs, self.checked, v.registry):
            i = subset[j]
            keep = verify(
                self.paragraphs[i].text,
                declared,
                self.predictions[i],
                v.registry,
                thresholds,
                v.model,
                v.common_words,
            ).keep
            if truly:
                kept += keep
                true += 1
            else:
                caught[declared] += not keep
                tried[declared] += 1
        catch = {code: round(caught[code] / tried[code], 4) for code in self.checked}
        return {
            "settings": {"min_common_word_share": share, "common_word_margin": margin},
            "keep_rate": round(kept / true, 4),
            "kept": kept,
            "true_paragraphs": true,
            "catch_rate_macro": round(sum(catch.values()) / len(catch), 4),
            "catch_rate": catch,
        }


def cross_validate(scorer: Scorer, shares: tuple[float, ...], margins: tuple[float, ...]) -> dict:
    parts = halves(scorer.paragraphs)
    shipped = (
        scorer.verifier.thresholds.min_common_word_share,
        scorer.verifier.thresholds.common_word_margin,
    )
    folds = []
    for tune, test in ((0, 1), (1, 0)):
        floor = scorer.rates(*CHECK_OFF, parts[tune])["kept"]
        grid = [scorer.rates(s, m, parts[tune]) for s in shares for m in margins]
        allowed = [r for r in grid if r["kept"] >= floor]
        best = max(allowed, key=lambda r: (r["catch_rate_macro"], r["keep_rate"]))
        chosen = (best["settings"]["min_common_word_share"], best["settings"]["common_word_margin"])
        folds.append(
            {
                "tuned_on_half": tune,
                "chosen": best["settings"],
                "tuning_half": best,
                "held_out_half": scorer.rates(*chosen, parts[test]),
                "held_out_half_shipped_settings": scorer.rates(*shipped, parts[test]),
                "held_out_half_check_off": scorer.rates(*CHECK_OFF, parts[test]),
            }
        )
    return {
        "checked_languages": scorer.checked,
        "paragraphs": len(scorer.paragraphs),
        "halves": [len(p) for p in parts],
        "grid": {"min_common_word_share": list(shares), "common_word_margin": list(margins)},
        "shipped": {"min_common_word_share": shipped[0], "common_word_margin": shipped[1]},
        "folds": folds,
        "true_paragraph_headroom": scorer.headroom(),
    }


def table(result: dict) -> str:
    lines = [f"{'':44}{'keep':>8}{'catch (mean)':>14}{'lowest catch':>20}"]
    for fold in result["folds"]:
        chosen = fold["chosen"]
        label = f"{chosen['min_common_word_share']:.3g} / {chosen['common_word_margin']:.3g}"
        rows = (
            (f"half {fold['tuned_on_half']}: chosen {label} (tuning half)", fold["tuning_half"]),
            ("   the same on the held-out half", fold["held_out_half"]),
            ("   shipped settings, held-out half", fold["held_out_half_shipped_settings"]),
            ("   check off, held-out half", fold["held_out_half_check_off"]),
        )
        for name, r in rows:
            code, rate = min(r["catch_rate"].items(), key=lambda item: item[1])
            lowest = f"{rate:.3f} ({code})"
            lines.append(f"{name:<44}{r['keep_rate']:>8.4f}{r['catch_rate_macro']:>14.4f}{lowest:>20}")
    lines.append("true paragraphs (all): lowest share of own common words / largest lead of another list")
    for code, h in result["true_paragraph_headroom"].items():
        shares = f"{h['lowest_own_share']:.3f} / {h['largest_rival_lead']:+.3f}"
        lines.append(f"   {code:<6}{h['paragraphs']:>5} paragraphs   {shares}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shares", type=float, nargs="+", default=SHARES, help="min_common_word_share grid")
    parser.add_argument("--margins", type=float, nargs="+", default=MARGINS, help="common_word_margin grid")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "results" / "lid_cross_validation.json"
    )
    args = parser.parse_args(argv)
    if not TICO.exists():
        print(f"shared data not found: {TICO}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    registry = load_registry()
    scorer = Scorer(LanguageVerifier(registry), load_paragraphs(TICO, registry))
    result = cross_validate(scorer, tuple(args.shares), tuple(args.margins))
    print(table(result))
    result["seconds"] = round(time.perf_counter() - started, 1)
    write_result(result, "bench_lid_cross_validation.py", argv, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
