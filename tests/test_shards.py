"""Shards: layout, manifest, token counts, split (translations with their parents), the dataset card
(loadable with `datasets`, offline) and byte-identical output whatever the task count."""

from __future__ import annotations

import functools
import hashlib

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import fake_upstream, record, write_records

from pipeline.dag import run_stage
from pipeline.manifest import file_sha256, load_manifest
from pipeline.record_io import list_parquet, read_records
from pipeline.registry import load_registry
from stages.shards import linked_split_keys, own_key, split_of

pytestmark = pytest.mark.slow  # runs stages, subprocesses or training: not in `make test-fast`

SENTENCES = {
    "en": "Patients with asthma should always carry their reliever inhaler.",
    "fr": "Les patients asthmatiques doivent toujours avoir leur inhalateur de secours.",
    "zh": "哮喘患者应随身携带缓解症状的吸入器。",
    "sw": "Wagonjwa wa pumu wanapaswa kubeba kipulizi chao kila wakati.",
}


@functools.cache
def _registry():
    return load_registry()


def _tagged(row: dict) -> dict:
    registry = _registry()
    expert = registry.scheme("family7").expert_for(row["language"])
    return {**row, "family": expert.name, "expert_id": expert.id, "tier": registry.get(row["language"]).tier}


def _corpus() -> list[dict]:
    rows = []
    for i in range(12):
        base = f"doc{i:02d}"
        rows.append(_tagged(record(base, f"{SENTENCES['en']} Case {i}.", "en")))
        for lang in ("fr", "zh", "sw"):
            rows.append(
                _tagged(
                    record(
                        f"{base}-translated-{lang}",
                        f"{SENTENCES[lang]} {i}",
                        lang,
                        origin="translated",
                        parent_id=base,
                    )
                )
            )
    # a rewrite of a translation: a chain back to doc00
    rows.append(
        _tagged(
            record(
                "doc00-translated-fr-rewritten",
                "Q: inhalateur ? R: toujours.",
                "fr",
                parent_id="doc00-translated-fr",
            )
        )
    )
    # a translation-memory unit: two languages linked only by group_id
    for lang in ("en", "fr"):
        rows.append(
            _tagged(
                record(f"tmx-7-{lang}", SENTENCES[lang], lang, origin="translation_memory", group_id="tmx-7")
            )
        )
    return rows


def _config(write_config, name: str, tasks: int = 1, **shards):
    settings = {"max_rows_per_shard": 5, "row_group_size": 2, "valid_fraction": 0.3, **shards}
    return write_config(
        {"executor": {"tasks": tasks, "workers": 1}, "shards": settings}, name=f"{name}.yaml"
    )[1]


def _upstream(out, rows):
    fake_upstream(out, "decontam", rows[::3])
    write_records(out / "decontam" / "output", rows[1::3], name="00001.parquet")
    write_records(out / "decontam" / "output", rows[2::3], name="00002.parquet")


def _tree_digest(shards_dir) -> dict[str, str]:
    paths = [*shards_dir.glob("data/**/*.parquet"), *shards_dir.glob("plots/*.png")]
    paths += [shards_dir / "manifest.json", shards_dir / "README.md"]
    return {str(p.relative_to(shards_dir)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(paths)}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One shards run shared by the layout/manifest/card tests."""
    from pipeline.config import load_config

    tmp = tmp_path_factory.mktemp("shards")
    (tmp / "c.yaml").write_text(
        yaml.safe_dump(
            {
                "run": {"name": "test"},
                "executor": {"tasks": 1, "workers": 1},
                "shards": {"max_rows_per_shard": 5, "row_group_size": 2, "valid_fraction": 0.3},
            }
        )
    )
    rows = _corpus()
    _upstream(tmp / "out", rows)
    summary = run_stage("shards", load_config(tmp / "c.yaml"), tmp / "out")
    return tmp / "out" / "shards", rows, summary


def test_layout_and_manifest(built):
    shards_dir, rows, summary = built
    manifest = load_manifest(shards_dir)
    assert manifest.scheme == "family7" and manifest.config_hash
    files = sorted(p.relative_to(shards_dir).as_posix() for p in shards_dir.glob("data/**/*.parquet"))
    assert files == sorted(f.path for f in manifest.files)
    assert any(f.endswith("part-00001.parquet") for f in files), (
        "max_rows_per_shard splits a group into parts"
    )
    total_rows = total_tokens = 0
    for f in manifest.files:
        path = shards_dir / f.path
        assert f.path == f"data/{f.split}/family={f.family}/language={f.language}/{path.name}"
        assert f.sha256 == file_sha256(path) and f.bytes == path.stat().st_size
        table = pq.read_table(path)
        assert table.num_rows == f.rows <= 5
        assert sum(table["n_tokens"].to_pylist()) == f.tokens
        assert set(table["split"].to_pylist()) == {f.split} and set(table["language"].to_pylist()) == {
            f.language
        }
        assert set(table["family"].to_pylist()) == {f.family}
        ids = table["id"].to_pylist()
        assert ids == sorted(ids)
        metadata = pq.ParquetFile(path).metadata
        assert metadata.row_group(0).column(0).compression == "ZSTD"
        assert max(metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)) <= 2
        total_rows += f.rows
        total_tokens += f.tokens
    assert manifest.totals["rows"] == total_rows == len(rows) == summary["docs_out"]
    assert manifest.totals["tokens"] == total_tokens
    assert not (shards_dir / "partitions").exists()


def test_token_counts_are_qwen2(built):
    from pipeline.text.tokenizer import load_tokenizer

    shards_dir, rows, _ = built
    tokenizer = load_tokenizer()
    by_id = {r["id"]: r for f in load_manifest(shards_dir).files for r in read_records(shards_dir / f.path)}
    for row_id in ("doc03", "doc03-translated-zh", "tmx-7-fr"):
        expected = len(tokenizer(by_id[row_id]["text"], add_special_tokens=False)["input_ids"])
        assert by_id[row_id]["n_tokens"] == expected > 0


def test_translations_share_their_parents_split(built):
    shards_dir, rows, _ = built
    split = {
        r["id"]: r["split"]
        for f in load_manifest(shards_dir).files
        for r in read_records(shards_dir / f.path)
    }
    for i in range(12):
        family = {split[f"doc{i:02d}"]} | {
            split[f"doc{i:02d}-translated-{lang}"] for lang in ("fr", "zh", "sw")
        }
        assert len(family) == 1
    assert split["doc00-translated-fr-rewritten"] == split["doc00"]
    assert split["tmx-7-en"] == split["tmx-7-fr"]
    assert set(split.values()) == {"train", "valid"}


def test_split_keys_follow_links_and_are_deterministic(tmp_path):
    rows = _corpus()
    write_records(tmp_path / "a", rows[:20])
    write_records(tmp_path / "b", rows[20:])
    keys = linked_split_keys([tmp_path / "b", tmp_path / "a"])
    assert keys["doc05-translated-sw"] == own_key("doc05")
    assert keys["doc00-translated-fr-rewritten"] == own_key("doc00")
    assert keys["tmx-7-en"] == keys["tmx-7-fr"]
    assert "doc05" not in keys  # an original with no links keys on itself
    assert linked_split_keys([tmp_path / "a", tmp_path / "b"]) == keys
    fractions = [split_of(own_key(f"x{i}"), 0.1, seed=0) for i in range(2000)]
    assert 0.07 < fractions.count("valid") / 2000 < 0.13
    assert split_of("id:abc", 0.1, 0) == split_of("id:abc", 0.1, 0)


def test_dataset_card_loads_with_datasets(built, tmp_path):
    import datasets

    shards_dir, rows, _ = built
    card = (shards_dir / "README.md").read_text()
    header = yaml.safe_load(card.split("---\n")[1])
    configs = {c["config_name"]: c for c in header["configs"]}
    assert {"all", "en", "fr", "zh", "sw", "family_indo_european", "family_kongolese"} <= set(configs)
    assert header["language"] == ["en", "fr", "sw", "zh"]
    fr = datasets.load_dataset(str(shards_dir), "fr", cache_dir=str(tmp_path / "cache"))
    n_fr = sum(r["language"] == "fr" for r in rows)
    assert sum(len(fr[s]) for s in fr) == n_fr and set(fr["train"]["language"]) == {"fr"}
    everything = datasets.load_dataset(
        "parquet",
        data_files={s: str(shards_dir / f"data/{s}/*/*/*.parquet") for s in ("train", "valid")},
        cache_dir=str(tmp_path / "cache"),
    )
    assert sum(len(everything[s]) for s in everything) == len(rows)
    # the card tells what the corpus is at a glance, with its plots
    assert f"**{len(rows):,} documents**" in card and "**4 languages**" in card
    for name in ("tokens_per_language", "tokens_per_family", "tokens_per_source_type", "funnel"):
        assert f"(plots/{name}.png)" in card
        assert (shards_dir / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert "| `fr` | French | indo_european | major |" in card


def test_funnel_reads_every_stage_summary(tmp_path, write_config):
    import json

    rows = _corpus()[:8]
    _upstream(tmp_path, rows)
    (tmp_path / "dedup").mkdir()
    (tmp_path / "dedup" / "summary.json").write_text(
        json.dumps(
            {
                "docs_in": 20,
                "docs_out": 8,
                "quarantined_by_reason": {"near_duplicate": 9, "exact_duplicate": 3},
            }
        )
    )
    run_stage("shards", _config(write_config, "funnel"), tmp_path)
    card = (tmp_path / "shards" / "README.md").read_text()
    assert "| dedup | 20 | 8 | 12 | near_duplicate 9; exact_duplicate 3 |" in card
    assert "| shards | 8 | 8 | 0 | - |" in card


def test_missing_family_is_quarantined(tmp_path, write_config):
    rows = [_tagged(record("a", SENTENCES["en"], "en")), record("b", SENTENCES["fr"], "fr")]
    fake_upstream(tmp_path, "decontam", rows)
    summary = run_stage("shards", _config(write_config, "missing"), tmp_path)
    assert summary["docs_out"] == 1 and summary["quarantined_by_reason"] == {"missing_family": 1}
    quarantined = [r for p in list_parquet(tmp_path / "shards" / "quarantine") for r in read_records(p)]
    assert [r["id"] for r in quarantined] == ["b"]


def test_output_byte_identical_across_reruns_and_task_counts(tmp_path, write_config):
    rows = _corpus()
    digests = []
    for name, tasks in (("one", 1), ("three", 3)):
        _upstream(tmp_path / name, rows)
        run_stage("shards", _config(write_config, name, tasks=tasks), tmp_path / name)
        digests.append(_tree_digest(tmp_path / name / "shards"))
    run_stage("shards", _config(write_config, "one"), tmp_path / "one", force=True)
    digests.append(_tree_digest(tmp_path / "one" / "shards"))
    assert len(digests[0]) > 10
    assert digests[0] == digests[1] == digests[2]
