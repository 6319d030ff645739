"""The report page's building blocks (sections of facts, tables and figures), how numbers read in
them, and the HTML template that lays them out: self-contained, inline CSS, images next to the page."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from jinja2 import Environment
from markupsafe import Markup


@dataclass
class Table:
    columns: list[str]
    rows: list[list]
    title: str = ""
    numeric: list[bool] = field(default_factory=list)
    wrap: tuple[int, ...] = ()  # columns whose long text wraps

    def __post_init__(self):
        if not self.numeric:
            self.numeric = [
                bool(self.rows)
                and all(isinstance(r[i], int | float) or r[i] in (None, "–") for r in self.rows)
                for i in range(len(self.columns))
            ]


@dataclass
class Image:
    file: str  # relative to the report directory
    caption: str
    wide: bool = False  # spans the page width (heatmaps with one row per language)


@dataclass
class Section:
    id: str
    title: str
    missing: str | None = None
    intro: str = ""
    facts: list[tuple[str, str]] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    images: list[Image] = field(default_factory=list)
    html: Markup | None = None  # trusted HTML we rendered ourselves (the dataset card)
    details_title: str = ""
    images_first: bool = False


def fmt(value, digits: int = 3):
    """Numbers as people read them in a table."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return "–"
        return round(value, 1) if abs(value) >= 10**digits else float(f"{value:.{digits + 1}g}")
    return str(value)


def pct(value) -> str | float:
    return "–" if value is None else round(100 * value, 1)


def mapping_table(title: str, value: dict) -> Table:
    """A dict as a table: a dict of dicts becomes rows x inner keys, anything else key/value."""
    if all(isinstance(v, dict) for v in value.values()):
        columns = sorted({k for v in value.values() for k in v if not isinstance(v[k], dict | list)})
        return Table(
            [title, *columns],
            [[name, *[fmt(inner.get(c)) for c in columns]] for name, inner in value.items()],
        )
    return Table(
        [title, "value"],
        [[k, fmt(v) if not isinstance(v, dict | list) else json.dumps(v)] for k, v in value.items()],
    )


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
 body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif; color: #1d1d1f;
        margin: 0; background: #f5f5f7; }
 header { background: #1d3557; color: #fff; padding: 20px 32px; }
 header h1 { margin: 0 0 4px; font-size: 24px; }
 header p { margin: 0; opacity: .85; }
 nav { padding: 8px 32px; background: #fff; border-bottom: 1px solid #ddd; position: sticky; top: 0; }
 nav a { margin-right: 16px; color: #1d3557; text-decoration: none; font-weight: 600; }
 main { padding: 8px 32px 40px; max-width: 1200px; }
 section { background: #fff; border-radius: 8px; padding: 16px 24px; margin: 18px 0; box-shadow: 0 1px 3px #0001; }
 h2 { margin-top: 4px; color: #1d3557; }
 h3 { margin-bottom: 6px; font-size: 16px; }
 .missing { background: #fff4e5; border-left: 4px solid #f0a020; padding: 8px 12px; }
 .facts { display: flex; flex-wrap: wrap; gap: 10px; margin: 8px 0 12px; }
 .fact { background: #eef2f7; border-radius: 6px; padding: 6px 12px; }
 .fact b { display: block; font-size: 18px; }
 .scroll { max-height: 480px; overflow: auto; margin-bottom: 8px; }
 table { border-collapse: collapse; font-size: 13px; }
 th, td { border-bottom: 1px solid #e3e3e3; padding: 4px 10px; text-align: left; white-space: nowrap; }
 th { background: #f0f3f8; position: sticky; top: 0; }
 td.num { text-align: right; font-variant-numeric: tabular-nums; }
 td.wrap { white-space: normal; min-width: 260px; max-width: 520px; }
 .figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 12px 20px; }
 figure { margin: 8px 0; }
 figure.wide { grid-column: 1 / -1; }
 figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
 figcaption { font-size: 13px; color: #555; max-width: 700px; }
 details { margin-top: 10px; }
 .card img { max-width: 100%; }
</style></head>
<body>
{% macro figures(s) %}{% if s.images %}<div class="figures">{% for im in s.images %}<figure{% if im.wide %} class="wide"{% endif %}><img src="{{ im.file }}" alt="{{ im.caption }}"><figcaption>{{ im.caption }}</figcaption></figure>{% endfor %}</div>{% endif %}{% endmacro %}
<header><h1>{{ title }}</h1><p>{{ subtitle }}</p></header>
<nav>{% for s in sections %}<a href="#{{ s.id }}">{{ s.title }}</a>{% endfor %}</nav>
<main>
{% for s in sections %}
<section id="{{ s.id }}" data-missing="{{ 'true' if s.missing else 'false' }}">
<h2>{{ s.title }}</h2>
{% if s.missing %}<p class="missing">{{ s.missing }}</p>{% endif %}
{% if s.intro %}<p>{{ s.intro }}</p>{% endif %}
{% if s.facts %}<div class="facts">{% for k, v in s.facts %}<div class="fact">{{ k }}<b>{{ v }}</b></div>{% endfor %}</div>{% endif %}
{% if s.images_first %}{{ figures(s) }}{% endif %}
{% for t in s.tables %}
{% if t.title %}<h3>{{ t.title }}</h3>{% endif %}
<div class="scroll"><table>
<thead><tr>{% for c in t.columns %}<th>{{ c }}</th>{% endfor %}</tr></thead>
<tbody>{% for row in t.rows %}<tr>{% for cell in row %}<td{% if t.numeric[loop.index0] %} class="num"{% elif loop.index0 in t.wrap %} class="wrap"{% endif %}>{{ cell }}</td>{% endfor %}</tr>{% endfor %}</tbody>
</table></div>
{% endfor %}
{% if not s.images_first %}{{ figures(s) }}{% endif %}
{% if s.html %}<details class="card"><summary>{{ s.details_title }}</summary>{{ s.html }}</details>{% endif %}
</section>
{% endfor %}
</main></body></html>
"""


def render_page(title: str, subtitle: str, sections: list[Section]) -> str:
    """The whole page as HTML (every value escaped except `Section.html`, which we render ourselves)."""
    return (
        Environment(autoescape=True)
        .from_string(PAGE)
        .render(title=title, subtitle=subtitle, sections=sections)
    )
