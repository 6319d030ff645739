"""Language ID: fill `lid_language` / `lid_score` and verify each record's declared language.

fastText (lid.176 by default, any fastText LID model through `langid.model` / `langid.model_path`)
predicts the top-k languages of a batch of texts at once, one model load per worker. Verification
rules live in `pipeline.text.lid_verify`; records that fail go to the quarantine as `wrong_language` or
`wrong_script` with a detail such as `declared sw, detected en (0.97)`. Exam and dialogue rows are
identified on their own words (question and options, turn contents), not the rendered template.
"""

from __future__ import annotations

import dataclasses

from datatrove.data import Document

from pipeline.config import LangIdSection
from pipeline.dag import StageContext
from pipeline.record_io import RecordFilter, RecordWriter, Rejection
from pipeline.registry import Registry
from pipeline.text.lid_verify import LanguageVerifier, LidThresholds
from pipeline.text.normalize import content_text

# The config's names of two thresholds; every other `LidThresholds` setting the config has is named alike.
_CONFIG_NAMES = {"default": "default_threshold", "contradiction": "contradiction_threshold"}


def make_verifier(cfg: LangIdSection, registry: Registry, resolve=lambda p: p) -> LanguageVerifier:
    """The verifier the config describes (the model file is opened lazily, once per process)."""
    settings = {
        field.name: getattr(cfg, _CONFIG_NAMES.get(field.name, field.name))
        for field in dataclasses.fields(LidThresholds)
        if field.name != "per_language" and hasattr(cfg, _CONFIG_NAMES.get(field.name, field.name))
    }
    thresholds = LidThresholds.for_model(cfg.model, cfg.thresholds, **settings)
    model_path = resolve(cfg.model_path) if cfg.model_path else None
    return LanguageVerifier(
        registry, cfg.model, model_path, thresholds, k=cfg.top_k, second_opinion=cfg.second_opinion == "cld2"
    )


class LanguageIdFilter(RecordFilter):
    """Predicts languages a batch at a time and sets aside records whose declared language fails."""

    name = "🌍 language ID"

    def __init__(self, verifier: LanguageVerifier, quarantine_dir, stage: str, batch_size: int = 512):
        super().__init__(quarantine_dir, stage)
        self.verifier = verifier
        self.batch_size = batch_size

    def check_batch(self, docs: list[Document]) -> list[Rejection | None]:
        languages = self.verifier.registry.languages
        known = [d for d in docs if d.metadata["language"] in languages]
        verdicts = iter(
            self.verifier.verify_batch(
                [content_text(d.text, d.metadata.get("messages"), d.metadata.get("exam")) for d in known],
                [d.metadata["language"] for d in known],
            )
        )
        out: list[Rejection | None] = []
        for doc in docs:
            if doc.metadata["language"] not in languages:  # a language the registry lacks cannot be verified
                out.append(
                    Rejection(
                        "unknown_language", f"language {doc.metadata['language']!r} is not in the registry"
                    )
                )
                continue
            verdict = next(verdicts)
            doc.metadata["lid_language"] = verdict.lid_language
            doc.metadata["lid_score"] = verdict.lid_score
            out.append(None if verdict.keep else Rejection(verdict.reason, verdict.detail))
        return out


def run(ctx: StageContext) -> dict:
    cfg = ctx.cfg.langid
    verifier = make_verifier(cfg, ctx.registry, ctx.cfg.resolve)
    ctx.run_pipeline(
        [
            *ctx.input_readers(),
            LanguageIdFilter(verifier, ctx.quarantine_dir, ctx.name, cfg.batch_size),
            RecordWriter(ctx.output_dir),
        ]
    )
    return {
        "langid": {
            "model": cfg.model,
            "model_path": str(verifier.identifier.model_path),
            "languages_without_model_labels": ctx.registry.languages_without_lid(cfg.model),
        }
    }
