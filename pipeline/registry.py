"""The language registry: languages, expert schemes and language-ID labels from `lang_families.yaml`.

Everything that needs to know about a language asks this module, so adding a language or an expert
scheme is an edit to the YAML file, never to code. Loading validates the file strictly and fails
with a message naming the file and the offending key.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import yaml

from pipeline import yaml_files

DEFAULT_REGISTRY_PATH = Path(__file__).resolve().parent.parent / "lang_families.yaml"

TIERS = ("major", "minor")
SEGMENTATIONS = ("space", "char")
_LANGUAGE_KEYS = {"name", "scripts", "tier", "family", "lid_labels", "aliases", "segmentation"}
_TOP_KEYS = {"version", "languages", "schemes", "default_scheme", "confusable_groups", "lid_models"}
_SCHEME_KEYS = {"description", "experts"}
_EXPERT_KEYS = {"id", "name", "families", "languages"}
_LID_MODEL_KEYS = {"description", "label_prefix", "default_file", "labels", "look_alikes"}


class RegistryError(ValueError):
    """The registry file is malformed; the message names the file and the key."""


class UnknownLanguageError(ValueError):
    """A language code that the registry cannot map to one of its languages."""


class UnassignedLanguageError(ValueError):
    """A language that has no expert in the selected scheme."""


@dataclass(frozen=True)
class Language:
    code: str
    name: str
    scripts: tuple[str, ...]
    tier: str
    family: str
    lid_labels: dict[str, tuple[str, ...]]
    aliases: tuple[str, ...] = ()
    segmentation: str = "space"

    def lid_labels_for(self, model: str) -> tuple[str, ...]:
        return self.lid_labels.get(model, ())


@dataclass(frozen=True)
class Expert:
    id: int
    name: str
    languages: tuple[str, ...]


@dataclass(frozen=True)
class Scheme:
    name: str
    description: str
    experts: tuple[Expert, ...]

    @property
    def num_experts(self) -> int:
        return len(self.experts)

    @cached_property
    def _by_language(self) -> dict[str, Expert]:
        return {code: expert for expert in self.experts for code in expert.languages}

    def expert_for(self, language: str) -> Expert:
        try:
            return self._by_language[language]
        except KeyError:
            raise UnassignedLanguageError(
                f"language '{language}' has no expert in scheme '{self.name}' "
                f"(assigned: {', '.join(sorted(self._by_language))})"
            ) from None

    def has(self, language: str) -> bool:
        return language in self._by_language


@dataclass(frozen=True)
class LidModel:
    name: str
    description: str
    label_prefix: str
    default_file: str
    # registry code -> labels outside the registry that the model gives to that language's texts (a close
    # relative: Cebuano read as Tagalog; or, for a language it lacks, a stand-in: Hausa read as Finnish):
    # agreement, never evidence against it
    look_alikes: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def resolve_default_file(self) -> Path:
        """`package:<pkg>/<path>` points inside an installed package; anything else is a path."""
        if self.default_file.startswith("package:"):
            package, _, inner = self.default_file[len("package:") :].partition("/")
            spec = importlib.util.find_spec(package)
            if spec is None or not spec.submodule_search_locations:
                raise FileNotFoundError(f"package '{package}' (for lid model '{self.name}') is not installed")
            return Path(list(spec.submodule_search_locations)[0]) / inner
        return Path(self.default_file)


@dataclass
class Registry:
    path: Path
    languages: dict[str, Language]
    schemes: dict[str, Scheme]
    default_scheme: str
    confusable_groups: tuple[frozenset[str], ...]
    lid_models: dict[str, LidModel]
    _alias_index: dict[str, str] = field(default_factory=dict, repr=False)
    _confusable_sets: dict[str, frozenset[str]] = field(default_factory=dict, repr=False, compare=False)

    # ---- languages -------------------------------------------------------------------------
    @property
    def codes(self) -> list[str]:
        return list(self.languages)

    def major(self) -> list[str]:
        return [c for c, lang in self.languages.items() if lang.tier == "major"]

    def minor(self) -> list[str]:
        return [c for c, lang in self.languages.items() if lang.tier == "minor"]

    def get(self, code: str) -> Language:
        try:
            return self.languages[code]
        except KeyError:
            raise UnknownLanguageError(f"unknown language code '{code}' (not in {self.path.name})") from None

    def normalize_code(self, raw: str) -> str:
        """Map a code as found in the wild (`EN`, `en-US`, `zh-Hans`, `eng`) to a registry code.

        Exact codes and aliases match case-insensitively; otherwise the primary subtag of a BCP-47
        tag is tried. Raises UnknownLanguageError when nothing matches unambiguously.
        """
        key = str(raw).strip().lower().replace("_", "-")
        if not key:
            raise UnknownLanguageError("empty language code")
        if key in self._alias_index:
            return self._alias_index[key]
        primary = key.split("-", 1)[0]
        if primary != key and primary in self._alias_index:
            return self._alias_index[primary]
        raise UnknownLanguageError(f"unknown language code '{raw}' (not in {self.path.name})")

    # ---- schemes and language ID --------------------------------------------------------------
    def resolve_scheme(
        self, configured: str | None, shards_scheme: str | None = None, shards_dir: Path | None = None
    ) -> Scheme:
        """The run's expert scheme, decided here and nowhere else: the config's `registry.scheme`, else
        the scheme the shards were tagged with (once there are shards), else `default_scheme`. A
        configured scheme other than the shards' is an error: the experts would learn wrong labels."""
        scheme = self.scheme(configured or shards_scheme)
        if shards_scheme is not None and scheme.name != shards_scheme:
            raise RegistryError(
                f"{shards_dir or 'shards'}: shards were tagged with expert scheme '{shards_scheme}' "
                f"but the run is configured for '{scheme.name}'"
            )
        return scheme

    def scheme(self, name: str | None = None) -> Scheme:
        name = name or self.default_scheme
        try:
            return self.schemes[name]
        except KeyError:
            raise RegistryError(
                f"unknown expert scheme '{name}'; {self.path.name} defines: {', '.join(self.schemes)}"
            ) from None

    def confusable(self, a: str, b: str) -> bool:
        return b in self.confusable_with(a)

    def confusable_with(self, code: str) -> frozenset[str]:
        """`code` and every language a confusable group puts with it (looked up per record by
        language ID, so computed once per code)."""
        group = self._confusable_sets.get(code)
        if group is None:
            group = frozenset({code}.union(*(g for g in self.confusable_groups if code in g)))
            self._confusable_sets[code] = group
        return group

    def lid_label_map(self, model: str) -> dict[str, str]:
        """fastText label (without prefix) -> registry code, for one language-ID model."""
        if model not in self.lid_models:
            raise RegistryError(
                f"unknown lid model '{model}'; {self.path.name} defines: {', '.join(self.lid_models)}"
            )
        return {label: code for code, lang in self.languages.items() for label in lang.lid_labels_for(model)}

    def lid_look_alikes(self, model: str, code: str) -> tuple[str, ...]:
        """Labels of `model` outside the registry that it gives to `code`'s texts (`lid_models.<model>.look_alikes`)."""
        spec = self.lid_models.get(model)
        return spec.look_alikes.get(code, ()) if spec else ()

    def languages_without_lid(self, model: str) -> list[str]:
        return [c for c, lang in self.languages.items() if not lang.lid_labels_for(model)]

    def content_hash(self) -> str:
        import hashlib

        return hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]


def load_registry(path: str | Path | None = None) -> Registry:
    path = Path(path) if path else DEFAULT_REGISTRY_PATH
    if not path.is_file():
        raise RegistryError(f"{path}: language registry file not found")
    try:
        raw = yaml_files.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RegistryError(f"{path}: not valid YAML: {exc}") from None
    return _build(path, raw)


def _fail(path: Path, where: str, why: str) -> RegistryError:
    return RegistryError(f"{path.name}: {where}: {why}")


def _check_keys(path: Path, where: str, obj: object, allowed: set[str], required: set[str]) -> dict:
    if not isinstance(obj, dict):
        raise _fail(path, where, f"expected a mapping, got {type(obj).__name__}")
    unknown = set(obj) - allowed
    if unknown:
        raise _fail(path, where, f"unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    missing = required - set(obj)
    if missing:
        raise _fail(path, where, f"missing key(s) {sorted(missing)}")
    return obj


def _str_list(path: Path, where: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _fail(path, where, "expected a list of non-empty strings")
    return tuple(value)


def _build(path: Path, raw: object) -> Registry:
    top = _check_keys(path, "top level", raw, _TOP_KEYS, {"languages", "schemes", "default_scheme"})
    lid_models = {}
    model_level_labels: dict[str, dict[str, object]] = {}
    for name, spec in (top.get("lid_models") or {}).items():
        spec = _check_keys(
            path, f"lid_models.{name}", spec, _LID_MODEL_KEYS, {"label_prefix", "default_file"}
        )
        look_alikes = spec.get("look_alikes") or {}
        if not isinstance(look_alikes, dict):
            raise _fail(
                path,
                f"lid_models.{name}.look_alikes",
                "expected a mapping of language code -> list of labels",
            )
        lid_models[name] = LidModel(
            name,
            spec.get("description", ""),
            spec["label_prefix"],
            spec["default_file"],
            {
                str(code): _str_list(path, f"lid_models.{name}.look_alikes.{code}", labels)
                for code, labels in look_alikes.items()
            },
        )
        # a model's labels may be listed with the model (language code -> labels) instead of per language
        model_labels = spec.get("labels") or {}
        if not isinstance(model_labels, dict):
            raise _fail(
                path, f"lid_models.{name}.labels", "expected a mapping of language code -> list of labels"
            )
        for code, labels in model_labels.items():
            model_level_labels.setdefault(str(code), {})[name] = labels

    languages: dict[str, Language] = {}
    alias_index: dict[str, str] = {}
    lid_owner: dict[tuple[str, str], str] = {}
    raw_langs = top["languages"]
    if not isinstance(raw_langs, dict) or not raw_langs:
        raise _fail(path, "languages", "expected a non-empty mapping of code -> language")
    for code, spec in raw_langs.items():
        code = str(code)
        where = f"languages.{code}"
        spec = _check_keys(
            path, where, spec, _LANGUAGE_KEYS, {"name", "scripts", "tier", "family", "lid_labels"}
        )
        if spec["tier"] not in TIERS:
            raise _fail(path, f"{where}.tier", f"must be one of {TIERS}, got '{spec['tier']}'")
        segmentation = spec.get("segmentation", "space")
        if segmentation not in SEGMENTATIONS:
            raise _fail(path, f"{where}.segmentation", f"must be one of {SEGMENTATIONS}")
        labels = spec["lid_labels"]
        if not isinstance(labels, dict):
            raise _fail(path, f"{where}.lid_labels", "expected a mapping of lid model -> list of labels")
        for model in model_level_labels.get(code, {}):
            if model in labels:
                raise _fail(path, f"{where}.lid_labels.{model}", f"also listed in lid_models.{model}.labels")
        labels = {**labels, **model_level_labels.get(code, {})}
        lid_labels = {}
        for model, model_labels in labels.items():
            if model not in lid_models:
                raise _fail(
                    path, f"{where}.lid_labels.{model}", f"unknown lid model (defined: {list(lid_models)})"
                )
            lid_labels[model] = (
                tuple(model_labels)
                if model_labels == []
                else _str_list(path, f"{where}.lid_labels.{model}", model_labels)
            )
            for label in lid_labels[model]:
                if (model, label) in lid_owner:
                    raise _fail(
                        path,
                        f"{where}.lid_labels.{model}",
                        f"label '{label}' already belongs to '{lid_owner[(model, label)]}'",
                    )
                lid_owner[(model, label)] = code
        aliases = _str_list(path, f"{where}.aliases", spec.get("aliases", [])) if spec.get("aliases") else ()
        for key in (code, *aliases):
            key = key.lower()
            if key in alias_index:
                raise _fail(
                    path, where, f"duplicate code or alias '{key}' (already used by '{alias_index[key]}')"
                )
            alias_index[key] = code
        languages[code] = Language(
            code=code,
            name=str(spec["name"]),
            scripts=_str_list(path, f"{where}.scripts", spec["scripts"]),
            tier=spec["tier"],
            family=str(spec["family"]),
            lid_labels=lid_labels,
            aliases=aliases,
            segmentation=segmentation,
        )

    for model in lid_models.values():
        for code, labels in model.look_alikes.items():
            if code not in languages:
                raise _fail(path, f"lid_models.{model.name}.look_alikes", f"unknown language '{code}'")
            # a look-alike added to the registry is a language of its own: confusable_groups decide
            model.look_alikes[code] = tuple(label for label in labels if (model.name, label) not in lid_owner)
    for code in model_level_labels:
        if code not in languages:
            models = ", ".join(model_level_labels[code])
            raise _fail(path, f"lid_models.{models}.labels", f"unknown language '{code}'")

    families = {lang.family for lang in languages.values()}
    schemes: dict[str, Scheme] = {}
    raw_schemes = top["schemes"]
    if not isinstance(raw_schemes, dict) or not raw_schemes:
        raise _fail(path, "schemes", "expected a non-empty mapping of scheme name -> scheme")
    for scheme_name, spec in raw_schemes.items():
        where = f"schemes.{scheme_name}"
        spec = _check_keys(path, where, spec, _SCHEME_KEYS, {"experts"})
        if not isinstance(spec["experts"], list) or not spec["experts"]:
            raise _fail(path, f"{where}.experts", "expected a non-empty list")
        experts: list[Expert] = []
        owner: dict[str, str] = {}
        for i, expert in enumerate(spec["experts"]):
            ewhere = f"{where}.experts[{i}]"
            expert = _check_keys(path, ewhere, expert, _EXPERT_KEYS, {"id", "name"})
            if ("families" in expert) == ("languages" in expert):
                raise _fail(path, ewhere, "give exactly one of 'families' or 'languages'")
            if "families" in expert:
                fams = _str_list(path, f"{ewhere}.families", expert["families"])
                for fam in fams:
                    if fam not in families:
                        raise _fail(path, f"{ewhere}.families", f"no language has family '{fam}'")
                codes = tuple(c for c, lang in languages.items() if lang.family in fams)
            else:
                codes = _str_list(path, f"{ewhere}.languages", expert["languages"])
                for c in codes:
                    if c not in languages:
                        raise _fail(path, f"{ewhere}.languages", f"unknown language '{c}'")
            for c in codes:
                if c in owner:
                    raise _fail(
                        path, where, f"language '{c}' is in two experts ('{owner[c]}' and '{expert['name']}')"
                    )
                owner[c] = str(expert["name"])
            if not isinstance(expert["id"], int):
                raise _fail(path, f"{ewhere}.id", "expert id must be an integer")
            experts.append(Expert(expert["id"], str(expert["name"]), codes))
        ids = sorted(e.id for e in experts)
        if ids != list(range(len(experts))):
            missing = sorted(set(range(len(experts))) - set(ids))
            raise _fail(
                path, where, f"expert ids must be exactly 0..{len(experts) - 1}; missing {missing}, got {ids}"
            )
        experts.sort(key=lambda e: e.id)
        schemes[scheme_name] = Scheme(scheme_name, str(spec.get("description", "")), tuple(experts))

    default_scheme = top["default_scheme"]
    if default_scheme not in schemes:
        raise _fail(path, "default_scheme", f"'{default_scheme}' is not a defined scheme")

    groups = []
    for i, group in enumerate(top.get("confusable_groups") or []):
        codes = _str_list(path, f"confusable_groups[{i}]", [str(c) for c in group])
        for c in codes:
            if c not in languages:
                raise _fail(path, f"confusable_groups[{i}]", f"unknown language '{c}'")
        groups.append(frozenset(codes))

    return Registry(path, languages, schemes, default_scheme, tuple(groups), lid_models, alias_index)
