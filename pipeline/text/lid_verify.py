"""Verify a document's declared language against language-ID predictions (reusable outside the langid stage).

Rules, for a text declared as language L. The model's agreement is the probability it gives to L's
confusable group (L plus the registry's `confusable_groups` partners) and to the labels outside the
registry it gives to L's texts (`lid_models.<model>.look_alikes`: lid.176 reads short Cebuano as
Tagalog, and Hausa, which it lacks, as Finnish).
Lengths count a Han, kana or Hangul character as three letters (`effective_length`).

* Any length: most letters outside L's scripts is `wrong_script`.
* Under `min_chars`: otherwise kept, unless the model knows L and its top prediction is another
  registry language with at least `tiny_contradiction` (`wrong_language`).
* The model knows L: kept when the agreement reaches L's threshold, when the text is in a script only
  L is written in among the model's languages (`SCRIPT_DECIDES`: Han without kana is Chinese), or
  when its common words read as L. Otherwise it is removed only on contrary evidence: its
  distinctive common words read as another listed language (`reads_as_other`); under
  `short_text_chars`, a rival outside the group scoring `short_contradiction` and `short_margin` above
  the agreement, or not one common word of L among `short_min_words`; longer, a rival scoring
  `long_contradiction` and `long_margin` above, the agreement under `absent` (L is not among the
  model's predictions at all), or too few of L's common words (`common_word_contradiction`).
* The model lacks L (lid.176: ln bm nso ig rw ha doi): kept unless the model detects a language
  outside L's group with at least `contradiction` confidence (and L's common words do not support
  the text), or, when L has a stop-word list (`pipeline/text/quality_languages.yaml`) and the text has
  enough words, too few of its words are L's common words, or clearly more are another language's.
  The last catches text in the many languages neither the model nor the registry knows.

`LanguageVerifier` wraps a `LanguageIdentifier` for batches; `verify` is the pure rule, for callers
that already have predictions (the translation stage checks an LLM's output with it).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import NamedTuple

import regex

from pipeline.registry import Registry
from pipeline.text.common_words import (
    WHOLE_WORD_SCRIPTS,
    CommonWords,
    common_word_contradiction,
    common_word_support,
    has_common_word,
    reads_as_other,
)
from pipeline.text.fasttext_lid import LanguageIdentifier, LidPrediction
from pipeline.text.second_opinion import SecondOpinion

WRONG_LANGUAGE = "wrong_language"
WRONG_SCRIPT = "wrong_script"

# Minimum probability of the declared language's group, per language, for lid.176 (.ftz) on
# paragraph-length text. lid.176 gives some languages low scores even on clean text (Swahili
# paragraphs score ~0.5 median); a language not listed uses `LidThresholds.default`.
LID176_THRESHOLDS: dict[str, float] = {
    "sw": 0.15,
    "gn": 0.1,
    "ne": 0.3,
    "mg": 0.3,
    "ceb": 0.3,
    "su": 0.15,
    "ilo": 0.2,
    "co": 0.2,
    "la": 0.3,
    "gd": 0.2,
    "lb": 0.2,
    "mai": 0.2,
    "sa": 0.2,
    "eo": 0.3,
    "bs": 0.3,
    "sr": 0.3,
    "mt": 0.3,
}
DEFAULT_THRESHOLDS: dict[str, dict[str, float]] = {"lid176": LID176_THRESHOLDS}

_LETTERS = regex.compile(r"\p{L}+")


@dataclass(frozen=True)
class LidThresholds:
    """How strict verification is; `per_language` overrides `default` for the languages it names."""

    default: float = 0.5
    per_language: Mapping[str, float] = field(default_factory=dict)
    contradiction: float = 0.8
    min_script_fraction: float = 0.5
    min_chars: int = 30
    # A text shorter than `min_chars` is still judged by its script from `min_script_letters` letters, and
    # removed when fewer than `min_script_fraction_short` of them are in its scripts (terms mix scripts).
    min_script_letters: int = 8
    min_script_fraction_short: float = 0.2
    min_common_word_share: float = 0.08  # for a language the model lacks: its stop words' share of the words
    common_word_margin: float = 0.05  # ... and by how much another listed language's share may exceed it
    min_words_for_common_words: int = 20  # fewer words: too few to judge by common words
    # Short texts (fewer than `short_text_chars` characters) are removed only on contrary evidence: a
    # language outside the group scoring at least `short_contradiction` and `short_margin` above the
    # declared group, or not one common word of the declared language among `short_min_words` or more.
    short_text_chars: int = 100
    # Texts under `min_chars` (but `tiny_min_chars` or more) are removed only on a top prediction
    # outside the group scoring `tiny_contradiction` or more.
    tiny_min_chars: int = 12
    tiny_contradiction: float = 0.9
    short_contradiction: float = 0.3
    short_margin: float = 0.2
    short_min_words: int = 7
    short_foreign_contradiction: float = 0.5  # ... for a rival label outside the registry
    # Longer texts whose declared group scores under its threshold are removed on a language outside the
    # group scoring at least `long_contradiction` and `long_margin` above the group, or on the common-word
    # check; a flat, unsure distribution alone is not evidence (lid.176 scores clean Swahili 0.1).
    long_contradiction: float = 0.25
    long_margin: float = 0.1
    # ... or on the model giving the declared group less than `absent` (not among its top predictions):
    # a language the model knows does not vanish from a whole paragraph of it.
    absent: float = 0.01
    # A text at least `other_min_share` of whose words (and `other_min_hits` or more) are on the lists of
    # one other confusable group only, and none on the declared group's, reads as that language.
    other_min_hits: int = 3
    other_min_share: float = 0.2
    # A text at least this share of whose words are the declared language's common words (and no
    # other listed language's more) reads as that language whatever the model's score.
    common_word_support: float = 0.15

    def for_language(self, code: str) -> float:
        return self.per_language.get(code, self.default)

    @classmethod
    def for_model(cls, model: str, overrides: Mapping[str, float] | None = None, **kwargs) -> LidThresholds:
        """The shipped per-language defaults of `model`, updated with `overrides`."""
        return cls(per_language={**DEFAULT_THRESHOLDS.get(model, {}), **(overrides or {})}, **kwargs)


class Verdict(NamedTuple):  # a tuple: one per record
    keep: bool
    lid_language: str | None  # registry code of the top prediction, or the model's raw label
    lid_score: float | None
    reason: str | None = None  # wrong_language | wrong_script when not kept
    detail: str | None = None


@lru_cache(maxsize=256)
def _outside_scripts(scripts: tuple[str, ...]) -> regex.Pattern:
    """Runs of letters written in none of `scripts` (ISO 15924 codes)."""
    inside = "".join(rf"\p{{Script={code}}}" for code in scripts)
    return regex.compile(rf"[^{inside}\P{{L}}]+")


def script_fraction(text: str, scripts: Sequence[str]) -> float:
    """Fraction of the text's letters written in one of `scripts` (1.0 for a text without letters)."""
    outside = sum(map(len, _outside_scripts(tuple(scripts)).findall(text)))
    if outside == 0:
        return 1.0
    return 1.0 - outside / sum(map(len, _LETTERS.findall(text)))


# First word of a letter's Unicode name -> ISO 15924 code, for the scripts messages usually need.
_SCRIPT_CODES = {
    "LATIN": "Latn",
    "CYRILLIC": "Cyrl",
    "ARABIC": "Arab",
    "DEVANAGARI": "Deva",
    "CJK": "Hani",
    "HIRAGANA": "Hira",
    "KATAKANA": "Kana",
    "HANGUL": "Hang",
    "THAI": "Thai",
    "LAO": "Laoo",
    "HEBREW": "Hebr",
    "GREEK": "Grek",
    "BENGALI": "Beng",
    "TAMIL": "Taml",
    "ETHIOPIC": "Ethi",
    "MYANMAR": "Mymr",
    "KHMER": "Khmr",
    "GEORGIAN": "Geor",
    "ARMENIAN": "Armn",
    "NKO": "Nkoo",
}


def dominant_script(text: str, sample: int = 400) -> str:
    """The most frequent script among the first letters, e.g. `Latin (Latn)` (for messages)."""
    counts: dict[str, int] = {}
    for char in "".join(_LETTERS.findall(text[: sample * 4]))[:sample]:
        name = unicodedata.name(char, "UNKNOWN").split(" ", 1)[0]
        counts[name] = counts.get(name, 0) + 1
    if not counts:
        return "unknown"
    name = max(counts, key=counts.get)
    code = _SCRIPT_CODES.get(name)
    return f"{name.title()} ({code})" if code else name.title()


# Languages never written without their own script: a prediction of one of them for a text with no
# letter of that script is not evidence (lid.176 calls kana-less Chinese text Japanese).
REQUIRED_SCRIPTS: dict[str, tuple[str, ...]] = {"ja": ("Hira", "Kana"), "ko": ("Hang",)}
_REQUIRED = {
    code: regex.compile("[" + "".join(rf"\p{{Script={s}}}" for s in scripts) + "]")
    for code, scripts in REQUIRED_SCRIPTS.items()
}
# Languages that are the only ones a language-ID model knows in their script (lid.176 writes no other
# label in Han without kana, in Hangul, Thai or Lao): a text mostly in that script is that language,
# whatever score the model gives it (fastText splits words on spaces, so an unspaced Chinese sentence
# is one unknown word and scores low).
SCRIPT_DECIDES: dict[str, str] = {"zh": "Hani", "ko": "Hang", "th": "Thai", "lo": "Laoo"}
_KANA = _REQUIRED["ja"]


def decided_by_script(text: str, declared: str, min_fraction: float) -> bool:
    """Whether `text` is `declared` by its script alone (`SCRIPT_DECIDES`)."""
    script = SCRIPT_DECIDES.get(declared)
    if script is None or (declared == "zh" and _KANA.search(text)):
        return False
    return script_fraction(text, (script,)) >= min_fraction


def credible(text: str, predictions: Sequence[LidPrediction]) -> tuple[list[LidPrediction], float]:
    """The predictions that the text's script allows, and the probability of those it does not."""
    kept, dropped = [], 0.0
    for p in predictions:
        pattern = _REQUIRED.get(p.language)
        if pattern is not None and not pattern.search(text):
            dropped += p.score
        else:
            kept.append(p)
    return kept, dropped


def verify(
    text: str,
    declared: str,
    predictions: Sequence[LidPrediction],
    registry: Registry,
    thresholds: LidThresholds,
    model: str = "lid176",
    common_words: CommonWords | None = None,
    second_opinion: SecondOpinion | None = None,
) -> Verdict:
    """Check that `text` is in `declared` given the model's top-k `predictions` (best first).

    `common_words`: the stop-word lists (`CommonWords.shipped()`); without them a language the model
    lacks is judged by script and confident detections only. `second_opinion`: another model's
    registry language for a text (`pipeline.text.second_opinion.SecondOpinion`), asked only where the
    model leaves the text undecided."""
    top = predictions[0] if predictions else None
    language = registry.get(declared)
    # (a text this long already passes every length threshold: no need to weigh its characters)
    length = len(text) if len(text) >= thresholds.short_text_chars else effective_length(text)
    known = bool(language.lid_labels_for(model))
    if (  # most texts: the declared group alone reaches the threshold
        known
        and length >= thresholds.min_chars
        and sum(p.score for p in predictions if p.language in registry.confusable_with(declared))
        >= thresholds.for_language(declared)
    ):
        return Verdict(
            True, (top.language or top.label) if top else None, round(top.score, 4) if top else None
        )
    case = _Case(text, declared, predictions, registry, thresholds, model, common_words, second_opinion)
    if length < thresholds.min_chars:
        return case.very_short(length)
    return case.known_language(length) if known else case.unknown_language()


def agrees(p: LidPrediction, group: frozenset[str], look_alikes: Sequence[str]) -> bool:
    """The prediction is a language of the declared group, or one of its look-alikes' labels."""
    return p.language in group or (p.language is None and p.label in look_alikes)


class _Case:
    """One text whose verdict the common case did not settle: the context the rules share, and each
    piece of evidence computed at most once."""

    def __init__(
        self,
        text: str,
        declared: str,
        predictions: Sequence[LidPrediction],
        registry: Registry,
        thresholds: LidThresholds,
        model: str,
        common_words: CommonWords | None,
        second_opinion: SecondOpinion | None,
    ):
        self.text, self.declared, self.predictions = text, declared, predictions
        self.registry, self.thresholds, self.model = registry, thresholds, model
        self.common_words, self.second_opinion = common_words, second_opinion
        self.language = registry.get(declared)
        self.top = predictions[0] if predictions else None
        self.lid_language = (self.top.language or self.top.label) if self.top else None
        self.lid_score = round(self.top.score, 4) if self.top else None
        self.group = registry.confusable_with(declared)
        self.look_alikes = registry.lid_look_alikes(model, declared)

    # ---- the three cases ------------------------------------------------------------------------------
    def very_short(self, length: int) -> Verdict:
        """Under `min_chars`: the script, then two witnesses or one very confident one."""
        t, top = self.thresholds, self.top
        if self.letters() >= t.min_script_letters:
            fraction = self.script_fraction()
            if fraction < t.min_script_fraction_short:
                return self.wrong_script(fraction)
        if length < t.tiny_min_chars:
            return self.keep()
        if self.second_opinion is not None and not (top and self.agrees(top)):
            # two witnesses: the second opinion, and the model agreeing with it or lacking its language
            other = self.second_reads_other(tiny=True)
            if other is not None and (
                not self.registry.get(other).lid_labels_for(self.model)
                or (top is not None and top.language == other)
            ):
                return self.second_opinion_verdict(other)
        # a confident top prediction of another registry language, outside the group, that the text's
        # words do not contradict. Not for a language the model lacks, nor on a label outside the
        # registry: on a few words lid.176 gives such labels to the languages it does not know (short
        # Kinyarwanda and Swahili read as Finnish at 0.97).
        if (
            self.language.lid_labels_for(self.model)
            and top is not None
            and top.language is not None
            and top.score >= t.tiny_contradiction
            and not self.agrees(top)
            and credible(self.text, (top,))[0]
            and not self.decided_by_script()
            and not self.supported_by_words()
        ):
            detail = (
                f"declared {self.declared}, detected {self.lid_language} ({top.score:.2f}) on a short text"
            )
            return self.wrong_language(detail)
        return self.keep()

    def known_language(self, length: int) -> Verdict:
        """The model knows the language and its agreement is under the threshold: kept on its script, its
        common words or the second opinion; removed only on contrary evidence."""
        t = self.thresholds
        threshold = t.for_language(self.declared)
        mass = sum(p.score for p in self.predictions if self.agrees(p))
        if mass >= threshold or self.decided_by_script():  # a look-alike's share; a script only it uses
            return self.keep()
        allowed, dropped = credible(self.text, self.predictions)
        if dropped:
            mass /= max(1.0 - dropped, 1e-6)
            if mass >= threshold:
                return self.keep()
        fraction = self.script_fraction()
        if fraction < t.min_script_fraction:
            return self.wrong_script(fraction)
        supported, none_common = common_word_support(self.text, self.declared, self.common_words, t)
        if supported or self.second in self.group:
            return self.keep()
        rival = max((p.score for p in allowed if not self.agrees(p)), default=0.0)
        if length < t.short_text_chars:
            # a label outside the registry needs more: on short text of the languages it knows poorly,
            # lid.176 gives Basque, Quechua or Esperanto 0.3 to 0.4; a registry language needs one of
            # its common words in the text
            short_rival = max(
                (
                    p.score
                    for p in allowed
                    if not self.agrees(p)
                    and (
                        p.score >= t.short_foreign_contradiction
                        if p.language is None
                        else has_common_word(self.text, p.language, self.registry, self.common_words)
                    )
                ),
                default=0.0,
            )
            contrary = (short_rival >= t.short_contradiction and rival >= mass + t.short_margin) or (
                none_common and set(self.language.scripts) <= WHOLE_WORD_SCRIPTS
            )
        else:
            contrary = (
                mass < t.absent
                or (rival >= t.long_contradiction and rival >= mass + t.long_margin)
                or (
                    self.common_words is not None
                    and common_word_contradiction(self.text, self.declared, self.common_words, t) is not None
                )
            )
        if contrary:
            return self.detected_other()
        other = self.second_reads_other(model_absent=mass < t.absent)
        if other is not None:
            return self.second_opinion_verdict(other)
        other = reads_as_other(self.text, self.group, self.registry, self.common_words, t)
        return self.keep() if other is None else self.reads_as_verdict(other)

    def unknown_language(self) -> Verdict:
        """The model lacks the language: kept unless something contradicts it."""
        t, top = self.thresholds, self.top
        fraction = self.script_fraction()
        if fraction < t.min_script_fraction:
            return self.wrong_script(fraction)
        # a confident detection of another language on a text that reads as the declared one by its
        # common words (lid.176 calls short Hausa sentences Finnish at 0.88) is not kept out
        contradicted = (
            top is not None
            and not self.agrees(top)
            and top.score >= t.contradiction
            and not self.supported_by_words()
        )
        if self.second_opinion is not None:
            # the second opinion knows most of the languages this model lacks: its word settles it
            if self.second in self.group:
                return self.keep()
            other = None if contradicted else self.second_reads_other()
            if other is not None:
                return self.second_opinion_verdict(other)
        if contradicted:
            return self.detected_other()
        other = reads_as_other(self.text, self.group, self.registry, self.common_words, t)
        if other is not None:
            return self.reads_as_verdict(other)
        reason = (
            None
            if self.common_words is None
            else common_word_contradiction(self.text, self.declared, self.common_words, t)
        )
        if reason is None:
            return self.keep()
        return self.wrong_language(f"{reason} (detected {self.lid_language})")

    # ---- evidence ---------------------------------------------------------------------------------------
    def agrees(self, p: LidPrediction) -> bool:
        return agrees(p, self.group, self.look_alikes)

    def letters(self) -> int:
        return letter_count(self.text)

    def script_fraction(self) -> float:
        return script_fraction(self.text, self.language.scripts)

    def decided_by_script(self) -> bool:
        return decided_by_script(self.text, self.declared, self.thresholds.min_script_fraction)

    def supported_by_words(self) -> bool:
        return common_word_support(self.text, self.declared, self.common_words, self.thresholds)[0]

    @cached_property
    def second(self) -> str | None:
        """The second opinion's registry language, asked once and only if needed."""
        return self.second_opinion(self.text) if self.second_opinion is not None else None

    def second_reads_other(self, model_absent: bool = False, tiny: bool = False) -> str | None:
        """The second opinion's language when it is outside the group and a second witness agrees: the
        model's top prediction is that language too, or the text has a common word of it (where it has
        a list; CLD2 is sure of itself on a few words, rightly or not) and CLD2 knows the declared
        language or the model finds none of it (`model_absent`). A `tiny` text needs the common word
        whatever the model says: on a term or two both read a loanword as English."""
        if self.second_opinion is None:
            return None
        other = self.second
        if other is None or other in self.group:
            return None
        required = _REQUIRED.get(other)  # CLD2 too reads kana-less Chinese as Japanese
        if (required is not None and not required.search(self.text)) or self.decided_by_script():
            return None
        corroborated = has_common_word(self.text, other, self.registry, self.common_words)
        if self.top is not None and self.top.language == other and (corroborated or not tiny):
            return other
        if not corroborated:
            return None
        return other if self.second_opinion.knows(self.declared) or model_absent else None

    # ---- verdicts -----------------------------------------------------------------------------------------
    def keep(self) -> Verdict:
        return Verdict(True, self.lid_language, self.lid_score)

    def wrong_language(self, detail: str) -> Verdict:
        return Verdict(False, self.lid_language, self.lid_score, WRONG_LANGUAGE, detail)

    def wrong_script(self, fraction: float) -> Verdict:
        detail = _script_detail(self.text, self.declared, self.language, fraction)
        return Verdict(False, self.lid_language, self.lid_score, WRONG_SCRIPT, detail)

    def detected_other(self) -> Verdict:
        top = self.top
        if top is None:
            return self.wrong_language(f"declared {self.declared}, detected nothing")
        detail = f"declared {self.declared}, detected {self.lid_language} ({top.score:.2f})"
        if self.agrees(top):
            detail += f", below threshold {self.thresholds.for_language(self.declared):.2f}"
        return self.wrong_language(detail)

    def reads_as_verdict(self, other: str) -> Verdict:
        return self.wrong_language(
            f"declared {self.declared}, reads as {other} by its common words (detected {self.lid_language})"
        )

    def second_opinion_verdict(self, other: str) -> Verdict:
        return self.wrong_language(
            f"declared {self.declared}, CLD2 reads {other} (lid.176: {self.lid_language} {self.lid_score})"
        )


def letter_count(text: str) -> int:
    """Letters in `text`, a Han, kana or Hangul character counted as three (`DENSE_CHAR_WEIGHT`)."""
    return sum(map(len, _LETTERS.findall(text))) + (DENSE_CHAR_WEIGHT - 1) * len(_DENSE.findall(text))


# A character of a script that writes a syllable or a morpheme per character carries about as much as
# three letters of an alphabet: length thresholds set in letters count it three times (an
# eight-character Chinese question is a whole sentence, not a fragment).
DENSE_CHAR_WEIGHT = 3
_DENSE = regex.compile(r"[\p{Script=Han}\p{Script=Hiragana}\p{Script=Katakana}\p{Script=Hangul}]")


def effective_length(text: str) -> int:
    """`len(text)`, with each character of a dense script (Han, kana, Hangul) counted three times."""
    return len(text) + (DENSE_CHAR_WEIGHT - 1) * len(_DENSE.findall(text))


def _script_detail(text: str, declared: str, language, fraction: float) -> str:
    return (
        f"declared {declared} ({'/'.join(language.scripts)}), text is mostly {dominant_script(text)}, "
        f"{1 - fraction:.0%} of letters outside"
    )


class LanguageVerifier:
    """Batch language ID + verification with one model load per process.

    >>> verifier = LanguageVerifier(load_registry())
    >>> verifier.check("Homa ni dalili ya kawaida ya malaria.", "sw").keep
    """

    def __init__(
        self,
        registry: Registry,
        model: str = "lid176",
        model_path: str | None = None,
        thresholds: LidThresholds | None = None,
        k: int = 5,
        second_opinion: bool = True,
    ):
        self.registry = registry
        self.model = model
        self.identifier = LanguageIdentifier(registry, model, model_path)
        self.thresholds = thresholds or LidThresholds.for_model(model)
        self.k = k
        self.common_words = CommonWords.shipped()
        self.second_opinion = SecondOpinion(registry) if second_opinion else None

    def verify_batch(self, texts: Sequence[str], declared: Sequence[str]) -> list[Verdict]:
        """Verdicts of a batch. fastText's top-1 is cheaper than its top-k, and settles most texts (see
        `_settled_by_top`); only the others are predicted again with the top-k."""
        texts = list(texts)
        predictions = self.identifier.predict(texts, k=1)
        if self.k > 1:
            again = [
                i
                for i, (text, lang, preds) in enumerate(zip(texts, declared, predictions, strict=True))
                if not self._settled_by_top(text, lang, preds)
            ]
            if again:
                more = self.identifier.predict([texts[i] for i in again], k=self.k)
                for i, preds in zip(again, more, strict=True):
                    predictions[i] = preds
        return [
            self.verify(text, lang, preds)
            for text, lang, preds in zip(texts, declared, predictions, strict=True)
        ]

    def verify(self, text: str, declared: str, predictions: Sequence[LidPrediction]) -> Verdict:
        """`verify` with this verifier's registry, thresholds, model, common words and second opinion,
        on predictions the caller already has."""
        return verify(
            text,
            declared,
            predictions,
            self.registry,
            self.thresholds,
            self.model,
            self.common_words,
            self.second_opinion,
        )

    def _settled_by_top(self, text: str, declared: str, predictions: Sequence[LidPrediction]) -> bool:
        """Whether `verify` gives the same verdict from the top prediction alone as from the top-k: the
        text is under `min_chars` or the model lacks the language (only the top prediction counts), or
        the top prediction is in the declared language's group with enough probability on its own."""
        short = len(text) < self.thresholds.min_chars and effective_length(text) < self.thresholds.min_chars
        if short or not predictions:
            return True
        if not self.registry.get(declared).lid_labels_for(self.model):
            return True
        top = predictions[0]
        group = self.registry.confusable_with(declared)
        look_alikes = self.registry.lid_look_alikes(self.model, declared)
        return agrees(top, group, look_alikes) and top.score >= self.thresholds.for_language(declared)

    def check(self, text: str, declared: str) -> Verdict:
        return self.verify_batch([text], [declared])[0]
