"""Reliability guards outside the data path: where the LLM cache may live, idle-task warnings,
verified hand-offs between stages and into training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.config import LLMSection
from pipeline.llm.session import cache_path

ROOT = Path(__file__).resolve().parent.parent


def test_the_llm_cache_lies_inside_out_unless_given_an_absolute_path(tmp_path):
    out = tmp_path / "out"
    assert cache_path(LLMSection(), out) == out / "llm_cache.sqlite"
    assert cache_path(LLMSection(cache_path="cache/llm.sqlite"), out) == out / "cache" / "llm.sqlite"
    shared = tmp_path / "shared" / "llm.sqlite"
    assert cache_path(LLMSection(cache_path=str(shared)), out) == shared


@pytest.mark.slow  # runs a stage, a subprocess or a model
def test_more_tasks_than_input_files_is_warned_about(tmp_path):
    source = tmp_path / "a.jsonl"
    source.write_text('{"text": "Fever and cough."}\n')
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "executor": {"tasks": 5, "workers": 1},
                "sources": [
                    {"name": "a", "path": str(source), "format": "jsonl", "source_type": "paper"}
                    | {"license": "CC0", "language": "en"}
                ],
            }
        )
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "run",
            "collect",
            "--config",
            str(config),
            "--out",
            str(tmp_path / "o"),
        ],
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "[collect] warning: executor.tasks is 5 but there are 1 input files; 4 tasks" in result.stderr


# --- verified hand-offs between stages -------------------------------------------------------------


def _collect_config(tmp_path: Path) -> Path:
    source = tmp_path / "a.jsonl"
    source.write_text("".join(f'{{"text": "Patient {i} has fever and cough."}}\n' for i in range(40)))
    config = tmp_path / "config.yaml"
    entry = {"name": "a", "path": str(source), "format": "jsonl", "source_type": "paper"}
    config.write_text(
        yaml.safe_dump(
            {
                "executor": {"tasks": 2, "workers": 1},
                "sources": [entry | {"license": "CC0", "language": "en"}],
            }
        )
    )
    return config


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow  # runs a stage, a subprocess or a model
def test_a_truncated_upstream_file_stops_the_next_stage_naming_file_and_stage(tmp_path):
    """A Parquet file of a completed stage cut short afterwards (a disk fault, a bad copy): the next
    stage refuses it before reading, naming the file, the stage that wrote it and how to redo it."""
    from conftest import fake_upstream

    config, out = _collect_config(tmp_path), tmp_path / "out"
    assert _cli("run", "collect", "--config", str(config), "--out", str(out)).returncode == 0
    for stage in ("translate", "rewrite"):
        fake_upstream(out, stage, [])
    victim = sorted((out / "collect" / "output").glob("*.parquet"))[0]
    victim.write_bytes(victim.read_bytes()[:-100])
    result = _cli("run", "dedup", "--config", str(config), "--out", str(out))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert str(victim) in message and "truncated" in message, message
    assert "written by stage 'collect'" in message and "run collect --force" in message, message
    assert not (out / "dedup").exists()  # refused before anything was touched

    assert _cli("run", "collect", "--force", "--config", str(config), "--out", str(out)).returncode == 0
    redone = _cli("run", "dedup", "--config", str(config), "--out", str(out))
    assert redone.returncode == 0, redone.stderr[-2000:]


def test_an_altered_or_unlisted_upstream_file_is_refused(tmp_path):
    from conftest import record, write_records

    from pipeline.handoff import HandoffError, record_outputs, verify_outputs

    stage_dir = tmp_path / "collect"
    write_records(stage_dir / "output", [record(f"d{i}", f"text {i}") for i in range(5)])
    record_outputs(stage_dir)
    verify_outputs(tmp_path, "collect")
    write_records(stage_dir / "output", [record("x", "planted")], name="extra.parquet")
    with pytest.raises(HandoffError, match="extra.parquet was not written by that stage"):
        verify_outputs(tmp_path, "collect")
    (stage_dir / "output" / "extra.parquet").unlink()
    first = sorted((stage_dir / "output").glob("*.parquet"))[0]
    data = bytearray(first.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte flipped
    first.write_bytes(bytes(data))
    with pytest.raises(HandoffError, match="checksum differs"):
        verify_outputs(tmp_path, "collect")


# --- training trusts nothing it did not verify ---------------------------------------------------


@pytest.fixture
def shards(tmp_path) -> Path:
    from helpers.train_shards import write_shards

    return write_shards(tmp_path / "shards", {"en": 6, "fr": 6})


def _rewrite_manifest(shards: Path, edit) -> None:
    path = shards / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("hostile", ["../../../etc/passwd", "/etc/passwd"])
def test_training_refuses_manifest_paths_outside_the_shards_folder(shards, hostile):
    """The manifest loader (training's `DataSelection.files()`, eval, the report) refuses the whole
    manifest before any file is opened."""
    from pipeline.manifest import ManifestError, load_manifest

    _rewrite_manifest(shards, lambda d: d["files"][0].update(path=hostile))
    with pytest.raises(ManifestError, match="outside the shards directory; refused"):
        load_manifest(shards)


@pytest.mark.slow  # runs a stage, a subprocess or a model
def test_training_verifies_a_shard_before_reading_it(shards):
    from moe_train.data import DocumentTokenizer
    from moe_train.sampling import DataSelection, DocumentStream, WeightedShuffleStream
    from pipeline.manifest import ManifestError, load_manifest
    from pipeline.text.tokenizer import load_tokenizer

    victim = shards / load_manifest(shards).select("train")[0].path
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the checksum can tell
    victim.write_bytes(bytes(data))
    stream = DocumentStream(DataSelection(shards), DocumentTokenizer(load_tokenizer()))
    with pytest.raises(ManifestError, match="sha256 differs") as caught:
        for _ in range(100):
            next(stream)
    assert str(victim) in str(caught.value) and "run shards --force" in str(caught.value)
    with pytest.raises(ManifestError, match="sha256 differs"):  # the weighted shuffle checks before its scan
        WeightedShuffleStream(
            DataSelection(shards, sampling="weighted_shuffle"), DocumentTokenizer(load_tokenizer())
        )


def test_a_corrupt_manifest_names_itself_and_the_stage(shards):
    from pipeline.manifest import ManifestError, load_manifest

    (shards / "manifest.json").write_text('{"schema_version": 1, "files": [')
    with pytest.raises(ManifestError) as caught:
        load_manifest(shards)
    assert str(shards / "manifest.json") in str(caught.value)
    assert "written by stage 'shards'" in str(caught.value)


def _save(root: Path, step: int):
    import torch

    from moe_train.checkpoint import save_checkpoint

    class ModelConfig:  # what a checkpoint needs of a transformers config
        def to_json_file(self, path):
            Path(path).write_text('{"model_type": "qwen2_moe"}\n')

    state = {"w": torch.full((64,), float(step))}
    return save_checkpoint(root, step, state, ModelConfig(), {"step": step}, {"step": step}, keep=3)


def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_complete_one(tmp_path, capsys):
    from moe_train.checkpoint import CorruptCheckpointError, latest_checkpoint, load_checkpoint

    root = tmp_path / "checkpoints"
    first, second = _save(root, 1), _save(root, 2)
    assert latest_checkpoint(root) == second
    weights = second / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])  # truncated after the fact
    assert latest_checkpoint(root) == first
    warning = capsys.readouterr().err
    assert str(weights) in warning and "trying the previous checkpoint" in warning
    assert load_checkpoint(first)["trainer"]["step"] == 1
    weights = first / "optimizer.pt"
    weights.write_bytes(b"\0" * weights.stat().st_size)  # same size, other bytes
    with pytest.raises(CorruptCheckpointError, match="no complete checkpoint") as caught:
        latest_checkpoint(root)
    assert str(weights) in str(caught.value) and f"delete {root}" in str(caught.value)


def test_a_checkpoint_left_half_written_is_never_picked(tmp_path):
    from moe_train.checkpoint import latest_checkpoint

    root = tmp_path / "checkpoints"
    first = _save(root, 1)
    (root / ".step-000002.tmp").mkdir()  # a save killed midway
    (root / ".step-000002.tmp" / "model.safetensors").write_bytes(b"partial")
    assert latest_checkpoint(root) == first
    assert _save(root, 2).name == "step-000002"
    assert not (root / ".step-000002.tmp").exists()


@pytest.mark.slow  # runs a stage, a subprocess or a model
def test_a_truncated_exported_model_names_its_file_and_stage(tmp_path):
    import torch
    from helpers.eval_helpers import make_tiny_moe

    from moe_train.eval.inference import ModelLoadError, load_model

    export = tmp_path / "train" / "export"
    make_tiny_moe(export)
    weights = next(export.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelLoadError) as caught:
        load_model(export, torch.device("cpu"), torch.float32)
    assert str(export) in str(caught.value) and "written by stage 'train'" in str(caught.value)
