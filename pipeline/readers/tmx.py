"""TMX translation memories."""

from __future__ import annotations

from xml.parsers import expat

from pipeline.readers.base import SourceReader
from pipeline.readers.files import READ_CHUNK, open_binary
from pipeline.readers.records import provenance
from pipeline.readers.rejects import Reject
from pipeline.schema import stable_id
from pipeline.text.normalize import normalize_text

_XML_LANG = "http://www.w3.org/XML/1998/namespace lang"
_NATIVE_CODE = {"bpt", "ept", "ph", "it", "ut"}  # inline elements holding formatting codes, not text


class _TmxParser:
    """Streaming TMX parse with expat: collects (line, unit attributes, [(lang, segment text)]) per <tu>.

    Inline markup inside <seg> keeps its text (<hi>, <sub>) and drops formatting codes (<bpt>, <ph>...).
    A unit whose segments hold more than `max_unit_chars` stops collecting text (memory stays bounded)
    and is handed on with None for its segments.
    """

    def __init__(self, max_unit_chars: int):
        self.max_unit_chars = max_unit_chars
        self._unit_chars = 0
        self.parser = expat.ParserCreate(namespace_separator=" ")
        self.parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        self.parser.StartElementHandler = self._start
        self.parser.EndElementHandler = self._end
        self.parser.CharacterDataHandler = self._chars
        self.header_srclang: str | None = None
        self.units: list[tuple[int, dict, list[tuple[str | None, str]] | None]] = []
        self._unit: tuple[int, dict, list] | None = None
        self._lang: str | None = None
        self._seg: list[str] | None = None
        self._code_depth = 0

    def feed(self, data: bytes, final: bool = False) -> None:
        self.parser.Parse(data, final)

    def _start(self, name: str, attrs: dict) -> None:
        tag = name.rsplit(" ", 1)[-1]
        if tag == "header":
            self.header_srclang = attrs.get("srclang")
        elif tag == "tu":
            self._unit = (self.parser.CurrentLineNumber, attrs, [])
            self._unit_chars = 0
        elif tag == "tuv" and self._unit is not None:
            self._lang = attrs.get(_XML_LANG) or attrs.get("lang")
        elif tag == "seg" and self._unit is not None:
            self._seg = []
        elif self._seg is not None and tag in _NATIVE_CODE:
            self._code_depth += 1

    def _end(self, name: str) -> None:
        tag = name.rsplit(" ", 1)[-1]
        if tag == "tu" and self._unit is not None:
            line, attrs, segments = self._unit
            self.units.append((line, attrs, None if self._unit_chars > self.max_unit_chars else segments))
            self._unit = None
        elif tag == "seg" and self._seg is not None and self._unit is not None:
            self._unit[2].append((self._lang, "".join(self._seg)))
            self._seg = None
        elif self._seg is not None and tag in _NATIVE_CODE:
            self._code_depth -= 1

    def _chars(self, data: str) -> None:
        if self._seg is not None and self._code_depth == 0:
            self._unit_chars += len(data)
            if self._unit_chars <= self.max_unit_chars:
                self._seg.append(data)
            else:
                self._seg.clear()


class TmxSourceReader(SourceReader):
    """TMX translation memories: each translation unit becomes one record per language.

    All records of a unit share `group_id`; the unit's source-language record (the unit's or the
    header's `srclang`) has origin `original`, the others `translation_memory` with `parent_id`
    pointing at it. Languages come from `xml:lang` (`en-US`, `FR` ... mapped by the registry).
    """

    name = "📖 tmx source"

    def iter_results(self, path, file_key):
        parser = _TmxParser(self.collect.max_record_bytes)
        index = 0
        with open_binary(path, self.collect) as fh:
            while True:
                chunk = fh.read(READ_CHUNK)
                try:
                    parser.feed(chunk, final=not chunk)
                except expat.ExpatError as exc:
                    yield from self._units(parser, file_key, index)
                    line = exc.lineno
                    detail = (
                        f"{expat.ErrorString(exc.code)} at line {line}, column {exc.offset}; the rest is lost"
                    )
                    yield Reject("malformed_xml", detail), line, None
                    return
                yield from self._units(parser, file_key, index)
                index += len(parser.units)
                parser.units.clear()
                self._line = parser.parser.CurrentLineNumber - 1  # the lines before are complete
                if not chunk:
                    return

    def _units(self, parser: _TmxParser, file_key: str, first_index: int):
        for offset, (line, attrs, segments) in enumerate(parser.units):
            index = first_index + offset + 1
            if segments is None:
                detail = (
                    f"translation unit over {parser.max_unit_chars} characters (collect.max_record_bytes)"
                )
                yield Reject("too_large", f"{detail}; not read"), line, None
                continue
            srclang = attrs.get("srclang") or parser.header_srclang
            yield from self._unit_records(file_key, index, line, srclang, segments, attrs.get("tuid"))

    def _unit_records(self, file_key, index, line, srclang, segments, tuid):
        group_id = stable_id(self.source.name, file_key, "tu", str(index))
        languages: list[str | Reject] = [
            self.builder.language(raw) if raw else Reject("missing_field", "<tuv> without xml:lang")
            for raw, _ in segments
        ]
        source_language = None
        if srclang and srclang != "*all*":
            source_language = self.builder.language(srclang)
            source_language = None if isinstance(source_language, Reject) else source_language
        parent = None
        if any(
            lang == source_language and seg.strip()
            for lang, (_, seg) in zip(languages, segments, strict=True)
        ):
            parent = stable_id(self.source.name, file_key, str(index), source_language)
        seen: dict[str, int] = {}
        for (_raw_lang, seg), language in zip(segments, languages, strict=True):
            if isinstance(language, Reject):
                yield language, line, seg
                continue
            seen[language] = seen.get(language, 0) + 1
            parts = [self.source.name, file_key, str(index), language]
            if seen[language] > 1:
                parts.append(str(seen[language]))
            record_id = stable_id(*parts)
            is_source = language == source_language and seen[language] == 1
            result = self.builder.finish(
                record_id,
                normalize_text(seg),
                language,
                group_id=group_id,
                origin="original" if is_source or source_language is None else "translation_memory",
                parent_id=None if is_source else parent,
                **provenance(tuid, file_key, index),
            )
            yield result, line, seg
