"""Build the demo's raw-format files (one small file per document format collect reads).

    .venv/bin/python data/sample/raw/build_raw.py      # rewrites data/sample/raw/ in place

All text is written for medbabel and fictional (people, identifiers, numbers). Each file has the
chrome real files have, so the demo exercises the extraction: the HTML page and the WARC's pages
have navigation and footers, the PDF a running header and page numbers and a hyphenated line
break, the JATS article a reference list, the wiki dump templates, a table, a redirect and a page
outside the configured category. README.md (one level up) lists what collect makes of each.
"""

from __future__ import annotations

import bz2
import datetime
import io
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

NAV = '<nav><a href="/">Home</a> | <a href="/topics">Health topics</a> | <a href="/contact">Contact</a></nav>'
FOOTER = "<footer><p>© 2024 Riverside Community Clinic. Privacy policy. Cookie settings.</p></footer>"

HANDWASHING = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Hand washing | Riverside Community Clinic</title>
<link rel="canonical" href="https://clinic.example.org/topics/hand-washing"></head>
<body>{nav}<main><article>
<h1>Hand washing: when and how</h1>
<p>Washing your hands with soap and water is one of the simplest ways to stop the spread of infection.
Germs from unwashed hands pass to food, drinks and surfaces, and from there to other people.</p>
<h2>When to wash your hands</h2>
<p>Wash your hands before preparing or eating food, after using the toilet, after changing a nappy,
after blowing your nose or coughing, and after touching animals or rubbish. Health workers wash their
hands before and after every contact with a patient.</p>
<h2>How to wash your hands</h2>
<p>Wet your hands with clean running water and apply soap. Rub all surfaces, including the backs of the
hands, between the fingers and under the nails, for at least twenty seconds. Rinse well and dry with a
clean towel. When soap and water are not available, an alcohol-based hand rub with at least sixty per
cent alcohol is a good alternative, although it does not remove every kind of germ.</p>
</article></main>
<aside><h3>Related</h3><ul><li><a href="/topics/flu">Flu vaccination</a></li><li><a href="/topics/colds">Colds</a></li></ul></aside>
{footer}</body></html>
"""

GRIPPE = """<!DOCTYPE html>
<html lang="fr"><head><meta charset="utf-8"><title>La grippe saisonnière</title></head>
<body>{nav}<article><h1>La grippe saisonnière</h1>
<p>La grippe est une infection respiratoire aiguë due aux virus influenza. Elle se manifeste par une
fièvre brutale, des douleurs musculaires, une grande fatigue et une toux sèche. La plupart des malades
guérissent en une à deux semaines sans traitement particulier.</p>
<p>Les personnes âgées, les femmes enceintes et les malades chroniques risquent des complications
graves, comme la pneumonie. Pour elles, la vaccination chaque automne reste la meilleure protection,
avec le lavage des mains et le port du masque en cas de symptômes.</p>
</article>{footer}</body></html>
"""

RECIPE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Lemon cake</title></head>
<body>{nav}<article><h1>An easy lemon cake</h1>
<p>Cream two hundred grams of butter with the same weight of sugar until pale, then beat in four eggs one
at a time. Fold in the flour and the zest of two lemons, pour the batter into a lined tin and bake for
about forty minutes, until a skewer comes out clean.</p>
<p>While the cake is still warm, pour over a syrup made from the lemon juice and a few spoons of icing
sugar. Leave it to cool in the tin so that the syrup soaks in evenly before you slice it.</p>
</article>{footer}</body></html>
"""

SEPSIS_PAGES = [
    [
        "Sepsis: a guide for families",
        "What is sepsis?",
        "Sepsis is a life-threatening reaction to an infection. It happens when the body's response to",
        "the infection damages its own tissues and organs. Without quick treatment, sepsis can lead",
        "to shock, organ failure and death.",
        "Anyone can develop sepsis, but babies, older adults and people with long-term illnesses or a",
        "weakened immune system are at higher risk.",
        "1",
    ],
    [
        "Sepsis: a guide for families",
        "Warning signs",
        "Seek urgent medical help if someone with an infection has slurred speech or confusion, ex-",
        "treme shivering or muscle pain, passes no urine in a day, has severe breathlessness, or has",
        "mottled or discoloured skin.",
        "Treatment",
        "Sepsis is treated in hospital with antibiotics given into a vein within the first hour, fluids,",
        "and oxygen when needed. Some patients need care in an intensive care unit.",
        "2",
    ],
    [
        "Sepsis: a guide for families",
        "After sepsis",
        "Recovery can take weeks or months. Tiredness, poor sleep, low mood and muscle weakness are",
        "common after leaving hospital, and most people improve with time and support from their family",
        "doctor.",
        "3",
    ],
]

JATS = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE article PUBLIC "-//NLM//DTD JATS (Z39.96) Journal Archiving and Interchange DTD v1.2 20190208//EN" "JATS-archivearticle1.dtd">
<article xmlns:xlink="http://www.w3.org/1999/xlink" article-type="research-article" xml:lang="en">
<front><journal-meta><journal-title-group><journal-title>Journal of Community Health Studies</journal-title></journal-title-group></journal-meta>
<article-meta>
<article-id pub-id-type="pmid">99000101</article-id>
<article-id pub-id-type="pmc">PMC9900101</article-id>
<title-group><article-title>Oral rehydration salts at home: a community education study</article-title></title-group>
<permissions><license license-type="open-access" xlink:href="https://creativecommons.org/licenses/by/4.0/">
<license-p>This article is distributed under the Creative Commons Attribution 4.0 License.</license-p></license></permissions>
<abstract><sec><title>Background</title><p>Dehydration from diarrhoea remains a leading cause of illness in young children.</p></sec>
<sec><title>Results</title><p>After the education sessions, 82% of caregivers prepared oral rehydration solution correctly, against 41% before.</p></sec></abstract>
</article-meta></front>
<body>
<sec><title>Introduction</title>
<p>Oral rehydration solution replaces the water and salts lost during diarrhoea. It is cheap and safe, and it can be prepared at home from clean water, salt and sugar [<xref ref-type="bibr" rid="r1">1</xref>].</p></sec>
<sec><title>Methods</title>
<p>Community health workers held two sessions with 120 caregivers in four villages and observed each caregiver preparing the solution before and after the sessions.</p>
<table-wrap id="t1"><caption><p>Correct preparation</p></caption><table><tr><td>Before</td><td>41%</td></tr><tr><td>After</td><td>82%</td></tr></table></table-wrap></sec>
<sec><title>Discussion</title>
<p>Short practical sessions doubled the share of caregivers who prepared the solution correctly. Caregivers should still seek care when a child cannot drink, vomits repeatedly or has blood in the stool.</p></sec>
</body>
<back><ref-list><ref id="r1"><mixed-citation>Example A, Sample B. Rehydration at home. Fictional Journal. 2020;1:1-5.</mixed-citation></ref></ref-list></back>
</article>
"""

MEDLINE = """<?xml version="1.0" ?>
<!DOCTYPE PubmedArticleSet PUBLIC "-//NLM//DTD PubMedArticle, 1st January 2025//EN" "https://dtd.nlm.nih.gov/ncbi/pubmed/out/pubmed_250101.dtd">
<PubmedArticleSet>
<PubmedArticle><MedlineCitation Status="MEDLINE" Owner="NLM"><PMID Version="1">99000201</PMID>
<Article PubModel="Print"><ArticleTitle>Daily walking and blood pressure in adults with mild hypertension: a randomised trial.</ArticleTitle>
<Abstract><AbstractText Label="OBJECTIVE">To test whether thirty minutes of daily walking lowers blood pressure in adults with mild hypertension.</AbstractText>
<AbstractText Label="METHODS">Two hundred adults were randomly assigned to a walking programme or usual care for twelve weeks.</AbstractText>
<AbstractText Label="RESULTS">Systolic blood pressure fell by 6 mmHg more in the walking group than in the usual-care group.</AbstractText>
<AbstractText Label="CONCLUSIONS">Regular walking is a simple way to lower blood pressure in mild hypertension.</AbstractText></Abstract>
<Language>eng</Language></Article></MedlineCitation></PubmedArticle>
<PubmedArticle><MedlineCitation Status="MEDLINE" Owner="NLM"><PMID Version="1">99000202</PMID>
<Article PubModel="Print"><ArticleTitle>Screening for diabetic eye disease with a handheld camera in primary care.</ArticleTitle>
<Abstract><AbstractText>Diabetic retinopathy can be found early by photographing the retina. In this study, nurses in six primary care clinics photographed the eyes of 900 patients with diabetes using a handheld camera; the images were graded by two eye specialists. The camera found 91% of the cases that needed referral, and most patients were screened during a routine visit.</AbstractText></Abstract>
<Language>eng</Language></Article></MedlineCitation></PubmedArticle>
</PubmedArticleSet>
"""

WIKI_PAGES = [
    (
        "Malaria",
        1001,
        0,
        "{{Infobox disease|name=Malaria|field=Infectious disease}}\n"
        "'''Malaria''' is a [[mosquito]]-borne [[infectious disease]] caused by ''Plasmodium'' parasites."
        "<ref>Fictional source, 2021.</ref> Symptoms include fever, tiredness, vomiting and headaches.\n\n"
        "== Prevention ==\n"
        "Sleeping under [[Mosquito net|insecticide-treated nets]] and taking preventive medicines when"
        " travelling reduce the risk of infection.\n\n"
        '{| class="wikitable"\n! Region !! Cases\n|-\n| Region A || 100\n|}\n\n'
        "== Treatment ==\n"
        "Malaria is treated with antimalarial medicines; the choice depends on the parasite species and"
        " on where the infection was acquired.\n\n"
        "== See also ==\n* [[Mosquito]]\n\n[[Category:Infectious diseases]]\n[[fr:Paludisme]]",
    ),
    (
        "Tuberculosis",
        1002,
        0,
        "'''Tuberculosis''' (TB) is an infectious disease usually caused by ''Mycobacterium tuberculosis''"
        " bacteria. It generally affects the [[lung]]s. Typical symptoms are a chronic cough, fever,"
        " night sweats and weight loss.\n\n== Diagnosis ==\nDiagnosis relies on chest X-rays, microscopic"
        " examination of sputum and molecular tests.{{citation needed}}\n\n"
        "[[File:TB poster.jpg|thumb|A public-health poster]]\n[[Category:Infectious diseases]]",
    ),
    ("TB", 1003, 0, "#REDIRECT [[Tuberculosis]]"),
    (
        "Railway station",
        1004,
        0,
        "A '''railway station''' is a place where trains stop to load passengers or goods.\n"
        "[[Category:Rail transport]]",
    ),
    ("Talk:Malaria", 1005, 1, "Should the article mention vaccines? --[[User:Example]]"),
]

LEAFLET = [
    ("Title", "Taking your antibiotics"),
    (
        "Normal",
        "Antibiotics treat infections caused by bacteria. They do not work against colds or flu,"
        " which are caused by viruses.",
    ),
    ("Heading 1", "How to take them"),
    (
        "Normal",
        "Take every dose at the times your doctor or pharmacist told you, and finish the whole"
        " course even if you feel better. Stopping early can let the infection come back.",
    ),
    ("Heading 1", "Side effects"),
    (
        "Normal",
        "Some people get diarrhoea, nausea or a rash. Stop the medicine and get help at once if you"
        " have swelling of the face or lips or difficulty breathing.",
    ),
]


def html_files() -> None:
    page = HANDWASHING.format(nav=NAV, footer=FOOTER)
    (HERE / "clinic_hand_washing.html").write_text(page, encoding="utf-8")


def warc_file() -> None:
    """Two HTML responses (each after its request) and a warcinfo record, gzipped per record."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    out = io.BytesIO()
    writer = WARCWriter(out, gzip=True)
    info = writer.create_warcinfo_record("crawl_sample.warc.gz", {"software": "medbabel build_raw.py"})
    info.rec_headers.replace_header("WARC-Record-ID", "<urn:uuid:00000000-0000-4000-8000-000000000000>")
    info.rec_headers.replace_header("WARC-Date", "2024-05-01T12:00:00Z")
    writer.write_record(info)
    pages = [
        (
            "https://sante.example.fr/grippe",
            GRIPPE,
            "text/html; charset=utf-8",
            "00000000-0000-4000-8000-000000000001",
        ),
        (
            "https://recipes.example.com/lemon-cake",
            RECIPE,
            "text/html; charset=utf-8",
            "00000000-0000-4000-8000-000000000002",
        ),
    ]
    for url, template, content_type, uuid in pages:
        body = template.format(nav=NAV, footer=FOOTER).encode("utf-8")
        headers = {"WARC-Date": "2024-05-01T12:00:00Z"}
        request = writer.create_warc_record(
            url,
            "request",
            payload=io.BytesIO(b""),
            warc_headers_dict=headers,
            http_headers=StatusAndHeaders(
                f"GET {url} HTTP/1.1", [("Host", url.split("/")[2])], is_http_request=True
            ),
        )
        response = writer.create_warc_record(
            url,
            "response",
            payload=io.BytesIO(body),
            warc_headers_dict={**headers, "WARC-Record-ID": f"<urn:uuid:{uuid}>"},
            http_headers=StatusAndHeaders(
                "200 OK",
                [("Content-Type", content_type), ("Content-Length", str(len(body)))],
                protocol="HTTP/1.1",
            ),
        )
        request.rec_headers.replace_header("WARC-Record-ID", f"<urn:uuid:{uuid[:-1]}f>")
        writer.write_record(request)
        writer.write_record(response)
    (HERE / "crawl_sample.warc.gz").write_bytes(out.getvalue())


def _pdf_string(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def pdf_file() -> None:
    """A plain PDF 1.4 with one text line per line of SEPSIS_PAGES (Helvetica, WinAnsi)."""
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        None,
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    kids = []
    for lines in SEPSIS_PAGES:
        ops = ["BT", "/F1 10 Tf", "14 TL", "50 780 Td"]
        for i, line in enumerate(lines):
            if i == len(lines) - 1:  # the page number, at the foot of the page
                ops += ["ET", "BT", "/F1 9 Tf", "290 40 Td"]
            ops.append(f"({_pdf_string(line)}) Tj T*")
        ops.append("ET")
        stream = "\n".join(ops).encode("cp1252")
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream.decode('cp1252')}\nendstream")
        content = len(objects)
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 3 0 R >> >> /Contents {content} 0 R >>"
        )
        kids.append(len(objects))
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(f'{k} 0 R' for k in kids)}] /Count {len(kids)} >>"
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("cp1252")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    (HERE / "sepsis_family_guide.pdf").write_bytes(bytes(out))


def xml_files() -> None:
    (HERE / "pmc_oral_rehydration.nxml").write_text(JATS, encoding="utf-8")
    (HERE / "pubmed_citations.xml").write_text(MEDLINE, encoding="utf-8")


def wiki_file() -> None:
    from xml.sax.saxutils import escape

    pages = []
    for title, page_id, ns, text in WIKI_PAGES:
        redirect = f'<redirect title="{escape(text[12:-2])}" />' if text.startswith("#REDIRECT") else ""
        pages.append(
            f"  <page>\n    <title>{escape(title)}</title>\n    <ns>{ns}</ns>\n    <id>{page_id}</id>\n    {redirect}"
            f'<revision><id>{page_id}0</id><text xml:space="preserve">{escape(text)}</text></revision>\n  </page>\n'
        )
    dump = (
        '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="en">\n'
        "  <siteinfo><sitename>MedWiki</sitename><base>https://medwiki.example.org/wiki/Main_Page</base>"
        '<namespaces><namespace key="14">Category</namespace><namespace key="6">File</namespace></namespaces>'
        "</siteinfo>\n" + "".join(pages) + "</mediawiki>\n"
    )
    (HERE / "medwiki_pages.xml.bz2").write_bytes(bz2.compress(dump.encode("utf-8"), 9))


def docx_file() -> None:
    import docx

    document = docx.Document()
    fixed_time = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    document.core_properties.created = document.core_properties.modified = fixed_time
    document.core_properties.language = "en"
    for style, text in LEAFLET:
        document.add_paragraph(text, style=style)
    buffer = io.BytesIO()
    document.save(buffer)
    # the same bytes on every build: zip entries with a fixed timestamp, in their original order
    out = io.BytesIO()
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            fixed = zipfile.ZipInfo(info.filename, date_time=(2024, 1, 1, 0, 0, 0))
            fixed.compress_type = zipfile.ZIP_DEFLATED
            target.writestr(fixed, source.read(info.filename))
    (HERE / "antibiotics_leaflet.docx").write_bytes(out.getvalue())


def main() -> None:
    html_files()
    warc_file()
    pdf_file()
    xml_files()
    wiki_file()
    docx_file()


if __name__ == "__main__":
    main()
