"""Text helpers shared by the stages: normalisation, conversations and exam items.

Collection normalises every string it reads with `normalize_text`; conversations and exam items
are rendered into the record's `text` with `render_messages`, so every stage that needs a flat
view of a `messages` row sees the same one.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable

# \r\n, \r, NEL, LINE SEPARATOR and PARAGRAPH SEPARATOR all become \n.
_NEWLINES = re.compile("\r\n?|[\x85\u2028\u2029]")
# Unicode control characters (category Cc) except \t and \n, and the bidirectional embeddings,
# overrides and isolates (U+202A-U+202E, U+2066-U+2069): they reorder what a reader sees without
# changing what a model reads (the "Trojan Source" trick). The bidi marks (LRM, RLM, ALM) and the
# zero-width joiner and non-joiner that Indic and Persian-script words need are kept.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def normalize_text(text: str) -> str:
    """Unicode NFC, newlines as \\n, control characters (except \\t and \\n) and bidi overrides removed;
    nothing else.

    Whitespace, case, punctuation and markup are left alone: later stages judge them.
    """
    text = unicodedata.normalize("NFC", text)
    text = _NEWLINES.sub("\n", text)
    return _CONTROL.sub("", text)


class SubstringSet:
    """Which of many fixed strings occur in a text, with fewer scans than one `in` per string.

    Strings sharing a substring (their gate, at least `min_gate` characters or the whole string) are
    looked for only when the gate occurs; the gates are chosen greedily, each covering as many strings
    as possible. A `str` scan is fast, so on a document that holds none of the strings (the common
    case) the work is one scan per gate instead of one per string.
    """

    def __init__(self, strings: Iterable[str], min_gate: int = 4):
        strings = tuple(dict.fromkeys(strings))
        covers: dict[str, set[str]] = defaultdict(set)
        for s in strings:
            covers[s].add(s)  # also the gate of a string shorter than min_gate
            for i in range(len(s)):
                for j in range(i + min_gate, len(s) + 1):
                    covers[s[i:j]].add(s)
        left, groups = set(strings), []
        while left:
            gate = max(covers, key=lambda g: (len(covers[g] & left), len(g), g))
            groups.append((gate, tuple(s for s in strings if s in covers[gate] and s in left)))
            left -= covers[gate]
        self.groups: tuple[tuple[str, tuple[str, ...]], ...] = tuple(groups)

    def found(self, text: str) -> list[str]:
        """The strings that occur in `text` (each once)."""
        return [s for gate, group in self.groups if gate in text for s in group if s in text]


# Role names found in the wild -> the schema's three roles.
ROLE_ALIASES = {
    "user": "user",
    "human": "user",
    "patient": "user",
    "question": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "doctor": "assistant",
    "answer": "assistant",
    "system": "system",
}
ROLE_LABELS = {"system": "System", "user": "User", "assistant": "Assistant"}


def render_messages(messages: list[dict]) -> str:
    """A conversation as plain text: one `User: ...` / `Assistant: ...` block per turn, joined by \\n."""
    return "\n".join(f"{ROLE_LABELS[m['role']]}: {m['content']}" for m in messages)


LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def format_options(options: list[str]) -> str:
    """Options as the benchmark format writes them: "(A) ...\\n(B) ..."."""
    return "\n".join(f"({LETTERS[i]}) {option}" for i, option in enumerate(options))


def exam_messages(question: str, options: list[str], answer: str) -> list[dict]:
    """An exam item as a conversation: the user asks the question with its options, the assistant
    answers with the letter and the option's text, e.g. "(C) Metformin"."""
    return [
        {"role": "user", "content": f"{question}\n{format_options(options)}"},
        {"role": "assistant", "content": f"({answer}) {options[LETTERS.index(answer)]}"},
    ]


def content_text(text: str, messages: list[dict] | None = None, exam: dict | None = None) -> str:
    """A record's words without rendering markup (role labels, option letters): what language ID
    should read, since English `User:`/`Assistant:` labels pull short non-English texts towards English."""
    if exam:
        return "\n".join([exam.get("question") or "", *(exam.get("options") or [])])
    if messages:
        return "\n".join(m.get("content") or "" for m in messages)
    return text
