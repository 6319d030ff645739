"""The demo's shards open the same in every reader a user reaches for.

pandas `read_parquet(<dir>)`, `pyarrow.dataset(..., partitioning="hive")`, DuckDB `read_parquet(...,
hive_partitioning = true)`, polars `scan_parquet(..., hive_partitioning=True)` and `datasets.load_dataset`
(through the card's configs) must return the same rows, with exactly the record columns, typed as each
reader types the record schema: for the whole corpus, one split and one language.
"""

from __future__ import annotations

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from helpers import demo_runs

from pipeline.manifest import load_manifest
from pipeline.schema import COLUMN_NAMES, RECORD_SCHEMA

pytestmark = pytest.mark.slow

EMPTY = RECORD_SCHEMA.empty_table()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    _, out = demo_runs.reference_run(tmp_path_factory)
    return out / "shards"


def _selections(shards):
    manifest = load_manifest(shards)
    language = max(
        {f.language for f in manifest.files}, key=lambda code: len(manifest.select(languages=[code]))
    )
    assert manifest.select(split="validation"), "the demo has a validation split"
    return manifest, language


def _pandas(shards, split, language):
    path = shards / "data" / (split or "")
    filters = [("language", "=", language)] if language else None
    return pd.read_parquet(path, filters=filters)


def _pyarrow(shards, split, language):
    dataset = ds.dataset(shards / "data" / (split or ""), format="parquet", partitioning="hive")
    return dataset.to_table(filter=ds.field("language") == language if language else None)


def _duckdb(shards, split, language):
    where = f"WHERE language = '{language}'" if language else ""
    files = f"{shards}/data/{split or '*'}/*/*/*.parquet"
    return duckdb.sql(f"SELECT * FROM read_parquet('{files}', hive_partitioning = true) {where}")


def _polars(shards, split, language):
    frame = pl.scan_parquet(f"{shards}/data/{split or '*'}/**/*.parquet", hive_partitioning=True)
    return (frame.filter(pl.col("language") == language) if language else frame).collect()


def _datasets(shards, split, language, cache):
    import datasets

    loaded = datasets.load_dataset(str(shards), language or "all", cache_dir=str(cache))
    parts = [loaded[split]] if split else [loaded[s] for s in loaded]
    return datasets.concatenate_datasets(parts)


@pytest.mark.parametrize("split,language", [(None, None), ("train", None), (None, "most")])
def test_five_readers_return_the_same_rows_columns_and_types(shards, tmp_path, split, language):
    import datasets

    manifest, busiest = _selections(shards)
    language = busiest if language == "most" else language
    expected_rows = sum(
        f.rows for f in manifest.select(split=split, languages=[language] if language else None)
    )

    frame = _pandas(shards, split, language)
    table = _pyarrow(shards, split, language)
    relation = _duckdb(shards, split, language)
    polars_frame = _polars(shards, split, language)
    dataset = _datasets(shards, split, language, tmp_path / "cache")

    # the same columns, in the schema's order, and nothing added from the directory names
    assert list(frame.columns) == list(COLUMN_NAMES)
    assert table.column_names == list(COLUMN_NAMES)
    assert relation.columns == list(COLUMN_NAMES)
    assert polars_frame.columns == list(COLUMN_NAMES)
    assert dataset.column_names == list(COLUMN_NAMES)

    # each reader types every column as it types the record schema itself
    assert table.schema.remove_metadata().equals(pa.schema(list(RECORD_SCHEMA)).remove_metadata())
    assert frame.dtypes.to_dict() == table.to_pandas().dtypes.to_dict()
    assert relation.types == duckdb.from_arrow(EMPTY).types
    assert polars_frame.schema == pl.from_arrow(EMPTY).schema
    assert dataset.features == datasets.Features.from_arrow_schema(RECORD_SCHEMA)

    # the same rows, down to the values
    def key(rows):
        return sorted(
            (r["id"], r["split"], r["family"], r["language"], r["n_tokens"], r["text"]) for r in rows
        )

    reference = key(table.to_pylist())
    assert len(reference) == expected_rows > 0
    assert key(frame.to_dict("records")) == reference
    assert key(relation.arrow().read_all().to_pylist()) == reference
    assert key(polars_frame.to_dicts()) == reference
    assert key(dataset) == reference
