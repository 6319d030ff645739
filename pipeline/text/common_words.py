"""Common words: a language's stop-word list as evidence of the language a text is in.

Language ID (`pipeline.text.lid_verify`) and the translation checks read a text's first words against
the stop-word lists (`pipeline.text.quality_signals.stopword_lists`): a text that holds many of its
declared language's common words reads as that language whatever the model says; one that holds none,
or mostly another group's, reads as another.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from functools import lru_cache
from itertools import chain
from typing import TYPE_CHECKING

from pipeline.registry import Registry
from pipeline.text.quality_signals import stopword_lists, stopwordsiso_list

if TYPE_CHECKING:
    from pipeline.text.lid_verify import LidThresholds

# The common-word check reads the first characters of a text (a paragraph's worth: enough words to
# judge, and a cost that does not grow with the document) and splits them into runs of word characters
# with the standard library's `re`: faster than the full Unicode segmentation (`pipeline.text.segment`),
# and it splits off the connectives that Kinyarwanda and Igbo join with an apostrophe (y’ubuzima,
# n’ibyo), which are among their commonest words. (`\w` stops at the combining vowel signs of scripts
# such as Devanagari, so the Hindi list never matches here; every listed language the model lacks is
# written in Latin script, and a Devanagari text declared as one fails the script check first.)
COMMON_WORDS_PREFIX = 600
_LIST_WORD = re.compile(r"\w+")


@lru_cache(maxsize=4)  # one text's words serve the several common-word checks of its verdict
def _list_words(text: str) -> tuple[str, ...]:
    return tuple(_LIST_WORD.findall(text[:COMMON_WORDS_PREFIX].lower()))


NOT_JOINED = frozenset({"en"})  # see `CommonWords.shipped`


class CommonWords:
    """Stop-word lists indexed by word, so counting a text's common words of every listed language is
    one dictionary lookup per word."""

    def __init__(self, lists: Mapping[str, Iterable[str]]):
        index: dict[str, list[str]] = defaultdict(list)
        for code, words in lists.items():
            for word in set(words):
                index[word].append(code)
        self.index = {word: tuple(codes) for word, codes in index.items()}
        self.codes = frozenset(lists)
        self._distinctive: dict[int, dict[str, tuple[str, ...]]] = {}

    @classmethod
    def shipped(cls) -> CommonWords:
        """The stop-word lists (`pipeline.text.quality_signals.stopword_lists`), each of medbabel's
        small hand-written lists joined with the language's stopwords-iso list where it has one: a
        yes/no question such as "Оланзапин способен понижать температуру? да нет" holds none of the 36
        Russian words quality counts, and reads as Bulgarian. Not English: its stopwords-iso list
        (1,298 words) holds the short function words of other languages (`na`, `sa`, `ni`, `mu`)."""
        return cls(
            {
                code: [*words, *(() if code in NOT_JOINED else stopwordsiso_list(code))]
                for code, words in stopword_lists().items()
            }
        )

    def distinctive(self, registry: Registry) -> dict[str, tuple[str, ...]]:
        """The words on the lists of one confusable group only (the lists of related languages share
        their shortest words: `je`, `na`, `и`), word -> those languages."""
        cached = self._distinctive.get(id(registry))
        if cached is None:
            cached = {
                word: codes
                for word, codes in self.index.items()
                if len({min(registry.confusable_with(code)) for code in codes}) == 1
            }
            self._distinctive[id(registry)] = cached
        return cached

    def counts(self, words: Iterable[str]) -> Counter[str]:
        """How many of `words` are on each language's list."""
        return Counter(chain.from_iterable(filter(None, map(self.index.get, words))))


def common_word_shares(text: str, common_words: CommonWords, min_words: int) -> dict[str, float] | None:
    """Share of `text`'s words (in its first characters) on each listed language's list; None when it
    has fewer than `min_words` words."""
    words = _list_words(text)
    if len(words) < min_words:
        return None
    return {code: n / len(words) for code, n in common_words.counts(words).items()}


def common_word_contradiction(
    text: str, declared: str, common_words: CommonWords, thresholds: LidThresholds
) -> str | None:
    """Why `text` does not read as `declared` by its common words, or None (no list, too few words, or
    it reads as `declared`)."""
    if declared not in common_words.codes:
        return None
    shares = common_word_shares(text, common_words, thresholds.min_words_for_common_words)
    if shares is None:
        return None
    share = shares.get(declared, 0.0)
    if share < thresholds.min_common_word_share:
        return f"declared {declared}, {share:.0%} of the words are common {declared} words"
    rival, rival_share = max(
        ((code, s) for code, s in shares.items() if code != declared),
        key=lambda item: item[1],
        default=(None, 0.0),
    )
    if rival is not None and rival_share >= share + thresholds.common_word_margin:
        return f"declared {declared}, reads more like {rival}: {rival_share:.0%} common {rival} words, {share:.0%} {declared}"
    return None


# Scripts whose words `_list_words` finds whole (no combining marks inside words), where a text without
# a single common word of its declared language is evidence against it.
WHOLE_WORD_SCRIPTS = frozenset({"Latn", "Cyrl", "Grek"})


def reads_as_other(
    text: str,
    group: frozenset[str],
    registry: Registry,
    common_words: CommonWords | None,
    thresholds: LidThresholds,
) -> str | None:
    """The listed language outside `group` that `text` reads as by the words only its group's lists
    hold, when at least `other_min_hits` of them make `other_min_share` of the words and not one such
    word is the declared group's; else None."""
    if common_words is None:
        return None
    words = _list_words(text)
    if len(words) < thresholds.other_min_hits:
        return None
    distinctive = common_words.distinctive(registry)
    hits: Counter[str] = Counter(chain.from_iterable(filter(None, map(distinctive.get, words))))
    if not hits or any(code in group for code in hits):
        return None
    other, n = hits.most_common(1)[0]
    if n >= thresholds.other_min_hits and n / len(words) >= thresholds.other_min_share:
        return other
    return None


def has_common_word(text: str, code: str, registry: Registry, common_words: CommonWords | None) -> bool:
    """Whether `text` has a word of `code`'s common-word list, or cannot be told (no list, or a script
    whose words `_list_words` does not find whole): a short text without one word of English's list
    is not English, whatever the model says."""
    if common_words is None or code not in common_words.codes:
        return True
    if not set(registry.get(code).scripts) <= WHOLE_WORD_SCRIPTS:
        return True
    return common_words.counts(_list_words(text)).get(code, 0) > 0


def common_word_support(
    text: str, declared: str, common_words: CommonWords | None, thresholds: LidThresholds
) -> tuple[bool, bool]:
    """(the text reads as `declared` by its common words, the text has none of them among enough
    words to tell): both False without a list, or with too few words."""
    if common_words is None or declared not in common_words.codes:
        return False, False
    shares = common_word_shares(text, common_words, min(3, thresholds.short_min_words))
    if shares is None:
        return False, False
    share = shares.get(declared, 0.0)
    rival = max((s for code, s in shares.items() if code != declared), default=0.0)
    supported = share >= thresholds.common_word_support and share >= rival
    n_words = len(_list_words(text))
    return supported, share == 0.0 and n_words >= thresholds.short_min_words
