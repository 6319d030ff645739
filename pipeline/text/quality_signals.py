"""Heuristic quality signals and the rules that turn them into a score in [0, 1].

Signals are computed from one segmentation of a document (`pipeline.text.segment.segment`) plus its
lines and paragraphs; the bounds are per language (`quality_languages.yaml`: Gopher / FineWeb
defaults, FineWeb-2's per-language numbers, config overrides). Each rule scores its signal with a
linear ramp that is 1 well inside the bound, exactly 0.5 at the bound and 0 well beyond it, so that
at the default threshold (0.5) a single rule keeps what the published filter keeps, and the score
also says by how much a document passed.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import regex
from ftfy.badness import badness

from pipeline import yaml_files
from pipeline.text.normalize import SubstringSet

LANGUAGE_RULES_PATH = Path(__file__).resolve().parent / "quality_languages.yaml"

_TERMINAL = set(".!?…。！？｡؟۔।॥።။។៕;")
_CLOSING = "\"'”’»」』）)]】›*_ \t"
_PARAGRAPH_BREAK = regex.compile(r"\n\s*\n")
_NON_ALPHA_WORD = regex.compile(r"(?<!\S)[^\s\p{L}]+(?!\S)")
# Spaces inside one word for the alpha-word ratio: the no-break spaces (U+00A0, figure U+2007, narrow
# U+202F) that typesetting puts inside one quantity ("10,9 %", "358 de 457") and the space between
# the digit groups of one number ("1 037", "74 439"), in any of them.
_SPACED_DIGITS = re.compile(r"\d \d")  # a cheap test for the second kind
_WORD_INTERNAL_SPACE = regex.compile(
    r"[\u00a0\u2007\u202f]|(?<=(?<![\p{Nd}.,])\p{Nd}{1,3})[ \u00a0\u2007\u202f](?=\p{Nd}{3}(?!\p{Nd}))"
)
_DIGIT = regex.compile(r"\p{Nd}")
_LINE_SEPARATORS = " \t|>»›/:-–—•·*"


@dataclass(frozen=True)
class Rule:
    """One bound on one signal: `signal` must stay below (upper) or above (lower) `bound`.

    A signal of a short text is noisy (a stop-word ratio or a top n-gram fraction of one sentence), so
    each rule carries a confidence that grows with the text's length: `full_words` words (scaled like
    the length minimum for unsegmented scripts) give full confidence c = 1; a shorter text is judged
    against a bound loosened by c (an upper bound divided by c, a lower one multiplied by it), and not
    at all below c = MIN_CONFIDENCE or under `min_lines` lines. `defect` rules find real defects
    (boilerplate, encoding garbage, duplicated lines and paragraphs) and judge every source type; the
    others are the web-text heuristics, applied only to `quality.heuristic_types` (web, general).

    The repetition rules also take a full length from their bound (`full_repeats`): a repeated
    n-gram fraction is a count of repeats in disguise, and a text can only tell repetition from the
    ordinary re-use of a name or term ("World Health Organization", "underlying medical conditions")
    once its bound allows a few repeats. Full confidence needs, besides `full_words`, the length where
    the bound amounts to `full_repeats` n-grams (full_repeats x n / bound words): 100 words at Gopher's
    bounds (six 3-grams at 0.18, three repeated 5-grams at 0.15) as before, proportionally more where
    a language's bound is stricter (FineWeb-2's Kinyarwanda 0.036, which one name repeated in a
    paragraph exceeds: 420 words). In between, the bound used is what `full_repeats` n-grams make up
    of the text.

    A mean over a text's words is known only to within its standard error: an `averaged` rule also
    loosens its bound by STANDARD_ERRORS standard errors of a natural text whose mean sits at the bound
    (WORD_LENGTH_CV x bound / sqrt(n_words)), so that a paragraph is not removed for a mean word length
    that sampling alone puts on the other side of the bound (a 50-word dialogue in Spanish, whose short
    words sit under FineWeb-2's bound of 4, set on encyclopedic text). The spread is that of natural
    text, not the text's own, so that garbage with widely varying word lengths does not excuse itself.
    Only the minimum word length is averaged so: in the TICO-19 and Tatoeba sentences the minimums sit
    close to natural text's means (Spanish 4 for a mean of 4.8, Vietnamese 3 for 3.2), where sampling
    decides; the maximums sit at 1.7-6.9 times them, where only non-words (encoded strings, machine
    garbage) reach, and loosening them would excuse exactly those."""

    signal: str
    bound: str
    upper: bool
    margin: float  # ramp half-width as a fraction of the bound
    min_margin: float  # ... but never narrower than this
    full_words: int = 0
    min_lines: int = 0
    defect: bool = False
    full_repeats: int = 0
    averaged: bool = False


MIN_CONFIDENCE = 0.2
STANDARD_ERRORS = 2.0
# Standard deviation of word length over its mean in running text: 0.50-0.64 in 29 of the 33
# space-separated languages of the TICO-19 and Tatoeba sentences in ../shared (vi 0.31, he 0.36, ko 0.39,
# ar 0.41 below; measured by segmenting them as here), so the median.
WORD_LENGTH_CV = 0.55
RULES: tuple[Rule, ...] = (
    Rule("n_words", "min_words", False, 0.5, 1.0),
    Rule("n_words", "max_words", True, 0.1, 1.0),
    Rule("mean_word_length", "min_mean_word_length", False, 0.3, 0.3, full_words=50, averaged=True),
    Rule("mean_word_length", "max_mean_word_length", True, 0.3, 0.3, full_words=50),
    Rule("symbol_ratio", "max_symbol_ratio", True, 1.0, 0.05, full_words=20),
    Rule("digit_ratio", "max_digit_ratio", True, 0.5, 0.05, full_words=20),
    Rule("alpha_word_ratio", "min_alpha_word_ratio", False, 0.25, 0.05, full_words=50),
    Rule("dup_line_fraction", "max_dup_line_fraction", True, 1.0, 0.05, min_lines=2, defect=True),
    Rule("dup_paragraph_fraction", "max_dup_paragraph_fraction", True, 1.0, 0.05, defect=True),
    Rule("top_ngram_fraction", "max_top_ngram_fraction", True, 1.0, 0.05, full_words=100, full_repeats=6),
    Rule("dup_ngram_fraction", "max_dup_ngram_fraction", True, 1.0, 0.05, full_words=100, full_repeats=3),
    Rule("line_punct_ratio", "min_line_punct_ratio", False, 1.0, 0.1, min_lines=3),
    Rule("boilerplate_fraction", "max_boilerplate_fraction", True, 1.0, 0.05, defect=True),
    Rule("stopwords", "min_stopwords", False, 1.0, 1.0, full_words=50),
    Rule("mojibake_ratio", "max_mojibake_ratio", True, 1.0, 0.01, defect=True),
)
HEURISTIC_TYPES = ("web", "general")  # source types the web heuristics apply to in full (the default)
BOUND_NAMES = tuple(dict.fromkeys(r.bound for r in RULES if r.bound != "min_words"))


@dataclass(frozen=True)
class Boilerplate:
    """Boilerplate lines: those containing one of `phrases`, or consisting of one of `lines`."""

    phrases: tuple[str, ...]
    lines: frozenset[str]

    @cached_property
    def _phrase_set(self) -> SubstringSet:
        return SubstringSet(self.phrases)

    def count(self, text: str, lines: list[str]) -> int:
        phrases = self._phrase_set.found(text.lower())  # most documents contain none
        count = 0
        for line in lines:
            line = line.lower()
            if line.strip(_LINE_SEPARATORS) in self.lines or (phrases and any(p in line for p in phrases)):
                count += 1
        return count


@dataclass(frozen=True)
class LanguageRules:
    """Everything the signals and rules need to know about one language."""

    code: str
    segmentation: str
    bounds: dict[str, float]
    stopwords: frozenset[str] | None
    chars_per_word: float
    boilerplate: Boilerplate

    @property
    def top_ngram(self) -> int:
        return 6 if self.segmentation == "char" else 3

    @property
    def dup_ngram(self) -> int:
        return 10 if self.segmentation == "char" else 5

    def ngram_length(self, signal: str) -> int:
        """Tokens in the n-grams of a repetition signal."""
        return self.top_ngram if signal == "top_ngram_fraction" else self.dup_ngram


@lru_cache(maxsize=1)
def _language_file() -> dict:
    return yaml_files.safe_load(LANGUAGE_RULES_PATH.read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def stopword_lists() -> dict[str, list[str]]:
    """Stop words by language code (quality's stop-word rule, language ID's common-word check):
    medbabel's small lists of function words (`stopwords` in quality_languages.yaml) where written,
    the maintained stopwords-iso lists for the other languages `maintained_stopwords` names; checked
    once. Read-only: callers share it."""
    lists = _language_file()["stopwords"]
    check_stopword_lists(lists, LANGUAGE_RULES_PATH)
    return {**maintained_stopword_lists(), **lists}


@lru_cache(maxsize=1)
def maintained_stopword_lists() -> dict[str, list[str]]:
    """The stopwords-iso lists (package `stopwordsiso`, offline) of the languages `maintained_stopwords`
    names, lower-cased like the segmented words they are matched against."""
    import stopwordsiso

    spec = _language_file()["maintained_stopwords"]
    missing = [code for code in spec["languages"] if not stopwordsiso.has_lang(str(code))]
    if missing:
        raise ValueError(
            f"{LANGUAGE_RULES_PATH}: maintained_stopwords: stopwordsiso has no list for {missing}"
        )
    return {str(code): stopwordsiso_list(str(code)) for code in spec["languages"]}


def stopwordsiso_list(code: str) -> list[str]:
    """The stopwords-iso list of `code`, lower-cased like the words it is matched against (empty when
    stopwords-iso has none)."""
    import stopwordsiso

    if not stopwordsiso.has_lang(code):
        return []
    return sorted({word.lower() for word in stopwordsiso.stopwords(code)})


def check_stopword_lists(lists: dict, path: Path) -> None:
    """Every stop word a string: unquoted `on`, `no`, `yes` or `off` are booleans to YAML, and such a
    word would silently never match."""
    for code, words in lists.items():
        for word in words:
            if not isinstance(word, str):
                raise ValueError(
                    f"{path}: stopwords.{code}: {word!r} is not a word (YAML reads unquoted on/off/yes/no "
                    f"as booleans: quote it)"
                )


def load_language_rules(registry, overrides: dict | None = None) -> dict[str, LanguageRules]:
    """Rules for every registry language (and "default", for a code outside the registry):
    defaults <- per-language file <- config overrides.

    `overrides` maps a language code or "default" to a mapping (or pydantic model) of bounds.
    """
    data = _language_file()
    overrides = {k: _as_dict(v) for k, v in (overrides or {}).items()}
    unknown = sorted(set(overrides) - {"default", *registry.languages})
    if unknown:
        raise ValueError(f"quality.rules: unknown language code(s) {unknown}")
    boilerplate = Boilerplate(
        tuple(p.lower() for p in data["boilerplate"]["phrases"]),
        frozenset(line.lower() for line in data["boilerplate"]["lines"]),
    )
    rules = {}
    stopwords = stopword_lists()
    segmentations = {code: language.segmentation for code, language in registry.languages.items()}
    for code, segmentation in {**segmentations, "default": "space"}.items():
        spec = dict(data["languages"].get(code) or {})
        bounds = {**data["default"], **{k: v for k, v in spec.items() if k in BOUND_NAMES}}
        bounds.update(overrides.get("default", {}))
        bounds.update(overrides.get(code, {}))
        words = stopwords.get(code)
        rules[code] = LanguageRules(
            code=code,
            segmentation=segmentation,
            bounds={k: float(v) for k, v in bounds.items()},
            stopwords=frozenset(words) if words else None,
            chars_per_word=float(spec.get("chars_per_word", 1.0)),
            boilerplate=boilerplate,
        )
    return rules


def _as_dict(value) -> dict[str, float]:
    if hasattr(value, "model_dump"):
        value = value.model_dump(exclude_none=True)
    return {k: v for k, v in dict(value).items() if v is not None}


def compute_signals(text: str, words: list[str], rules: LanguageRules) -> dict[str, float | None]:
    """The named signals of one document (`words` is its segmentation), plus its line count."""
    n_words = len(words)
    word_chars = list(map(len, words))
    total_word_chars = sum(word_chars)
    lines = [line.strip() for line in text.split("\n")]
    lines = [line for line in lines if line]
    n_non_space = len(text) - sum(map(text.count, " \t\n\r\u00a0\u3000"))
    top_fraction, repeats = _top_ngram_fraction(words, total_word_chars, rules.top_ngram)
    # an n-gram repeated at the longer dup length repeats its shorter prefix too (dup_ngram >= top_ngram)
    dup_fraction = (
        _dup_ngram_fraction(words, word_chars, total_word_chars, rules.dup_ngram) if repeats else 0.0
    )
    stop_count = None
    if rules.stopwords is not None:
        stop_count = sum(map(rules.stopwords.__contains__, words))
        if "’" in text or "'" in text:
            stop_count += _joined_stopwords(words, rules.stopwords)
    return {
        "n_lines": float(len(lines)),
        "n_words": float(n_words),
        "mean_word_length": total_word_chars / n_words if n_words else 0.0,
        "symbol_ratio": max(text.count("#"), text.count("...") + text.count("…")) / max(n_words, 1),
        "digit_ratio": len(_DIGIT.findall(text)) / max(n_non_space, 1),
        "alpha_word_ratio": _alpha_word_ratio(text, words, rules.segmentation),
        "dup_line_fraction": _duplicate_count(lines) / len(lines) if lines else 0.0,
        "dup_paragraph_fraction": _duplicate_paragraph_chars(text),
        "top_ngram_fraction": top_fraction,
        "dup_ngram_fraction": dup_fraction,
        "line_punct_ratio": sum(1 for line in lines if _ends_sentence(line)) / len(lines) if lines else 0.0,
        "boilerplate_fraction": rules.boilerplate.count(text, lines) / len(lines) if lines else 0.0,
        "stopword_ratio": None if stop_count is None else stop_count / max(n_words, 1),
        "mojibake_ratio": mojibake_ratio(text, n_words),
    }


MOJIBAKE_SAMPLE = 4000  # characters read: mojibake runs through a whole text, and the cost stays flat


# A UTF-8 lead byte read as Latin-1/cp1252 (Â..ï) followed by a continuation byte so read (U+0080..U+00BF
# or cp1252's € ‚ ƒ „ … † ‡ ˆ ‰ Š ‹ Œ Ž ‘ ’ “ ” • – — ˜ ™ š › œ ž Ÿ): a text without one has no such
# mojibake, and is not handed to ftfy's costlier scan (a few milliseconds per 4,000 characters).
_MOJIBAKE_HINT = re.compile(
    "[\u00c2-\u00ef][\u0080-\u00bf\u20ac\u201a\u0192\u201e\u2026\u2020\u2021\u02c6\u2030\u0160"
    "\u2039\u0152\u017d\u2018\u2019\u201c\u201d\u2022\u2013\u2014\u02dc\u2122\u0161\u203a\u0153"
    "\u017e\u0178]"
)


def mojibake_ratio(text: str, n_words: int) -> float:
    """Sequences that look like UTF-8 decoded in a legacy encoding (`ftfy.badness`: 'Ã©', 'â€™'...)
    per word, read from the first characters."""
    sample = text[:MOJIBAKE_SAMPLE]
    if sample.isascii() or not _MOJIBAKE_HINT.search(sample):
        return 0.0
    words = n_words if len(text) <= MOJIBAKE_SAMPLE else max(1, round(n_words * len(sample) / len(text)))
    return badness(sample) / max(words, 1)


def _joined_stopwords(words: list[str], stopwords: frozenset[str]) -> int:
    """Stop words written joined to the next word by an apostrophe, which the segmentation keeps in
    one token: Kinyarwanda's connectives (y’ubuzima, n’ibyago, by’ibanze), French or Italian elisions
    where the list has them. Counted by the token's head, unless the token is listed whole."""
    count = 0
    for word in words:
        if "’" in word or "'" in word:
            head = word.replace("'", "’").partition("’")[0]
            count += head in stopwords and word not in stopwords
    return count


def _alpha_word_ratio(text: str, words: list[str], segmentation: str) -> float:
    """Share of words holding a letter: whitespace-separated chunks (Gopher), or the segmented tokens
    where spaces do not separate words (there a chunk is a whole clause). A number is one chunk however
    its digits are grouped, and a no-break space joins what it stands between: "5 143 (27 %)" is two
    words without a letter, not four (French, Spanish and Russian statistics would otherwise fall
    under the bound for their spacing alone)."""
    if segmentation == "char":
        return sum(1 for w in words if w[0].isalpha()) / len(words) if words else 0.0
    if "\u00a0" in text or "\u202f" in text or "\u2007" in text or _SPACED_DIGITS.search(text):
        text = _WORD_INTERNAL_SPACE.sub("", text)
    n_chunks = len(text.split())
    return 1.0 - len(_NON_ALPHA_WORD.findall(text)) / n_chunks if n_chunks else 0.0


def _ends_sentence(line: str) -> bool:
    stripped = line.rstrip(_CLOSING)
    return bool(stripped) and stripped[-1] in _TERMINAL


def _duplicate_count(items: list[str]) -> int:
    """How many items repeat an earlier one."""
    return len(items) - len(set(items))


def _duplicate_paragraph_chars(text: str) -> float:
    paragraphs = [p.strip() for p in _PARAGRAPH_BREAK.split(text)]
    paragraphs = [p for p in paragraphs if p]
    total = sum(len(p) for p in paragraphs)
    seen: set[str] = set()
    duplicated = 0
    for p in paragraphs:
        if p in seen:
            duplicated += len(p)
        seen.add(p)
    return duplicated / total if total else 0.0


def _top_ngram_fraction(words: list[str], total: int, n: int) -> tuple[float, bool]:
    """Characters covered by the most frequent n-gram (when it occurs more than once), Gopher-style,
    and whether any n-gram repeats."""
    if len(words) < n or not total:
        return 0.0, False
    counts = Counter(zip(*(words[i:] for i in range(n)), strict=False))
    count = max(counts.values())
    if count < 2:
        return 0.0, False
    ngram = next(g for g, c in counts.items() if c == count)  # the first most frequent, as most_common(1)
    return count * sum(len(w) for w in ngram) / total, True


def _dup_ngram_fraction(words: list[str], word_chars: list[int], total: int, n: int) -> float:
    """Characters of words inside a repeated occurrence of an n-gram (first occurrences excluded)."""
    if len(words) < 2 * n or not total:
        return 0.0
    ngrams = list(zip(*(words[j:] for j in range(n)), strict=False))
    if len(set(ngrams)) == len(ngrams):
        return 0.0  # the common case, without a Python loop
    seen: set[tuple[str, ...]] = set()
    covered_until = 0  # words before this index are already counted
    duplicated = 0
    for i, ngram in enumerate(ngrams):
        if ngram in seen:
            start = max(i, covered_until)
            duplicated += sum(word_chars[start : i + n])
            covered_until = i + n
        else:
            seen.add(ngram)
    return duplicated / total


def rule_score(value: float, bound: float, upper: bool, margin: float, min_margin: float) -> float:
    """1 well inside the bound, 0.5 at it, 0 well beyond; linear in between."""
    width = max(abs(bound) * margin, min_margin)
    distance = (bound - value) if upper else (value - bound)
    return min(1.0, max(0.0, 0.5 + 0.5 * distance / width))


def confidence(rule: Rule, signals: dict[str, float | None], rules: LanguageRules, heuristics: bool) -> float:
    """How far `rule` may judge this text, in [0, 1]: 0 for a web heuristic on a curated source (the
    length bounds, set per source type, always judge), or a text too short (see `Rule`); otherwise the
    share of `full_words` the text has, at most 1, and for a repetition rule at most the share of the
    length at which its bound amounts to `full_repeats` n-grams (which loosens the bound, but never
    silences the rule: a short run of keyword spam still repeats far beyond it)."""
    if not (rule.defect or heuristics or rule.signal == "n_words"):  # lengths: set per source type
        return 0.0
    if signals.get("n_lines", 1) < rule.min_lines:
        return 0.0
    if not rule.full_words:
        return 1.0
    n_words = signals.get("n_words", 0)
    c = min(1.0, n_words / (rule.full_words * rules.chars_per_word))
    if c < MIN_CONFIDENCE:
        return 0.0
    bound = rules.bounds[rule.bound]
    if rule.full_repeats and bound > 0:
        c = min(c, n_words * bound / (rule.full_repeats * rules.ngram_length(rule.signal)))
    return c


def judged_bound(rule: Rule, bound: float, c: float, signals: dict[str, float | None]) -> float:
    """The bound a text is judged against: `bound` loosened by the rule's confidence `c` > 0 (an upper
    bound divided by it, a lower one multiplied by it), and for a mean by STANDARD_ERRORS standard
    errors of a natural text's mean (see `Rule`)."""
    loosened = bound / c if rule.upper else bound * c
    if rule.averaged:
        allowance = STANDARD_ERRORS * WORD_LENGTH_CV * bound / math.sqrt(max(signals["n_words"], 1.0))
        loosened = loosened + allowance if rule.upper else loosened - allowance
    return loosened


def score_rules(
    signals: dict[str, float | None], rules: LanguageRules, min_words: float, heuristics: bool = True
) -> dict[str, float]:
    """Score of every rule that judges this text, against its bound loosened by the rule's confidence
    (see `Rule`), keyed by signal name (the weakest rule per signal). `heuristics`: whether the web
    heuristics apply (web/general text) or only the defect rules."""
    values = dict(signals)
    if signals.get("stopword_ratio") is not None:
        values["stopwords"] = round(signals["stopword_ratio"] * signals["n_words"])
    bounds = {**rules.bounds, "min_words": min_words * rules.chars_per_word}
    scores: dict[str, float] = {}
    for rule in RULES:
        value = values.get(rule.signal)
        if value is None or rule.bound not in bounds:
            continue
        c = confidence(rule, signals, rules, heuristics)
        if not c:
            continue
        bound = judged_bound(rule, bounds[rule.bound], c, signals)
        score = rule_score(value, bound, rule.upper, rule.margin, rule.min_margin)
        name = "stopword_ratio" if rule.signal == "stopwords" else rule.signal
        scores[name] = min(score, scores.get(name, 1.0))
    return scores


def combine(
    rule_scores: dict[str, float], medical_score: float | None, medical_weight: float
) -> tuple[float, str]:
    """quality_score = weakest rule x (1 - w + w x medical_score); also returns the weakest component."""
    components = dict(rule_scores)
    if medical_score is not None and medical_weight > 0:
        components["medical_score"] = 1.0 - medical_weight + medical_weight * medical_score
    if not components:
        return 1.0, ""
    weakest = min(components, key=lambda k: (components[k], k))
    heuristic = min(rule_scores.values()) if rule_scores else 1.0
    score = heuristic * components.get("medical_score", 1.0)
    return score, weakest


@dataclass(frozen=True)
class Assessment:
    score: float
    weakest: str
    signals: dict[str, float | None]
    rule_scores: dict[str, float]  # the rules that judged the text (too short for the others)


def assess(
    text: str,
    words: list[str],
    rules: LanguageRules,
    min_words: float,
    medical_score: float | None = None,
    medical_weight: float = 0.0,
    heuristics: bool = True,
) -> Assessment:
    """Signals, rule scores and the combined score of one document; `heuristics`: whether the web
    heuristics judge it (web/general text) or only the defect rules (curated sources)."""
    signals = compute_signals(text, words, rules)
    signals["medical_score"] = medical_score
    rule_scores = score_rules(signals, rules, min_words, heuristics)
    score, weakest = combine(rule_scores, medical_score, medical_weight)
    return Assessment(score, weakest, signals, rule_scores)
