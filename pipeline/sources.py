"""Resolving configured sources to files."""

from __future__ import annotations

import glob
from pathlib import Path

from pipeline.config import Config, ConfigError, SourceSection

# File name endings each format reads (compressed variants included).
FORMAT_SUFFIXES = {
    "jsonl": (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json", ".json.gz", ".json.zst", ".ndjson"),
    "apollo": (".json", ".json.gz", ".json.zst", ".jsonl", ".jsonl.gz", ".jsonl.zst"),
    "parquet": (".parquet",),
    "csv": (".csv", ".csv.gz", ".csv.zst"),
    "tsv": (".tsv", ".tsv.gz", ".tsv.zst"),
    "tmx": (".tmx", ".tmx.gz", ".tmx.zst"),
    "warc": (".warc", ".warc.gz"),
    "html": (".html", ".htm", ".xhtml", ".html.gz"),
    "pdf": (".pdf",),
    "jats": (".nxml", ".nxml.gz", ".xml", ".xml.gz"),
    "medline": (".xml", ".xml.gz"),
    "mediawiki": (".xml", ".xml.bz2", ".xml.gz", ".xml.zst"),
    "docx": (".docx",),
    "epub": (".epub",),
}


def expand_source_paths(cfg: Config, source: SourceSection, must_exist: bool = True) -> list[Path]:
    """The files of a source (a file, a directory scanned for its format's suffixes, or a glob), sorted.

    `hf` sources name a dataset directory or hub name and expand to nothing here.
    """
    if source.format == "hf":
        return []
    raw = (
        str(cfg.resolve(source.path)) if not glob.has_magic(source.path) else str(cfg.base_dir / source.path)
    )
    if glob.has_magic(raw):
        paths = sorted(Path(p) for p in glob.glob(raw, recursive=True) if Path(p).is_file())
    elif Path(raw).is_dir():
        suffixes = FORMAT_SUFFIXES[source.format]
        paths = sorted(p for p in Path(raw).rglob("*") if p.is_file() and p.name.endswith(suffixes))
    elif Path(raw).is_file():
        paths = [Path(raw)]
    else:
        paths = []
    if must_exist and not paths:
        raise ConfigError(f"source '{source.name}': path '{source.path}' matches no file (resolved to {raw})")
    return paths
