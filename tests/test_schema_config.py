import pyarrow.parquet as pq
import pytest

from pipeline.config import ConfigError, load_config
from pipeline.record_io import AtomicParquetFile
from pipeline.schema import RECORD_SCHEMA, SCHEMA_VERSION, SchemaError, empty_record, rows_to_table


def _row(**kw):
    base = dict(
        id="a1",
        text="Fever and cough.",
        language="en",
        source="s",
        source_type="paper",
        origin="original",
        license="CC0",
    )
    base.update(kw)
    return empty_record(**base)


def test_schema_has_version_and_roundtrips(tmp_path):
    table = rows_to_table([_row(messages=[{"role": "user", "content": "hi"}], expert_id=4)])
    assert table.schema.metadata[b"medbabel_schema_version"] == str(SCHEMA_VERSION).encode()
    path = tmp_path / "x.parquet"
    with AtomicParquetFile(path, RECORD_SCHEMA) as f:
        f.write(table.to_pylist()[0])
    back = pq.read_table(path).to_pylist()[0]
    assert back["messages"] == [{"role": "user", "content": "hi"}] and back["expert_id"] == 4


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"source_type": "blog"}, "'source_type'='blog' is not one of"),
        ({"origin": "invented"}, "'origin'='invented'"),
        ({"language": None}, "'language' is required"),
        ({"colour": "x"}, r"unknown column\(s\) \['colour'\]"),
        ({"expert_id": "four"}, f"not fit schema v{SCHEMA_VERSION}"),
    ],
)
def test_writer_refuses_rows_off_schema(override, message):
    with pytest.raises(SchemaError, match=message):
        rows_to_table([_row(**override)])


def test_record_writer_refuses_a_metadata_key_outside_the_schema(tmp_path):
    """A step that puts an invented column into a Document's metadata fails the stage's write by name
    (the value is not silently dropped), and no output file appears."""
    from datatrove.data import Document

    from pipeline.record_io import RecordWriter

    row = _row()
    metadata = {k: v for k, v in row.items() if k not in ("id", "text")}
    doc = Document(text=row["text"], id=row["id"], metadata={**metadata, "tmp_score": 0.3})
    with pytest.raises(SchemaError, match=r"unknown column\(s\) \['tmp_score'\]"):
        list(RecordWriter(tmp_path).run(iter([doc])))
    assert not list(tmp_path.glob("*.parquet"))


def test_atomic_file_never_visible_partial(tmp_path):
    path = tmp_path / "part.parquet"
    f = AtomicParquetFile(path, RECORD_SCHEMA, row_group_size=1)
    f.write(_row())
    f.write(_row(id="a2"))
    assert not path.exists() and f.tmp_path.exists()
    f.abort()
    assert not path.exists() and not f.tmp_path.exists()


def test_config_errors_name_the_key(write_config):
    with pytest.raises(ConfigError, match=r"dedup\.bandz: unknown key"):
        write_config({"dedup": {"bandz": 3}})
    with pytest.raises(ConfigError, match=r"sources\[0\]\.format"):
        write_config(
            {
                "sources": [
                    {
                        "name": "a",
                        "path": "x",
                        "format": "pptx",
                        "source_type": "paper",
                        "license": "x",
                        "language": "en",
                    }
                ]
            }
        )
    with pytest.raises(ConfigError, match="exactly one of 'language' or 'language_field'"):
        write_config(
            {
                "sources": [
                    {"name": "a", "path": "x", "format": "jsonl", "source_type": "paper", "license": "x"}
                ]
            }
        )


def test_config_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_demo_config_loads():
    cfg = load_config("configs/demo.yaml")
    assert cfg.registry.scheme == "family7" and cfg.executor.kind == "local"


def test_schema_doc_is_in_sync():
    from conftest import ROOT

    from pipeline.schema import schema_markdown

    assert (ROOT / "docs" / "schema.md").read_text() == schema_markdown(), (
        "run: python -m pipeline schema-doc > docs/schema.md"
    )
