"""PubMed/MEDLINE citation XML (a <PubmedArticleSet>, e.g. EFetch output or the annual baseline
files, .xml or .xml.gz): one record per <PubmedArticle>, its title and abstract.

Structured abstracts keep their section labels ("METHODS: ..."), one section per line. A citation
without an abstract is its title alone (and may fall under `collect.min_doc_chars`). The file is
streamed citation by citation through the safe parse (pipeline/readers/documents.py).
`source_id` is the PMID, `url` its PubMed page. MEDLINE abstracts are usually English whatever
the article's language (<Language>), so with `language_detect` the language comes from language
ID.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.readers.documents import DocumentSourceReader, XmlBroken, iter_elements, local_name, text_of
from pipeline.readers.rejects import Reject


def _first(element, name: str):
    for node in element.iter():
        if local_name(node.tag) == name:
            return node
    return None


def citation_text(article) -> str:
    """Title, then the abstract, one labelled section per line."""
    lines = [text_of(_first(article, "ArticleTitle"))]
    abstract = _first(article, "Abstract")
    for part in abstract if abstract is not None else ():
        if local_name(part.tag) != "AbstractText":
            continue
        text = text_of(part)
        label = part.get("Label")
        if text:
            lines.append(f"{label}: {text}" if label else text)
    return "\n".join(line for line in lines if line)


class MedlineSourceReader(DocumentSourceReader):
    """PubMed citations; `source_position` is the citation's number in the file."""

    name = "📖 medline source"

    def iter_results(self, path: Path, file_key: str):
        number = 0
        try:
            for article, number in iter_elements(path, {"PubmedArticle"}, self.collect):
                self._line = number
                pmid = text_of(_first(article, "PMID")) or None
                result = self.document(
                    citation_text(article),
                    file_key,
                    number,
                    source_id=pmid,
                    url=f"https://pubmed.ncbi.nlm.nih.gov/{pmid}/" if pmid else None,
                )
                yield result, number, None
        except XmlBroken as exc:
            yield Reject("malformed_xml", f"after citation {number}: {exc.detail}"), exc.line, None
