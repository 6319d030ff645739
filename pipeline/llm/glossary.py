"""Medical glossaries: English term -> target-language term, given to the model per segment.

Accepted files (plain or .gz):
- JSONL with `lang`, `en`, `text` per line (the TICO-19 terminologies layout);
- CSV/TSV with a header `lang,en,text`, or `en,<code>[,<code>...]` (one column per language).

Terms are matched on whole words (the project's one tokeniser, `pipeline.text.segment`),
case-insensitively, longest match first; the first translation seen for a term wins.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections import defaultdict
from pathlib import Path

from pipeline.config import ConfigError
from pipeline.registry import Registry, UnknownLanguageError
from pipeline.text.segment import segment


class GlossaryError(ConfigError):
    """A glossary file that cannot be read; the message names the file, line and reason."""


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8", newline="")


class Glossary:
    def __init__(self, registry: Registry, targets: set[str] | None = None):
        self.registry = registry
        self.targets = targets
        # target -> first word -> [(words, english, translation)], longest first
        self._index: dict[str, dict[str, list[tuple[tuple[str, ...], str, str]]]] = defaultdict(dict)
        self._seen: set[tuple[str, tuple[str, ...]]] = set()
        self._codes: dict[str, str | None] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def _code(self, raw: str) -> str | None:
        if raw not in self._codes:
            try:
                self._codes[raw] = self.registry.normalize_code(raw)
            except UnknownLanguageError:
                self._codes[raw] = None
        code = self._codes[raw]
        return code if code and (self.targets is None or code in self.targets) else None

    def add(self, language: str, english: str, translation: str) -> None:
        code = self._code(language)
        words = tuple(segment(english))
        if code is None or not words or not translation.strip() or (code, words) in self._seen:
            return
        self._seen.add((code, words))
        bucket = self._index[code].setdefault(words[0], [])
        bucket.append((words, english.strip(), translation.strip()))
        bucket.sort(key=lambda entry: -len(entry[0]))

    def load(self, path: str | Path) -> int:
        path = Path(path)
        if not path.is_file():
            raise GlossaryError(f"{path}: glossary file not found")
        before = len(self)
        name = path.name.removesuffix(".gz")
        if name.endswith((".jsonl", ".json", ".ndjson")):
            self._load_jsonl(path)
        elif name.endswith((".csv", ".tsv")):
            self._load_table(path, "\t" if name.endswith(".tsv") else ",")
        else:
            raise GlossaryError(f"{path}: unknown glossary format (use .jsonl, .csv or .tsv, optionally .gz)")
        return len(self) - before

    def _load_jsonl(self, path: Path) -> None:
        with _open_text(path) as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    self.add(str(row["lang"]), str(row["en"]), str(row["text"]))
                except (ValueError, KeyError, TypeError) as exc:
                    raise GlossaryError(
                        f"{path}: line {number}: expected a JSON object with lang, en, text ({exc})"
                    ) from None

    def _load_table(self, path: Path, delimiter: str) -> None:
        with _open_text(path) as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            header = [h.strip() for h in next(reader, [])]
            if header[:3] == ["lang", "en", "text"]:
                layout = "long"
            elif header and header[0] == "en" and len(header) > 1:
                layout = "wide"
            else:
                raise GlossaryError(f"{path}: line 1: header must be 'lang,en,text' or 'en,<code>,...'")
            for number, row in enumerate(reader, 2):
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) < len(header):
                    raise GlossaryError(f"{path}: line {number}: {len(row)} fields, expected {len(header)}")
                if layout == "long":
                    self.add(row[0], row[1], row[2])
                else:
                    for code, cell in zip(header[1:], row[1:], strict=False):
                        self.add(code, row[0], cell)

    def terms_in(self, text: str, target: str, limit: int) -> list[tuple[str, str]]:
        """(English term, target term) pairs found in `text`, in order of appearance, at most `limit`."""
        index = self._index.get(target)
        if not index or limit <= 0:
            return []
        words = segment(text)
        found: list[tuple[str, str]] = []
        seen: set[str] = set()
        i = 0
        while i < len(words) and len(found) < limit:
            for term_words, english, translation in index.get(words[i], ()):
                if tuple(words[i : i + len(term_words)]) == term_words:
                    if english not in seen:
                        seen.add(english)
                        found.append((english, translation))
                    i += len(term_words)
                    break
            else:
                i += 1
        return found
