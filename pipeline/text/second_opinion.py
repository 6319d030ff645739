"""A second language-ID opinion: CLD2 (Google's Compact Language Detector 2, through `pycld2`).

lid.176 lacks Hausa, Kinyarwanda, Lingala, Igbo and Northern Sotho and barely knows Swahili or
Scottish Gaelic: on a short sentence of them it has nothing to say, or something wrong (Finnish at
0.95). CLD2 is another kind of model (quadgram scores over web text, 160-odd languages) that knows
45 of the 50 registry languages, these among them (not bm, ckb, doi, ilo, mai), and reads a
six-word Hausa or Kinyarwanda sentence right. Language ID asks it only where lid.176 leaves a text
undecided (`pipeline.text.lid_verify.verify`), so it adds little to the stage's time (measured in
docs/dedup_langid.md).
"""

from __future__ import annotations

from functools import lru_cache

from pipeline.registry import Registry, UnknownLanguageError

UNKNOWN = "un"
# CLD2 reads a text's first characters: a few sentences name the language, and the cost stays flat
# whatever the document's length (it halves CLD2's time on paragraph-length text)
PREFIX = 300


@lru_cache(maxsize=1)
def _cld2():
    """The `pycld2` module, imported on first use (a verifier is pickled to datatrove's workers, and a
    module's built-in functions cannot be)."""
    import pycld2

    return pycld2


class SecondOpinion:
    """The registry language CLD2 finds most of in a text (None: none, or not a registry language).

    >>> SecondOpinion(load_registry())("kuma kuna da zazzabi yanzu")
    'ha'
    """

    def __init__(self, registry: Registry):
        self.registry = registry
        # the registry languages CLD2 can answer: about a text in another one, it names whatever
        # language comes closest (Bambara reads as Slovak), which says nothing against the declared one
        self.languages = frozenset(filter(None, (self._registry_code(code) for _, code in _cld2().LANGUAGES)))

    def knows(self, language: str) -> bool:
        return language in self.languages

    def __call__(self, text: str) -> str | None:
        cld2 = _cld2()
        try:
            # plain text (not HTML); best effort: answer on short texts too, where CLD2 is usually right
            _, _, details = cld2.detect(text[:PREFIX], isPlainText=True, bestEffort=True)
        except (cld2.error, UnicodeEncodeError):  # lone surrogates, not UTF-8: no opinion
            return None
        code = details[0][1]
        return None if code == UNKNOWN else self._registry_code(code)

    @lru_cache(maxsize=256)  # noqa: B019 (one instance per worker; CLD2 has ~160 codes)
    def _registry_code(self, code: str) -> str | None:
        """CLD2's code (`iw`, `zh-Hant`, `sr-ME`) as a registry code, or None for another language."""
        try:
            return self.registry.normalize_code(code)
        except UnknownLanguageError:
            return None
