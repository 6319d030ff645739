"""Collection of whole documents from the raw forms medical text is published in (WARC, HTML, PDF,
PMC JATS, MEDLINE, MediaWiki dumps, DOCX): the real fixtures of ../shared/data/raw are read with
the expected counts, sensible text and provenance; broken input of each format is rejected with
file, position and reason."""

from __future__ import annotations

import bz2
import gzip
import io
import zipfile
from pathlib import Path

import pytest
from helpers.raw_files import RAW_FILES
from test_collect import run_collect, source

pytestmark = pytest.mark.slow  # every test but one runs the collect stage: not in `make test-fast`


@pytest.fixture
def raw(shared_data) -> Path:
    return shared_data / "raw"


def doc_source(name: str, path, fmt: str, **kw) -> dict:
    base = {"name": name, "path": str(path), "format": fmt, "source_type": "web", "license": "unknown"}
    if "language_detect" not in kw:
        base["language"] = "en"
    return base | kw


def test_html_page_main_text_without_navigation(tmp_path, raw):
    _, records, rejects = run_collect(
        tmp_path, [doc_source("webmd", raw / RAW_FILES["html"], "html", language_detect="declared")]
    )
    assert rejects == [] and len(records) == 1
    page = records[0]
    text = page["text"]
    assert page["language"] == "en"
    assert text.count("Superbugs: What They Are and How You Get Them") == 1
    assert "Every year, about 2 million people get sick from a superbug, according to the CDC." in text
    assert "Here are some of the growing superbug threats identified in the 2015 White House report." in text
    for chrome in ("Skip to content", "Font Size", "URAC: Accredited", "AdChoices"):
        assert chrome not in text
    assert 2_000 < len(text) < 4_000
    assert page["source_file"] == RAW_FILES["html"] and page["source_position"] == 1


def test_warc_html_responses_with_provenance(tmp_path, raw):
    summary, records, rejects = run_collect(
        tmp_path, [doc_source("cc", raw / RAW_FILES["warc"], "warc", language_detect="declared")]
    )
    # 16 HTML responses; the 17 requests, 16 metadata records and the warcinfo are not documents
    assert len(records) + len(rejects) == 16
    by_url = {r["url"]: r for r in records}
    fire = by_url["http://01spb.ru/company/"]  # windows-1251 page
    assert fire["language"] == "ru" and "пожарной безопасности" in fire["text"]
    # the Dutch gardener's page: Dutch is not a registry language, so the page is rejected, named
    (garden,) = rejects
    assert garden["reason"] == "unknown_language" and "'nl'" in garden["detail"]
    # every response follows its request and precedes its metadata record: numbers 3, 6, ..., 48
    assert sorted([garden["line"], *(r["source_position"] for r in records)]) == list(range(3, 49, 3))
    assert sum(r["language"] == "zh" for r in records) >= 10
    assert all(r["source_id"].startswith("<urn:uuid:") for r in records)
    assert len({r["source_id"] for r in records}) == len(records) == len({r["id"] for r in records})
    assert summary["sources"]["cc"]["records"] == len(records)


def test_pdf_text_layer_as_one_record(tmp_path, raw):
    _, records, rejects = run_collect(tmp_path, [doc_source("paper", raw / RAW_FILES["pdf"], "pdf")])
    assert rejects == [] and len(records) == 1
    text = records[0]["text"]
    assert 30_000 < len(text) < 45_000
    assert text.startswith("Proceedings of Machine Learning for Healthcare 2017")
    assert "Early detection of sepsis poses an important and challenging problem in medicine." in text
    assert "ﬁ" not in text and "classifier" in text  # ligatures become letters
    # wrapped lines of a paragraph are one line
    assert (
        "has very high mortality and morbidity, and occurs when a person’s immune system overreacts" in text
    )


def test_jats_article_title_abstract_body_without_references(tmp_path, raw):
    _, records, rejects = run_collect(
        tmp_path,
        [doc_source("pmc", raw / RAW_FILES["jats"], "jats", source_type="paper", license="see-article")],
    )
    assert rejects == [] and len(records) == 1
    article = records[0]
    text = article["text"]
    assert text.startswith("The Dutch version of the Oral Health Impact Profile (OHIP-NL)")
    assert "The purpose of this study was to make a cross-culturally adapted, Dutch version" in text
    assert text.index("Background") < text.index("Methods") < text.index("Conclusion")
    assert "Slade & Spencer [5] published a study" in text  # body paragraph, citation kept inline
    assert "Community Dent Oral Epidemiol" not in text  # the reference list is left out
    assert "Competing interests" not in text and "Pre-publication history" not in text
    assert article["source_id"] == "PMC2329613"
    assert article["url"] == "https://pmc.ncbi.nlm.nih.gov/articles/PMC2329613/"
    assert article["license"] == "CC-BY-2.0"  # the article's own <license>, not the source's
    tables = run_collect(
        tmp_path,
        [doc_source("pmc", raw / RAW_FILES["jats"], "jats", tables=True)],
        out="with_tables",
    )[1][0]["text"]
    assert len(tables) > len(text) and "\t" in tables and "\t" not in text


def test_medline_citations(tmp_path, raw):
    _, records, rejects = run_collect(
        tmp_path, [doc_source("pubmed", raw / RAW_FILES["medline"], "medline", language_detect="lid")]
    )
    assert rejects == []
    by_pmid = {r["source_id"]: r for r in records}
    assert set(by_pmid) == {"11748933", "11700088"}
    cryo = by_pmid["11748933"]
    assert cryo["text"].startswith("Is cryopreservation a homogeneous process?")
    assert "Diplodus puntazzo spermatozoa into three key phases" in cryo["text"]
    assert cryo["url"] == "https://pubmed.ncbi.nlm.nih.gov/11748933/" and cryo["language"] == "en"
    assert by_pmid["11700088"]["text"].startswith("Proton MRI of (13)C distribution")


def test_mediawiki_dump_pages_without_markup(tmp_path, raw):
    _, records, rejects = run_collect(
        tmp_path, [doc_source("wiki", raw / RAW_FILES["mediawiki"], "mediawiki", license="CC-BY-SA-4.0")]
    )
    assert rejects == []
    by_title = {r["text"].split("\n", 1)[0]: r for r in records}
    assert set(by_title) == {
        "Constructive vote of no confidence",
        "List of Prison Break characters",
        "Academy Award for Best Production Design",
        "Economy of Estonia",
        "Brahui language",
    }
    estonia = by_title["Economy of Estonia"]
    assert estonia["source_id"] == "9391" and estonia["source_position"] == 4
    assert "Estonian economy is an advanced economy and a member of the European Union" in estonia["text"]
    for record in records:
        for markup in ("{{", "}}", "{|", "|}", "[[", "]]", "<ref", "Category:", "'''"):
            assert markup not in record["text"], (record["source_id"], markup)
    assert (
        "Brahui is spoken in the central part of Pakistani Balochistan" in by_title["Brahui language"]["text"]
    )

    filtered = run_collect(
        tmp_path,
        [
            doc_source(
                "wiki", raw / RAW_FILES["mediawiki"], "mediawiki", wiki_categories=["Dravidian languages"]
            )
        ],
        out="by_category",
    )
    assert [r["source_id"] for r in filtered[1]] == ["4702"]
    titled = run_collect(
        tmp_path,
        [doc_source("wiki", raw / RAW_FILES["mediawiki"], "mediawiki", wiki_title_pattern="^Economy of ")],
        out="by_title",
    )
    assert [r["source_id"] for r in titled[1]] == ["9391"]


def test_docx_paragraphs(tmp_path, raw):
    _, records, rejects = run_collect(tmp_path, [doc_source("handbook", raw / RAW_FILES["docx"], "docx")])
    assert rejects == [] and len(records) == 1
    text = records[0]["text"]
    assert "CHAPTER 1 – INTRODUCTION" in text
    assert "The United States Trustee appoints and supervises standing trustees" in text
    assert 3_000 < len(text) < 4_000 and "\n\n\n" not in text


def test_epub_book_in_spine_order_with_its_metadata(tmp_path, raw):
    _, records, rejects = run_collect(
        tmp_path,
        [
            doc_source(
                "books", raw / RAW_FILES["epub"], "epub", language_detect="declared", source_type="book"
            )
        ],
    )
    assert rejects == [] and len(records) == 1
    book = records[0]
    assert book["source_id"] == "http://www.gutenberg.org/60153" and book["language"] == "en"
    assert book["license"] == "Public domain in the USA."  # the book's dc:rights
    text = book["text"]
    assert 300_000 < len(text) < 380_000
    # chapters in spine order: a sentence of the second chapter file comes after the first file's
    assert text.index("Winter Sports in Switzerland") < text.index(
        "the circle of the Alpine day and night weaves"
    )
    assert "<p>" not in text and "</" not in text and "pgepub.css" not in text  # markup and styles gone


def test_epub_that_is_broken(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("mimetype", "application/epub+zip")  # no container.xml
    (tmp_path / "broken.epub").write_bytes(buffer.getvalue())
    _, records, rejects = run_collect(tmp_path, [doc_source("b", tmp_path / "broken.epub", "epub")])
    assert records == [] and [(r["reason"], "container.xml" in r["detail"]) for r in rejects] == [
        ("unreadable_file", True)
    ]


# ---- bad input -----------------------------------------------------------------------------------
def test_truncated_and_garbage_warc(tmp_path, raw):
    data = (raw / RAW_FILES["warc"]).read_bytes()
    (tmp_path / "cut.warc.gz").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.warc").write_bytes(b"this is not a web archive\n" * 10)
    _, records, rejects = run_collect(
        tmp_path,
        [
            doc_source("cut", tmp_path / "cut.warc.gz", "warc", language_detect="lid"),
            doc_source("junk", tmp_path / "junk.warc", "warc"),
        ],
    )
    cut = [r for r in rejects if r["source"] == "cut"]
    assert [r["reason"] for r in cut if r["reason"] == "truncated_file"] == ["truncated_file"]
    truncated = next(r for r in cut if r["reason"] == "truncated_file")
    assert truncated["file"].endswith("cut.warc.gz") and "the file ends early" in truncated["detail"]
    assert truncated["line"] > 3  # the record number
    assert 4 <= len(records) < 16  # the records before the cut are kept
    junk = [r for r in rejects if r["source"] == "junk"]
    assert [r["reason"] for r in junk] == ["unreadable_file"] and "not a WARC file" in junk[0]["detail"]


def test_malformed_and_hostile_xml(tmp_path, raw):
    medline = (raw / RAW_FILES["medline"]).read_text()
    cut = medline.index("<PubmedArticle>", medline.index("</PubmedArticle>"))
    (tmp_path / "broken.xml").write_text(medline[: cut + 200] + "<<<oops")
    (tmp_path / "bomb.xml").write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE PubmedArticleSet [<!ENTITY a "aaaaaaaaaa">'
        '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>\n<PubmedArticleSet><PubmedArticle>'
        "<MedlineCitation><PMID>1</PMID><Article><ArticleTitle>&b;</ArticleTitle></Article>"
        "</MedlineCitation></PubmedArticle></PubmedArticleSet>"
    )
    wiki = bz2.decompress((raw / RAW_FILES["mediawiki"]).read_bytes())
    (tmp_path / "cut.xml.bz2").write_bytes(bz2.compress(wiki)[:20_000])
    _, records, rejects = run_collect(
        tmp_path,
        [
            doc_source("broken", tmp_path / "broken.xml", "medline"),
            doc_source("bomb", tmp_path / "bomb.xml", "medline"),
            doc_source("wiki", tmp_path / "cut.xml.bz2", "mediawiki"),
        ],
    )
    by_source = {}
    for reject in rejects:
        by_source.setdefault(reject["source"], []).append(reject)
    assert [r["source_id"] for r in records if r["source"] == "broken"] == [
        "11748933"
    ]  # kept before the break
    (broken,) = by_source["broken"]
    assert (
        broken["reason"] == "malformed_xml" and broken["line"] > 1 and "after citation 1" in broken["detail"]
    )
    (bomb,) = by_source["bomb"]
    assert bomb["reason"] == "malformed_xml" and "refused by the safe XML parser" in bomb["detail"]
    assert not any(r["source"] == "bomb" for r in records)
    (wiki_reject,) = by_source["wiki"]
    assert wiki_reject["reason"] == "truncated_file"


def test_encrypted_broken_and_scanned_pdfs(tmp_path, raw):
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(raw / RAW_FILES["pdf"]))
    writer.encrypt(user_password="secret", algorithm="RC4-128")
    with open(tmp_path / "locked.pdf", "wb") as fh:
        writer.write(fh)
    (tmp_path / "broken.pdf").write_bytes((raw / RAW_FILES["pdf"]).read_bytes()[:3000])
    scanned = PdfWriter(clone_from=PdfReader(raw / RAW_FILES["pdf"]))
    scanned.insert_blank_page(index=1)  # a page without a text layer, as a scan is
    with open(tmp_path / "scanned.pdf", "wb") as fh:
        scanned.write(fh)
    _, records, rejects = run_collect(
        tmp_path,
        [
            doc_source("locked", tmp_path / "locked.pdf", "pdf"),
            doc_source("broken", tmp_path / "broken.pdf", "pdf"),
            doc_source("scanned", tmp_path / "scanned.pdf", "pdf"),
        ],
    )
    reasons = {(r["source"], r["reason"], r["line"]) for r in rejects}
    assert ("locked", "encrypted_pdf", None) in reasons
    assert ("scanned", "no_text_layer", 2) in reasons
    assert any(s == "broken" and reason == "unreadable_file" for s, reason, _ in reasons)
    assert [r["source"] for r in records] == ["scanned"]  # its other 12 pages make the record
    assert "Early detection of sepsis" in records[0]["text"]


def test_pdf_running_headers_page_numbers_and_hyphenation():
    from pipeline.readers.pdf import pdf_text

    wards = ["surgical", "medical", "paediatric", "geriatric"]
    pages = [
        "\n".join(
            [
                f"Journal of Clinical Care {2020 + (i % 2)}",
                f"On {ward} wards sepsis is an organ dysfunction caused by a dysregulated host response to infec-",
                f"tion, and early treatment with antibiotics and fluids improves the outcome of {ward} patients",
                f"who present to the {ward} emergency department.",
                f"Page {i + 1} of 4",
            ]
        )
        for i, ward in enumerate(wards)
    ]
    text = pdf_text(pages)
    assert "Journal of Clinical Care" not in text and "Page " not in text
    assert "caused by a dysregulated host response to infection, and early treatment" in text
    assert "On surgical wards sepsis" in text and "geriatric emergency department." in text
    assert text.count("\n") == 3  # one paragraph per page


def test_docx_that_is_not_a_zip_and_a_zip_bomb(tmp_path):
    (tmp_path / "fake.docx").write_bytes(b"plain text pretending to be Word")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", b"<w:document>" + b" " * 5_000_000 + b"</w:document>")
    (tmp_path / "bomb.docx").write_bytes(buffer.getvalue())
    _, records, rejects = run_collect(
        tmp_path,
        [
            doc_source("fake", tmp_path / "fake.docx", "docx"),
            doc_source("bomb", tmp_path / "bomb.docx", "docx"),
        ],
        max_doc_chars=100_000,
    )
    assert records == []
    assert {(r["source"], r["reason"]) for r in rejects} == {
        ("fake", "unreadable_file"),
        ("bomb", "too_long"),
    }


def test_html_without_main_text_and_gzipped_html(tmp_path):
    (tmp_path / "empty.html").write_text(
        "<html><head><title>x</title></head><body><script>var tracker = 1;</script></body></html>"
    )
    page = (
        '<html lang="fr"><head><link rel="canonical" href="https://example.org/grippe"></head><body><article>'
        "<h1>La grippe</h1><p>La grippe est une infection virale aiguë qui touche le nez, la gorge et "
        "parfois les poumons. La vaccination annuelle reste la meilleure protection.</p></article></body></html>"
    )
    (tmp_path / "grippe.html.gz").write_bytes(gzip.compress(page.encode()))
    _, records, rejects = run_collect(
        tmp_path,
        [
            doc_source("empty", tmp_path / "empty.html", "html"),
            doc_source("fr", tmp_path / "grippe.html.gz", "html", language_detect="declared"),
        ],
    )
    assert [(r["source"], r["reason"]) for r in rejects] == [("empty", "empty_text")]
    (grippe,) = records
    assert grippe["language"] == "fr" and grippe["url"] == "https://example.org/grippe"
    assert "La vaccination annuelle reste la meilleure protection." in grippe["text"]


def test_document_formats_take_language_or_language_detect(tmp_path):
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match="exactly one of 'language' or 'language_detect'"):
        run_collect(
            tmp_path,
            [{"name": "w", "path": "x.warc", "format": "warc", "source_type": "web", "license": "x"}],
        )
    with pytest.raises(ConfigError, match="'language_detect' applies to the document formats"):
        run_collect(tmp_path, [source("j", "x.jsonl", language_detect="lid")])


def test_warc_payloads_chunked_gzipped_and_not_html(tmp_path):
    """Payloads as servers send them: chunked and gzip-encoded, a legacy charset, and an image."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    page = (
        "<html><head><meta charset='windows-1252'></head><body><article><h1>Fièvre</h1><p>La fièvre est "
        "une élévation de la température du corps au-dessus de 38 °C. Elle accompagne la plupart des "
        "infections et se traite par le repos, des boissons et du paracétamol si besoin.</p></article>"
        "</body></html>"
    ).encode("cp1252")
    compressed = gzip.compress(page)
    chunked = (
        b"".join(
            b"%x\r\n%s\r\n" % (len(compressed[i : i + 100]), compressed[i : i + 100])
            for i in range(0, len(compressed), 100)
        )
        + b"0\r\n\r\n"
    )
    buffer = io.BytesIO()
    writer = WARCWriter(buffer, gzip=True)
    headers = [("Content-Type", "text/html"), ("Content-Encoding", "gzip"), ("Transfer-Encoding", "chunked")]
    writer.write_record(
        writer.create_warc_record(
            "https://example.org/fievre",
            "response",
            payload=io.BytesIO(chunked),
            http_headers=StatusAndHeaders("200 OK", headers, protocol="HTTP/1.1"),
        )
    )
    writer.write_record(
        writer.create_warc_record(
            "https://example.org/logo.png",
            "response",
            payload=io.BytesIO(b"\x89PNG\r\n\x1a\n" + bytes(200)),
            http_headers=StatusAndHeaders("200 OK", [("Content-Type", "image/png")], protocol="HTTP/1.1"),
        )
    )
    (tmp_path / "mixed.warc.gz").write_bytes(buffer.getvalue())
    _, records, rejects = run_collect(
        tmp_path, [doc_source("mixed", tmp_path / "mixed.warc.gz", "warc", language_detect="lid")]
    )
    (page_record,) = records
    assert page_record["language"] == "fr" and "élévation de la température du corps" in page_record["text"]
    ((reason, line, detail),) = [(r["reason"], r["line"], r["detail"]) for r in rejects]
    assert reason == "unsupported_content" and line == 2 and "image/png" in detail


def test_bz2_wiki_dump_bomb_stops_at_the_decompression_limit(tmp_path):
    """A .xml.bz2 whose one page inflates far beyond its size: reading stops at the reliability
    limits (collect.max_decompressed_bytes), the pages before are kept."""
    page = "<page><title>Fever</title><ns>0</ns><id>{id}</id><revision><text>{text}</text></revision></page>"
    head = '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">'
    good = page.format(id=1, text="Fever is a body temperature above the normal range. " * 20)
    bomb = page.format(id=2, text="a" * 30_000_000)
    (tmp_path / "bomb.xml.bz2").write_bytes(bz2.compress((head + good + bomb + "</mediawiki>").encode()))
    _, records, rejects = run_collect(
        tmp_path,
        [doc_source("wiki", tmp_path / "bomb.xml.bz2", "mediawiki")],
        max_decompressed_bytes=5_000_000,
    )
    assert [r["source_id"] for r in records] == ["1"]
    ((reason, detail),) = [(r["reason"], r["detail"]) for r in rejects]
    assert reason == "decompression_limit" and "max_decompressed_bytes" in detail
