"""PMC articles in JATS/NLM XML (.nxml; also a <pmc-articleset> of several): one record per article.

The record is the title, the abstract and the body's sections in document order, each section
title on a line of its own and one paragraph per line. References, acknowledgements, figures,
formulas and supplementary material are left out; tables too, unless `tables: true` (then each
row becomes a tab-separated line under the table's caption). The parse is streaming and safe
(pipeline/readers/documents.py). `source_id` is the PMCID (else PMID, else DOI), `url` the PMC
page, and `license` the article's own <license> (a Creative Commons URL becomes its SPDX id).
"""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.readers.documents import DocumentSourceReader, XmlBroken, iter_elements, local_name, text_of
from pipeline.readers.rejects import Reject

_XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
_LEFT_OUT = frozenset(
    {
        "ref-list",
        "fig",
        "fig-group",
        "disp-formula",
        "supplementary-material",
        "ack",
        "table-wrap-foot",
        "inline-formula",
        "tex-math",
        "alternatives",
        "graphic",
        "media",
    }
)
_BLOCKS = frozenset({"p", "title", "sec", "list", "list-item", "table-wrap", "boxed-text", "disp-quote"})
_CC = re.compile(
    r"creativecommons\.org/(?:licenses/(?P<kind>[a-z-]+)/(?P<v>[\d.]+)|publicdomain/zero/(?P<z>[\d.]+))"
)


def spdx_license(url: str | None) -> str | None:
    """SPDX id of a Creative Commons URL (http://creativecommons.org/licenses/by/2.0 -> CC-BY-2.0)."""
    match = _CC.search(url or "")
    if not match:
        return None
    if match["z"]:
        return f"CC0-{match['z']}"
    return f"CC-{match['kind'].upper()}-{match['v']}"


def article_license(article) -> str | None:
    for element in article.iter():
        if local_name(element.tag) == "license":
            href = element.get(_XLINK_HREF)
            if not href:
                link = next((e for e in element.iter() if e.get(_XLINK_HREF)), None)
                href = link.get(_XLINK_HREF) if link is not None else None
            return spdx_license(href) or href or element.get("license-type") or text_of(element)[:200] or None
    return None


def _find(element, path: list[str]):
    for name in path:
        if element is None:
            return None
        element = next((c for c in element if local_name(c.tag) == name), None)
    return element


# Back-matter sections that some journals (BMC) put in the body.
_BACK_MATTER_TITLES = frozenset(
    {
        "competing interests",
        "authors' contributions",
        "author contributions",
        "pre-publication history",
        "acknowledgements",
        "acknowledgments",
        "funding",
        "declarations",
        "conflict of interest",
        "conflicts of interest",
        "availability of data and materials",
        "supplementary material",
    }
)


def _back_matter(section) -> bool:
    title = _find(section, ["title"])
    kind = section.get("sec-type") or ""
    return text_of(title).lower().rstrip(".:") in _BACK_MATTER_TITLES or kind in (
        "COI-statement",
        "author-contributions",
        "supplementary-material",
        "funding",
    )


def _table_lines(table_wrap) -> list[str]:
    caption = text_of(_find(table_wrap, ["caption"]))
    lines = [caption] if caption else []
    for row in table_wrap.iter():
        if local_name(row.tag) == "tr":
            lines.append("\t".join(text_of(cell) for cell in row if local_name(cell.tag) in ("td", "th")))
    return lines


def _blocks(element, tables: bool, out: list[str]) -> None:
    """Paragraph and heading lines of a section tree, in document order."""
    for child in element:
        name = local_name(child.tag)
        if name in _LEFT_OUT:
            continue
        if name == "table-wrap":
            if tables:
                out.extend(_table_lines(child))
        elif name == "title":
            title = text_of(child)
            if title:
                out.append("")
                out.append(title)
        elif name == "p" and not any(local_name(c.tag) in _BLOCKS for c in child):
            paragraph = text_of(child, _LEFT_OUT | {"table-wrap"})
            if paragraph:
                out.append(paragraph)
        elif name == "sec" and _back_matter(child):
            continue
        elif name in ("sec", "list", "list-item", "boxed-text", "disp-quote", "p", "abstract", "body"):
            _blocks(child, tables, out)
        elif name not in ("label", "caption"):
            paragraph = text_of(child, _LEFT_OUT)
            if paragraph:
                out.append(paragraph)


def article_text(article, tables: bool) -> str:
    """Title, abstract(s) and body of one JATS <article>."""
    meta = _find(article, ["front", "article-meta"])
    lines = [text_of(_find(meta, ["title-group", "article-title"]))]
    for abstract in meta.iter() if meta is not None else ():
        if local_name(abstract.tag) == "abstract" and abstract.get("abstract-type") in (None, "structured"):
            lines.append("")
            _blocks(abstract, tables, lines)
    body = _find(article, ["body"])
    if body is not None:
        lines.append("")
        _blocks(body, tables, lines)
    return "\n".join(lines)


def article_ids(article) -> dict[str, str]:
    meta = _find(article, ["front", "article-meta"])
    ids = {}
    for element in meta if meta is not None else ():
        if local_name(element.tag) == "article-id" and element.text:
            ids[element.get("pub-id-type", "")] = element.text.strip()
    return ids


class JatsSourceReader(DocumentSourceReader):
    """PMC/JATS articles; `source_position` is the article's number in the file."""

    name = "📖 jats source"

    def iter_results(self, path: Path, file_key: str):
        number = 0
        try:
            for article, number in iter_elements(path, {"article"}, self.collect):
                self._line = number
                yield self._article(article, file_key, number), number, None
        except XmlBroken as exc:
            yield Reject("malformed_xml", f"after article {number}: {exc.detail}"), exc.line, None

    def _article(self, article, file_key: str, number: int):
        ids = article_ids(article)
        pmcid = ids.get("pmc") or ids.get("pmcid")
        if pmcid and not pmcid.upper().startswith("PMC"):
            pmcid = f"PMC{pmcid}"
        source_id = pmcid or (f"PMID:{ids['pmid']}" if "pmid" in ids else None) or ids.get("doi")
        url = f"https://pmc.ncbi.nlm.nih.gov/articles/{pmcid}/" if pmcid else None
        return self.document(
            article_text(article, self.source.tables),
            file_key,
            number,
            source_id=source_id,
            url=url,
            declared_language=article.get(_XML_LANG),
            license=article_license(article),
        )
