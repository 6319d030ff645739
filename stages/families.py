"""Family tagging: `family` (expert name), `expert_id` and `tier` from the registry's expert scheme.

A language with no expert in the configured scheme stops the stage before any work, naming the
language and the scheme (`families.on_unassigned: error`, the default), or its records are
quarantined as `unassigned_language` (`on_unassigned: quarantine`).
"""

from __future__ import annotations

from collections import Counter

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from pipeline.dag import StageContext
from pipeline.record_io import RecordFilter, RecordWriter, Rejection, list_parquet, read_table
from pipeline.registry import Registry, Scheme, UnassignedLanguageError


class UnassignedLanguageFilter(RecordFilter):
    """Sets aside records whose language has no expert in the scheme."""

    name = "🚫 unassigned language"

    def __init__(self, quarantine_dir, stage: str, scheme: Scheme):
        super().__init__(quarantine_dir, stage)
        self.scheme = scheme

    def check(self, doc: Document) -> Rejection | None:
        language = doc.metadata["language"]
        if self.scheme.has(language):
            return None
        return Rejection(
            "unassigned_language", f"language '{language}' has no expert in scheme '{self.scheme.name}'"
        )


class FamilyTagger(PipelineStep):
    """Fills family, expert_id and tier; refuses (raises) a language the scheme does not assign."""

    name = "🏷️ family tagger"
    type = "✂️ - FORMAT"

    def __init__(self, registry: Registry, scheme: Scheme):
        super().__init__()
        self.registry = registry
        self.scheme = scheme

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        tagged: Counter[str] = Counter()
        for doc in data:
            language = doc.metadata["language"]
            expert = self.scheme.expert_for(language)
            doc.metadata["family"] = expert.name
            doc.metadata["expert_id"] = expert.id
            doc.metadata["tier"] = self.registry.get(language).tier
            tagged[expert.name] += 1
            yield doc
        for family, n in sorted(tagged.items()):
            self.stat_update(f"family/{family}", value=n)


def unassigned_languages(ctx: StageContext, scheme: Scheme) -> Counter:
    """Record counts of the input's languages that the scheme leaves without an expert."""
    counts: Counter = Counter()
    for directory in ctx.input_dirs():
        for path in list_parquet(directory):
            for language, n in Counter(
                read_table(path, columns=["language"])["language"].to_pylist()
            ).items():
                if not scheme.has(language):
                    counts[language] += n
    return counts


def run(ctx: StageContext) -> dict:
    scheme = ctx.registry.resolve_scheme(ctx.cfg.registry.scheme)
    unassigned = unassigned_languages(ctx, scheme)
    quarantine = ctx.cfg.families.on_unassigned == "quarantine"
    if unassigned and not quarantine:
        listed = ", ".join(f"'{code}' ({n} records)" for code, n in sorted(unassigned.items()))
        raise UnassignedLanguageError(
            f"language(s) {listed} have no expert in scheme '{scheme.name}'. Choose another scheme "
            f"(registry.scheme), add them to an expert in {ctx.registry.path.name}, or set "
            f"families.on_unassigned: quarantine to set these records aside."
        )
    steps = ctx.input_readers()
    if not steps:
        return {"scheme": scheme.name, "docs_per_family": {}}
    if unassigned:
        steps.append(UnassignedLanguageFilter(ctx.quarantine_dir, ctx.name, scheme))
    steps += [FamilyTagger(ctx.registry, scheme), RecordWriter(ctx.output_dir)]
    ctx.run_pipeline(steps)
    families = {
        key.split("/", 1)[1]: int(value) for key, value in ctx.counters().items() if key.startswith("family/")
    }
    return {"scheme": scheme.name, "docs_per_family": dict(sorted(families.items()))}
