"""Building records: one input item (a dict of fields) becomes a record Document or a Reject."""

from __future__ import annotations

import unicodedata
from dataclasses import replace

from datatrove.data import Document

from pipeline.benchmarks.options import OptionError, parse_answer, parse_options
from pipeline.config import CollectSection, SourceSection
from pipeline.readers.rejects import Reject
from pipeline.record_io import record_to_document
from pipeline.registry import Registry, UnknownLanguageError
from pipeline.schema import empty_record, stable_id
from pipeline.text.normalize import ROLE_ALIASES, exam_messages, normalize_text, render_messages


def get_field(item: dict, field: str) -> object:
    """item[field], where `a.b` reaches into nested objects (unless `a.b` is itself a key); None when absent."""
    if field in item:
        return item[field]
    value: object = item
    for key in field.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def required_fields(source: SourceSection) -> list[str]:
    """Top-level fields every item of a jsonl/csv/parquet/hf source needs."""
    if source.is_exam:
        names = [source.question_field, source.options_field, source.answer_field]
    else:
        names = [source.messages_field or source.text_field]
    return [n.split(".")[0] for n in [*names, source.language_field] if n]


def optional_fields(source: SourceSection) -> list[str]:
    names = [source.id_field, source.url_field, None if source.is_exam else source.title_field]
    return [n.split(".")[0] for n in names if n]


class RecordBuilder:
    """Turns one input item (a dict of fields) into a record Document, or says why it cannot."""

    def __init__(self, source: SourceSection, collect: CollectSection, registry: Registry):
        self.source = source
        self.collect = collect
        self.registry = registry
        self.fixed_language = registry.normalize_code(source.language) if source.language else None

    def fields(self) -> list[str]:
        """Top-level field names this source reads (Parquet reads only these columns)."""
        return sorted(set(required_fields(self.source)) | set(optional_fields(self.source)))

    def language(self, code: object) -> str | Reject:
        if code is None or (isinstance(code, str) and not code.strip()):
            return Reject("missing_field", f"no language in field '{self.source.language_field}'")
        try:
            return self.registry.normalize_code(str(code))
        except UnknownLanguageError as exc:
            return Reject("unknown_language", str(exc))

    def _string(self, item: dict, field: str, what: str) -> str | Reject:
        value = get_field(item, field)
        if value is None:
            return Reject("missing_field", f"no {what} field '{field}'")
        if not isinstance(value, str):
            return Reject("bad_field", f"{what} field '{field}' is {type(value).__name__}, expected a string")
        return normalize_text(value)

    def messages(self, turns: object, alternate: bool = False) -> list[dict] | Reject:
        """Normalised {role, content} turns from {role, content} / {from, value} dicts, or from plain
        strings alternating user/assistant (`alternate`)."""
        if not isinstance(turns, list) or not turns:
            return Reject("bad_field", "messages are not a non-empty list")
        out = []
        for i, turn in enumerate(turns):
            if isinstance(turn, str) and alternate:
                role, content = ("user", "assistant")[i % 2], turn
            elif isinstance(turn, dict):
                role = turn.get("role", turn.get("from"))
                content = turn.get("content", turn.get("value"))
                role = ROLE_ALIASES.get(str(role).strip().lower()) if role is not None else None
                if role is None:
                    return Reject(
                        "bad_field", f"turn {i} has an unknown role {turn.get('role', turn.get('from'))!r}"
                    )
            else:
                return Reject(
                    "bad_field", f"turn {i} is {type(turn).__name__}, expected a {{role, content}} object"
                )
            if not isinstance(content, str):
                return Reject("bad_field", f"turn {i} content is {type(content).__name__}, expected a string")
            out.append({"role": role, "content": normalize_text(content)})
        if not any(m["content"].strip() for m in out):
            return Reject("empty_text", "every turn is empty")
        return out

    def build(self, item: dict, file_key: str, index: int) -> Document | Reject:
        """A record from one item of a jsonl/csv/parquet/hf source."""
        s = self.source
        if self.fixed_language:
            language: str | Reject = self.fixed_language
        else:
            language = self.language(get_field(item, s.language_field))
        if isinstance(language, Reject):
            return language
        messages = exam = None
        if s.is_exam:
            question = self._string(item, s.question_field, "question")
            if isinstance(question, Reject):
                return replace(question, language=language)
            raw_options, raw_answer = get_field(item, s.options_field), get_field(item, s.answer_field)
            if raw_options is None or raw_answer is None:
                missing = s.options_field if raw_options is None else s.answer_field
                return Reject("missing_field", f"no field '{missing}'", language=language)
            try:
                parsed = tuple((label, normalize_text(text)) for label, text in parse_options(raw_options))
                answers = parse_answer(
                    normalize_text(raw_answer) if isinstance(raw_answer, str) else raw_answer, parsed
                )
                if len(answers) != 1:
                    raise OptionError(f"{len(answers)} correct answers; an exam record has one")
            except OptionError as exc:
                return Reject("bad_field", str(exc), language=language)
            options, answer = [text for _, text in parsed], answers[0]
            exam = {"question": question, "options": options, "answer": answer}
            messages = exam_messages(question, options, answer)
            text = render_messages(messages) if question.strip() else ""
        elif s.messages_field:
            turns = get_field(item, s.messages_field)
            if turns is None:
                return Reject("missing_field", f"no messages field '{s.messages_field}'", language=language)
            messages = self.messages(turns, alternate=True)
            if isinstance(messages, Reject):
                return replace(messages, language=language)
            text = render_messages(messages)
        else:
            text = self._string(item, s.text_field, "text")
            if isinstance(text, Reject):
                return replace(text, language=language)
            if s.title_field and text.strip():
                title = get_field(item, s.title_field)
                if isinstance(title, str) and title.strip():
                    text = f"{normalize_text(title).strip()}\n\n{text}"
        given_id = get_field(item, s.id_field) if s.id_field else None
        record_id = (
            stable_id(s.name, str(given_id))
            if given_id not in (None, "")
            else stable_id(s.name, file_key, str(index))
        )
        url = get_field(item, s.url_field) if s.url_field else None
        return self.finish(
            record_id,
            text,
            language,
            messages=messages,
            exam=exam,
            url=url if isinstance(url, str) and url else None,
            **provenance(given_id, file_key, index),
        )

    def finish(
        self, record_id: str, text: str, language: str, source_type: str | None = None, **columns
    ) -> Document | Reject:
        """Length checks, then the Document carrying the record."""
        if not _visible(text):
            return Reject("empty_text", "the text is empty or only whitespace", language=language)
        if len(text) < self.collect.min_doc_chars:
            return Reject(
                "too_short",
                f"{len(text)} characters < min_doc_chars {self.collect.min_doc_chars}",
                language=language,
            )
        if len(text) > self.collect.max_doc_chars:
            return Reject(
                "too_long",
                f"{len(text)} characters > max_doc_chars {self.collect.max_doc_chars}",
                language=language,
            )
        row = empty_record(
            id=record_id,
            text=text,
            language=language,
            source=self.source.name,
            source_type=source_type or self.source.source_type,
            origin="original",
            license=self.source.license,
        )
        row.update(columns)
        return record_to_document(row)


def provenance(given_id: object, file_key: str, position: int) -> dict:
    """The provenance columns of a record read from item `position` of `file_key`."""
    return {
        "source_id": None if given_id in (None, "") else str(given_id),
        "source_file": file_key,
        "source_position": position,
    }


def _visible(text: str) -> bool:
    """Whether the text has a character that is neither whitespace nor an invisible format control
    (zero-width spaces and joiners, bidi marks and overrides, BOM): only those is an empty text."""
    return any(not ch.isspace() and unicodedata.category(ch) != "Cf" for ch in text)
