"""Main-text extraction from HTML, side by side: trafilatura against resiliparse, on the real fixtures.

Inputs (../shared/data/raw/): the WebMD article page and the Common Crawl WARC sample (16 HTML
responses in utf-8, gbk, gb2312, windows-1251 and iso-8859-1). Each library runs the way its
documentation recommends for raw bytes: trafilatura.extract on the bytes (it detects the
encoding), resiliparse's detect_encoding + HTMLTree.parse_from_bytes + extract_plain_text with
main_content=True.

Quality on the WebMD page is checked against sentences of the article body (recall) and page
chrome that is not the article (navigation, footer, video teaser: noise). On the WARC there is no
reference text, so it reports characters kept, pages with no text, and the share of short lines
(fewer than 4 words or 8 CJK characters), a proxy for navigation left in. Speed is the best of
`--repeats` runs over the same bytes, extraction only (reading and decoding the WARC is outside).
Then each medbabel reader runs on its fixture (WARC, HTML, PDF, JATS, MEDLINE, MediaWiki, DOCX,
EPUB):
documents, characters kept and input megabytes per second.

    .venv/bin/python bench/bench_extract.py     # prints a table, writes bench/results/extract.json
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

from helpers.raw_files import RAW_FILES  # noqa: E402
from provenance import write_result  # noqa: E402

RAW = ROOT.parent / "shared" / "data" / "raw"
WEBMD = RAW / RAW_FILES["html"]
WARC = RAW / RAW_FILES["warc"]
RESULTS = ROOT / "bench" / "results" / "extract.json"

# Sentences of the article body (their opening words), and page chrome that is not the article.
ARTICLE = [
    "Superbugs: What They Are and How You Get Them",
    "Imagine being sick in the hospital with a bacterial infection",
    "Every year, about 2 million people get sick from a superbug",
    "The White House recently released a comprehensive plan",
    "But First: What's a Superbug?",
    "It's a term coined by the media to describe bacteria",
    "Instead, doctors often use phrases like",
    "Any species of bacteria can turn into a superbug.",
    "Misusing antibiotics (such as taking them when you don't need them",
    "What the public should know is that the more antibiotics",
    "Superbugs should be a concern to everyone",
    "Here are some of the growing superbug threats",
]
CHROME = [
    "Skip to content",
    "Print Article",
    "Font Size",
    "Information and Resources",
    "WebMD Video: Now Playing",
    "Click here to watch video",
    "Which sex is the worst about washing up",
    "URAC: Accredited Health Web Site",
    "AdChoices",
    "1 | 2 | 3",
]


def trafilatura_extract(html: bytes) -> str:
    import trafilatura

    return trafilatura.extract(html, include_comments=False) or ""


def resiliparse_extract(html: bytes) -> str:
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import detect_encoding
    from resiliparse.parse.html import HTMLTree

    tree = HTMLTree.parse_from_bytes(html, detect_encoding(html))
    return extract_plain_text(tree, main_content=True)


EXTRACTORS = {"trafilatura": trafilatura_extract, "resiliparse": resiliparse_extract}


def warc_pages(path: Path) -> list[bytes]:
    from warcio.archiveiterator import ArchiveIterator

    with open(path, "rb") as fh:
        return [
            record.content_stream().read() for record in ArchiveIterator(fh) if record.rec_type == "response"
        ]


_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")


def short_line(line: str) -> bool:
    cjk = len(_CJK.findall(line))
    return (cjk < 8) if cjk else len(line.split()) < 4


def timed(fn, pages: list[bytes], repeats: int) -> tuple[list[str], float]:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        texts = [fn(page) for page in pages]
        best = min(best, time.perf_counter() - start)
    return texts, best


def measure(name: str, repeats: int, webmd: bytes, pages: list[bytes]) -> dict:
    fn = EXTRACTORS[name]
    fn(webmd)  # import and warm-up outside the timing
    (text,), webmd_s = timed(fn, [webmd], repeats)
    found = [s for s in ARTICLE if s in text]
    chrome = [s for s in CHROME if s in text]
    texts, warc_s = timed(fn, pages, repeats)
    lines = [line for t in texts for line in t.splitlines() if line.strip()]
    return {
        "webmd": {
            "chars": len(text),
            "article_recall": len(found) / len(ARTICLE),
            "article_missing": [s for s in ARTICLE if s not in found],
            "chrome_found": chrome,
            "chrome_share": len(chrome) / len(CHROME),
            "ms": webmd_s * 1000,
        },
        "warc": {
            "pages": len(pages),
            "empty_pages": sum(not t.strip() for t in texts),
            "chars": sum(len(t) for t in texts),
            "short_line_share": sum(map(short_line, lines)) / max(len(lines), 1),
            "ms": warc_s * 1000,
            "pages_per_s": len(pages) / warc_s,
        },
    }


def reader_throughput(repeats: int) -> dict:
    """Each medbabel reader on its fixture (no language ID: the language is fixed), best of `repeats`:
    documents, characters kept, rejects, and input megabytes per second."""
    import tempfile

    from pipeline.config import CollectSection, SourceSection
    from pipeline.readers import READERS
    from pipeline.registry import load_registry

    registry = load_registry()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, name in RAW_FILES.items():
            path = RAW / name
            source = SourceSection(
                name=fmt, path=str(path), format=fmt, source_type="web", license="x", language="en"
            )
            reader = READERS[fmt](source, [path], RAW, CollectSection(), registry, Path(tmp))
            best, docs, chars, rejects = float("inf"), 0, 0, 0
            for _ in range(repeats):
                start = time.perf_counter()
                results = list(reader.iter_results(path, name))
                best = min(best, time.perf_counter() - start)
            for result, _, _ in results:
                if hasattr(result, "text"):
                    docs, chars = docs + 1, chars + len(result.text)
                else:
                    rejects += 1
            size = path.stat().st_size
            out[fmt] = {
                "file": name,
                "bytes": size,
                "documents": docs,
                "rejects": rejects,
                "chars": chars,
                "seconds": best,
                "mb_per_s": size / best / 1e6,
            }
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    webmd, pages = WEBMD.read_bytes(), warc_pages(WARC)
    results = {name: measure(name, args.repeats, webmd, pages) for name in EXTRACTORS}
    header = (
        f"{'extractor':<12} {'webmd recall':>12} {'chrome':>7} {'webmd ms':>9} "
        f"{'warc chars':>10} {'empty':>6} {'short lines':>11} {'warc ms':>8} {'pages/s':>8}"
    )
    print(header)
    for name, r in results.items():
        w, c = r["webmd"], r["warc"]
        print(
            f"{name:<12} {w['article_recall']:>12.0%} {len(w['chrome_found']):>3}/{len(CHROME):<3} "
            f"{w['ms']:>9.1f} {c['chars']:>10,} {c['empty_pages']:>6} {c['short_line_share']:>11.0%} "
            f"{c['ms']:>8.1f} {c['pages_per_s']:>8.0f}"
        )
    readers = reader_throughput(max(1, args.repeats // 2))
    print(
        f"\n{'format':<10} {'docs':>5} {'rejects':>7} {'chars kept':>11} {'seconds':>8} {'MB/s':>6}  library"
    )
    libraries = {
        "warc": "warcio + trafilatura",
        "html": "trafilatura",
        "pdf": "pypdf",
        "jats": "defusedxml",
        "medline": "defusedxml",
        "mediawiki": "mwparserfromhell",
        "docx": "python-docx",
        "epub": "lxml.html",
    }
    for fmt, r in readers.items():
        print(
            f"{fmt:<10} {r['documents']:>5} {r['rejects']:>7} {r['chars']:>11,} {r['seconds']:>8.3f} "
            f"{r['mb_per_s']:>6.2f}  {libraries[fmt]}"
        )
    result = {"repeats": args.repeats, "extractors": results, "readers": readers}
    write_result(result, "bench_extract.py", argv, args.out)
    return result


if __name__ == "__main__":
    main()
