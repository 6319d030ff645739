"""Language-aware word segmentation, done once per document and shared by dedup, quality and decontam.

Space-delimited scripts split into Unicode words; scripts written without spaces (the registry's
`segmentation: char` languages: zh, ja, th, lo) yield one token per character (with its combining
marks), so word n-grams become character n-grams. No model is needed for any language.
"""

from __future__ import annotations

import regex

_UNSPACED = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}"
_WORD = regex.compile(r"[\p{L}\p{N}][\p{L}\p{M}\p{N}]*(?:['’][\p{L}\p{M}]+)*")
_CHAR_OR_WORD = regex.compile(
    rf"[{_UNSPACED}]\p{{M}}*|(?:(?![{_UNSPACED}])[\p{{L}}\p{{N}}])(?:(?![{_UNSPACED}])[\p{{L}}\p{{M}}\p{{N}}])*"
)


def segment(text: str, segmentation: str = "space") -> list[str]:
    """Lower-cased tokens of `text`: words, or characters for `segmentation == "char"`."""
    pattern = _CHAR_OR_WORD if segmentation == "char" else _WORD
    return pattern.findall(text.lower())
