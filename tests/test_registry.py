from pathlib import Path

import pytest
import yaml

from pipeline.registry import (
    DEFAULT_REGISTRY_PATH,
    RegistryError,
    UnassignedLanguageError,
    UnknownLanguageError,
    load_registry,
)

MAJOR = "en zh fr es ar hi de pt ru ja ko it".split()
MINOR = "ne th vi lo mg ceb su ilo doi hr gl cs co la uk bs bg eo mai sq da sa no gn sr sk gd lb ckb mt he ln bm sw nso ig rw ha".split()
FAMILY7 = {
    0: ("sino_tibetan", {"zh"}),
    1: ("altaic", {"ko", "ja", "ne"}),
    2: ("australasian", {"th", "vi", "lo"}),
    3: ("austronesian", {"mg", "ceb", "su", "ilo", "doi"}),
    4: (
        "indo_european",
        set("en de pt es fr ru hi it hr gl cs co lb la uk bs bg eo mai sr sq sk da sa no gn gd".split()),
    ),
    5: ("afro_asiatic", {"ar", "ckb", "mt", "he"}),
    6: ("kongolese", {"ln", "bm", "sw", "nso", "ig", "rw", "ha"}),
}


def test_fifty_languages_with_tiers(registry):
    assert sorted(registry.major()) == sorted(MAJOR)
    assert sorted(registry.minor()) == sorted(MINOR)
    assert len(registry.languages) == 50


def test_family7_is_the_papers_grouping(registry):
    scheme = registry.scheme("family7")
    assert registry.scheme().name == "family7"  # the default
    assert {e.id: (e.name, set(e.languages)) for e in scheme.experts} == FAMILY7
    assert scheme.expert_for("ne").name == "altaic"
    assert scheme.expert_for("doi").id == 3


def test_major12_is_alphabetical_and_rejects_minor(registry):
    scheme = registry.scheme("major12")
    assert [e.languages[0] for e in scheme.experts] == sorted(MAJOR)
    assert scheme.expert_for("ar").id == 0 and scheme.expert_for("zh").id == 11
    with pytest.raises(UnassignedLanguageError, match="'sw' has no expert in scheme 'major12'"):
        scheme.expert_for("sw")


def test_lid176_lacks_exactly_seven(registry):
    assert sorted(registry.languages_without_lid("lid176")) == sorted("ln bm nso ig rw ha doi".split())
    labels = registry.lid_label_map("lid176")
    assert labels["en"] == "en" and labels["nn"] == "no" and labels["wuu"] == "zh"


def test_scripts_and_segmentation(registry):
    assert registry.get("ckb").scripts == ("Arab",)
    assert registry.get("he").scripts == ("Hebr",)
    assert {c for c, lang in registry.languages.items() if lang.segmentation == "char"} == {
        "zh",
        "ja",
        "th",
        "lo",
    }


def test_confusable_groups(registry):
    assert (
        registry.confusable("bs", "sr")
        and registry.confusable("hi", "mai")
        and registry.confusable("da", "no")
    )
    assert not registry.confusable("en", "fr")
    assert {"bs", "sr"} <= registry.confusable_with("bs") and "en" not in registry.confusable_with("bs")
    assert registry.confusable_with("en") == {"en"}
    for code in registry.codes:  # the cached sets say what `confusable` says
        assert registry.confusable_with(code) == {c for c in registry.codes if registry.confusable(code, c)}


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("EN", "en"),
        ("en-US", "en"),
        ("zh-Hans", "zh"),
        ("zh_TW", "zh"),
        ("eng", "en"),
        ("nb", "no"),
        ("iw", "he"),
    ],
)
def test_normalize_code(registry, raw, code):
    assert registry.normalize_code(raw) == code


@pytest.mark.parametrize("raw", ["xx", "", "klingon", "ku"])
def test_normalize_unknown(registry, raw):
    with pytest.raises(UnknownLanguageError):
        registry.normalize_code(raw)


def _mutated(tmp_path: Path, mutate) -> Path:
    data = yaml.safe_load(DEFAULT_REGISTRY_PATH.read_text())
    mutate(data)
    path = tmp_path / "lang_families.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: d["languages"]["en"].update(colour="blue"),
            r"languages\.en: unknown key\(s\) \['colour'\]",
        ),
        (lambda d: d["languages"]["fr"]["aliases"].append("eng"), "duplicate code or alias 'eng'"),
        (
            lambda d: d["schemes"]["major12"]["experts"].append({"id": 12, "name": "x", "languages": ["en"]}),
            "'en' is in two experts",
        ),
        (
            lambda d: d["schemes"]["major12"]["experts"].pop(3),
            r"expert ids must be exactly 0\.\.10; missing \[3\]",
        ),
        (lambda d: d["languages"]["en"].update(tier="huge"), r"languages\.en\.tier: must be one of"),
        (lambda d: d.update(default_scheme="nope"), "default_scheme: 'nope' is not a defined scheme"),
        (lambda d: d["confusable_groups"].append(["en", "xx"]), "unknown language 'xx'"),
        (
            lambda d: d["languages"]["de"]["lid_labels"]["lid176"].append("en"),
            "label 'en' already belongs to",
        ),
    ],
)
def test_invalid_registry_is_a_clear_error(tmp_path, mutate, message):
    with pytest.raises(RegistryError, match=message):
        load_registry(_mutated(tmp_path, mutate))


def test_user_can_add_a_scheme_and_language_without_code(tmp_path):
    def mutate(d):
        d["languages"]["tl"] = {
            "name": "Tagalog",
            "scripts": ["Latn"],
            "tier": "minor",
            "family": "austronesian",
            "lid_labels": {"lid176": ["tl"]},
        }
        d["schemes"]["two"] = {
            "experts": [
                {"id": 0, "name": "asia", "families": ["sino_tibetan", "altaic"]},
                {"id": 1, "name": "rest", "languages": ["en", "tl"]},
            ]
        }

    registry = load_registry(_mutated(tmp_path, mutate))
    assert registry.scheme("two").expert_for("tl").name == "rest"
    assert registry.scheme("family7").expert_for("tl").name == "austronesian"
    assert registry.scheme("two").expert_for("ja").id == 0


def test_the_run_scheme_is_resolved_in_one_place(registry):
    """Config first, then the scheme the shards were tagged with, then the registry default; a config
    that disagrees with the shards is refused, naming both schemes."""
    assert registry.resolve_scheme(None).name == registry.default_scheme == "family7"
    assert registry.resolve_scheme("major12").name == "major12"
    assert registry.resolve_scheme(None, "major12").name == "major12"
    assert registry.resolve_scheme("major12", "major12").name == "major12"
    with pytest.raises(RegistryError, match="tagged with expert scheme 'major12'.*configured for 'family7'"):
        registry.resolve_scheme("family7", "major12", Path("out/shards"))
