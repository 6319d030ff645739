"""fastText language identification mapped onto registry codes (lid.176 by default, any model by config).

One model load per process; predictions are batched.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from pipeline.registry import Registry

# Whitespace that fastText does not split words on (it splits on space, \t, \v, \f, \r and \0):
# the newline, which would end its input line, and the other characters `str.split` splits on
# (NBSP and the Unicode spaces; tests/test_langid.py checks the list against `str.isspace`).
FASTTEXT_FOREIGN_SPACES = "\n\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_SEPARATORS = re.compile(f"[{FASTTEXT_FOREIGN_SPACES}]")


class LidPrediction(NamedTuple):  # a tuple: built k times per document
    language: str | None  # registry code, None when the label is not a registry language
    label: str  # the model's own label, e.g. "en", "eng_Latn"
    score: float


_new_prediction = tuple.__new__  # LidPrediction(...) without its Python-level __new__: k per document


@lru_cache(maxsize=2)
def _load_fasttext(path: str):
    import fasttext

    fasttext.FastText.eprint = lambda *args, **kwargs: None  # silence the load_model deprecation banner
    return fasttext.load_model(path)


class LanguageIdentifier:
    def __init__(self, registry: Registry, model: str = "lid176", model_path: str | Path | None = None):
        self.registry = registry
        self.model_name = model
        spec = registry.lid_models.get(model)
        if spec is None:
            raise ValueError(
                f"unknown lid model '{model}' (registry defines: {', '.join(registry.lid_models)})"
            )
        self.model_path = Path(model_path) if model_path else spec.resolve_default_file()
        if not self.model_path.is_file():
            raise FileNotFoundError(f"language-ID model file not found: {self.model_path}")
        self.prefix = spec.label_prefix
        self.label_map = registry.lid_label_map(model)
        self._decoded: dict[str, tuple[str | None, str]] | None = None

    @property
    def model(self):
        return _load_fasttext(str(self.model_path))

    def covers(self, language: str) -> bool:
        return bool(self.registry.get(language).lid_labels_for(self.model_name))

    def predict(self, texts: list[str], k: int = 1) -> list[list[LidPrediction]]:
        """Top-k predictions per text (fastText needs single-line input, so newlines become spaces)."""
        lines = [_SEPARATORS.sub(" ", t) for t in texts]
        labels, scores = self.model.predict(lines, k=k)
        decoded = self._decoded_labels()
        return [
            [
                _new_prediction(LidPrediction, (*decoded[label], score if score < 1.0 else 1.0))
                for label, score in zip(text_labels, text_scores.tolist(), strict=True)
            ]
            for text_labels, text_scores in zip(labels, scores, strict=True)
        ]

    def _decoded_labels(self) -> dict[str, tuple[str | None, str]]:
        """Every model label -> (registry code or None, label without its prefix), computed once."""
        if self._decoded is None:
            decoded = {}
            for label in self.model.get_labels():
                raw = label[len(self.prefix) :] if label.startswith(self.prefix) else label
                decoded[label] = (self.label_map.get(raw), raw)
            self._decoded = decoded
        return self._decoded
