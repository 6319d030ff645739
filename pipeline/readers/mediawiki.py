"""MediaWiki XML dumps (pages-articles, .xml / .xml.bz2 / .xml.gz): one record per page.

The dump is streamed page by page (memory holds one page). Wikitext becomes plain text with
mwparserfromhell: templates, tables, references, files/images, categories and interwiki links are
dropped, links keep their text, section headings stay as lines of their own. Redirects and pages
outside `wiki_namespaces` are passed over (counted as `skipped/...`); `wiki_categories` and
`wiki_title_pattern` keep only matching pages. `source_id` is the page id, `url` the page's
address when the dump's <siteinfo> gives the wiki's base URL, `source_position` the page's
number in the file.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from urllib.parse import quote

from pipeline.readers.documents import DocumentSourceReader, XmlBroken, iter_elements, local_name
from pipeline.readers.rejects import Reject

_DROPPED_TAGS = {
    "ref",
    "references",
    "table",
    "gallery",
    "math",
    "timeline",
    "imagemap",
    "score",
    "syntaxhighlight",
}
_CATEGORY_NAMES = {"category"}
_FILE_NAMESPACES = {"file", "image", "media"}


def _child(element, name: str):
    for child in element:
        if local_name(child.tag) == name:
            return child
    return None


def _child_text(element, name: str) -> str | None:
    child = _child(element, name)
    return child.text if child is not None else None


class _Site:
    """What <siteinfo> says: the base URL and the wiki's own names of the Category/File namespaces."""

    def __init__(self):
        self.base_url: str | None = None
        self.category_names = set(_CATEGORY_NAMES)
        self.file_names = set(_FILE_NAMESPACES)

    def read(self, siteinfo) -> None:
        base = _child_text(siteinfo, "base")
        if base and "/wiki/" in base:
            self.base_url = base.split("/wiki/")[0] + "/wiki/"
        namespaces = _child(siteinfo, "namespaces")
        for namespace in namespaces if namespaces is not None else ():
            key, name = namespace.get("key"), (namespace.text or "").strip().lower()
            if key == "14" and name:
                self.category_names.add(name)
            elif key in ("6", "-2") and name:
                self.file_names.add(name)


def page_categories(wikitext: str, site: _Site) -> list[str]:
    names = "|".join(re.escape(n) for n in sorted(site.category_names))
    pattern = re.compile(rf"\[\[\s*(?:{names})\s*:\s*([^\]|]+)", re.I)
    return [m.group(1).strip() for m in pattern.finditer(wikitext)]


_END_SECTIONS = {
    "see also",
    "references",
    "external links",
    "notes",
    "further reading",
    "bibliography",
    "sources",
    "footnotes",
    "citations",
    "notes and references",
}
_HEADING = "\x1e"  # marks a heading line until empty sections are dropped


def wikitext_to_text(wikitext: str, site: _Site | None = None) -> str:
    """Plain text of a page's wikitext: templates, tables, references, files, categories and the
    closing link sections (See also, References, External links...) dropped; headings of empty
    sections dropped."""
    import mwparserfromhell
    from mwparserfromhell.nodes import Tag, Template, Wikilink

    site = site or _Site()
    code = mwparserfromhell.parse(wikitext)
    kept = []
    for section in code.get_sections(levels=[2], include_lead=True):
        headings = section.filter_headings(recursive=False)
        if headings and headings[0].title.strip_code().strip().lower() in _END_SECTIONS:
            continue
        kept.append(str(section))
    code = mwparserfromhell.parse("".join(kept))
    prefixes = site.category_names | site.file_names

    def dropped(node) -> bool:
        if isinstance(node, Template):
            return True
        if isinstance(node, Tag):
            return str(node.tag).strip().lower() in _DROPPED_TAGS
        if isinstance(node, Wikilink):
            target = str(node.title).strip().lstrip(":")
            prefix = target.split(":", 1)[0].strip().lower() if ":" in target else ""
            return prefix in prefixes or (len(prefix) in (2, 3) and prefix.isalpha())  # interlanguage
        return False

    for recursive in (False, True):  # top level first: nested nodes mostly go with their parent
        for node in code.filter(recursive=recursive, forcetype=(Template, Tag, Wikilink)):
            if dropped(node):
                with contextlib.suppress(ValueError):  # already gone with an enclosing node
                    code.remove(node)
    for heading in code.filter_headings():
        code.replace(heading, f"\n\n{_HEADING}{heading.title.strip_code().strip()}\n\n")
    text = code.strip_code(normalize=True, collapse=True)
    text = re.sub(r"^[ \t]*[*#:;]+[ \t]*", "", text, flags=re.M)  # list markers left by strip_code
    lines = [line for line in text.split("\n") if line.strip()]
    out = []
    for i, line in enumerate(lines):
        if line.startswith(_HEADING):
            if i + 1 == len(lines) or lines[i + 1].startswith(_HEADING):
                continue  # a heading with nothing under it (its content was a table or template)
            out.append("")
            out.append(line[1:].strip())
        else:
            out.append(line.strip())
    return "\n".join(out).strip()


class MediaWikiSourceReader(DocumentSourceReader):
    """Pages of MediaWiki XML export dumps."""

    name = "📖 mediawiki source"

    def iter_results(self, path: Path, file_key: str):
        site = _Site()
        title_filter = re.compile(self.source.wiki_title_pattern) if self.source.wiki_title_pattern else None
        wanted = {c.replace("_", " ").strip().lower() for c in self.source.wiki_categories}
        page_number = 0
        try:
            for element, _ in iter_elements(path, {"page", "siteinfo"}, self.collect):
                if local_name(element.tag) == "siteinfo":
                    site.read(element)
                    continue
                page_number += 1
                self._line = page_number
                result = self._page(element, site, file_key, page_number, title_filter, wanted)
                if result is not None:
                    yield result, page_number, None
        except XmlBroken as exc:
            yield Reject("malformed_xml", f"after page {page_number}: {exc.detail}"), exc.line, None
        except OSError as exc:  # bz2 raises OSError on data that is not bzip2
            yield Reject("unreadable_file", f"after page {page_number}: {exc}"), None, None

    def _page(self, page, site: _Site, file_key: str, number: int, title_filter, wanted: set[str]):
        title = _child_text(page, "title") or ""
        namespace = int(_child_text(page, "ns") or 0)
        if namespace not in self.source.wiki_namespaces:
            self.stat_update("skipped/namespace")
            return None
        if _child(page, "redirect") is not None:
            self.stat_update("skipped/redirect")
            return None
        if title_filter and not title_filter.search(title):
            self.stat_update("skipped/title_filter")
            return None
        revision = _child(page, "revision")
        wikitext = (_child_text(revision, "text") if revision is not None else None) or ""
        if wanted and not wanted & {c.replace("_", " ").lower() for c in page_categories(wikitext, site)}:
            self.stat_update("skipped/category_filter")
            return None
        if len(wikitext) > self.max_bytes:
            return self.too_large(len(wikitext), f"page '{title}'")
        text = wikitext_to_text(wikitext, site)
        url = site.base_url + quote(title.replace(" ", "_")) if site.base_url else None
        return self.document(
            f"{title}\n\n{text}", file_key, number, source_id=_child_text(page, "id"), url=url
        )
