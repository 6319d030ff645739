"""The ApolloMoE release format."""

from __future__ import annotations

import re
from dataclasses import replace

from datatrove.data import Document

from pipeline.readers.base import SourceReader
from pipeline.readers.json_items import JsonItems
from pipeline.readers.records import get_field, provenance
from pipeline.readers.rejects import Reject
from pipeline.schema import stable_id
from pipeline.text.normalize import render_messages

_APOLLO_KEY = re.compile(r"^(?P<kind>[A-Za-z]+)_(?P<lang>[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]+)*)$")


class ApolloSourceReader(JsonItems, SourceReader):
    """The ApolloMoE release: JSON items `{"conversations": [...], "source": "medicalExam_sw",
    "class": "minor", "language": "sw"}` (a JSON array or JSON Lines).

    The source key gives the source type (via collect.apollo_source_types) and, when the item has no
    `language`, the language. A one-turn conversation is a plain document (messages null); two or
    more turns alternate user/assistant. `class` is informational: the registry decides the tier.
    """

    name = "📖 apollo source"

    def iter_results(self, path, file_key):
        for value, line, raw, index in self.json_objects(path):
            yield value if isinstance(value, Reject) else self._build(value, file_key, index), line, raw

    def _build(self, item: dict, file_key: str, index: int) -> Document | Reject:
        key = item.get("source")
        kind_lang = _APOLLO_KEY.match(key) if isinstance(key, str) else None
        if key is None and self.source.source_type:
            source_type = self.source.source_type
        elif kind_lang and kind_lang["kind"] in self.collect.apollo_source_types:
            source_type = self.collect.apollo_source_types[kind_lang["kind"]]
        else:
            known = ", ".join(sorted(self.collect.apollo_source_types))
            return Reject(
                "bad_field", f"apollo source key {key!r} is not <type>_<lang> with a type in: {known}"
            )
        field = self.source.language_field or "language"
        raw_language = get_field(item, field)
        if raw_language in (None, "") and kind_lang:
            raw_language = kind_lang["lang"]
        if raw_language in (None, "") and self.builder.fixed_language:
            raw_language = self.builder.fixed_language
        language = self.builder.language(raw_language)
        if isinstance(language, Reject):
            return language
        turns = item.get("conversations")
        if turns is None:
            return Reject("missing_field", "no 'conversations'", language=language)
        messages = self.builder.messages(turns, alternate=True)
        if isinstance(messages, Reject):
            return replace(messages, language=language)
        if len(messages) == 1:
            text, messages = messages[0]["content"], None
        else:
            text = render_messages(messages)
        given_id = item.get(self.source.id_field or "id")
        record_id = (
            stable_id(self.source.name, str(given_id))
            if given_id not in (None, "")
            else stable_id(self.source.name, file_key, str(index))
        )
        return self.builder.finish(
            record_id,
            text,
            language,
            source_type=source_type,
            messages=messages,
            **provenance(given_id, file_key, index),
        )
