"""Removal guards: what a filtering stage removed per language and per source, and a warning with
examples when it removed more than a share of one language of one source.

A filter that quietly drops a tenth of one language's text from one source (clean Swahili sentences
read as Tagalog, Arabic sentences without a listed stop word) is the failure a user cannot see in a
total. Every `RecordFilter` counts what it saw and removed per (language, source); after the stage
these counters become the summary's `removal_by_language_source`, and each group above
`run.warn_removed_share` a warning naming the rule and showing example texts from the quarantine.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

SEEN = "guard_in"
REMOVED = "guard_removed"
EXAMPLES = 3


def seen_key(language: str, source: str) -> str:
    return f"{SEEN}/{language}/{source}"


def removed_key(language: str, reason: str, source: str) -> str:
    return f"{REMOVED}/{language}/{reason}/{source}"


def removal_table(counters: dict[str, float]) -> dict[str, dict[str, dict]]:
    """{language: {source: {in, removed, share, by_reason}}} from the guard counters (a source name may
    hold '/', so it is the last part of the key)."""
    table: dict[str, dict[str, dict]] = defaultdict(dict)

    def entry(language: str, source: str) -> dict:
        return table[language].setdefault(source, {"in": 0, "removed": 0, "share": 0.0, "by_reason": {}})

    for key, value in counters.items():
        if key.startswith(SEEN + "/"):
            _, language, source = key.split("/", 2)
            entry(language, source)["in"] += int(value)
        elif key.startswith(REMOVED + "/"):
            _, language, reason, source = key.split("/", 3)
            row = entry(language, source)
            row["removed"] += int(value)
            row["by_reason"][reason] = row["by_reason"].get(reason, 0) + int(value)
    for rows in table.values():
        for row in rows.values():
            row["share"] = round(row["removed"] / row["in"], 4) if row["in"] else 0.0
            row["by_reason"] = dict(sorted(row["by_reason"].items(), key=lambda kv: (-kv[1], kv[0])))
    return {language: dict(sorted(rows.items())) for language, rows in sorted(table.items())}


def warnings(table: dict[str, dict[str, dict]], quarantine_dir: Path, max_share: float) -> list[dict]:
    """One warning per (language, source) that lost more than `max_share` of its records, with the rule
    that removed most and up to three example texts from the stage's quarantine."""
    out = []
    for language, rows in table.items():
        for source, row in rows.items():
            if row["removed"] and row["share"] > max_share:
                rule = next(iter(row["by_reason"]))
                out.append(
                    {
                        "language": language,
                        "source": source,
                        "in": row["in"],
                        "removed": row["removed"],
                        "share": row["share"],
                        "rule": rule,
                        "examples": _examples(quarantine_dir, language, source),
                    }
                )
    return out


def _examples(quarantine_dir: Path, language: str, source: str) -> list[dict]:
    found: list[dict] = []
    for path in sorted(Path(quarantine_dir).glob("*.parquet")):
        columns = ["id", "text", "language", "source", "quarantine_reason", "quarantine_detail"]
        table = pq.read_table(path, columns=columns)
        mask = pc.and_(pc.equal(table["language"], language), pc.equal(table["source"], source))
        for row in table.filter(mask).slice(0, EXAMPLES - len(found)).to_pylist():
            found.append(
                {
                    "id": row["id"],
                    "text": row["text"][:200],
                    "reason": row["quarantine_reason"],
                    "detail": row["quarantine_detail"],
                }
            )
        if len(found) >= EXAMPLES:
            break
    return found


def format_warnings(stage: str, items: list[dict], max_share: float) -> str:
    """The console lines of the warnings (empty when there are none)."""
    lines = []
    for w in items:
        lines.append(
            f"[{stage}] WARNING: removed {w['share']:.1%} of {w['language']} from source '{w['source']}' "
            f"({w['removed']} of {w['in']}; more than {max_share:.0%}), mostly {w['rule']}:"
        )
        for example in w["examples"]:
            text = " ".join(example["text"].split())
            text = text if len(text) <= 100 else text[:99] + "…"
            lines.append(f"    {example['id']}: {text!r}  <- {example['detail'] or example['reason']}")
    if lines:
        lines.append(
            f"    (see `medbabel explain <id>`; set run.warn_removed_share to change the {max_share:.0%})"
        )
    return "\n".join(lines)
