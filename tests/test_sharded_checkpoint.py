"""Sharded checkpoints (torch.distributed.checkpoint): each rank writes its shard, a resume at another
world size reshards them, and the resumed run's losses equal an uninterrupted run's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers.train_shards import TINY_TRAIN, write_shards

from moe_train.checkpoint import FILES, SHARDS, is_sharded, latest_checkpoint
from moe_train.train import Trainer
from pipeline.config import TrainSection

pytestmark = pytest.mark.slow  # trains in subprocesses: not in `make test-fast`

ROOT = Path(__file__).resolve().parent.parent
SMALL = {**TINY_TRAIN, "eval_every": 4, "checkpoint_every": 2, "max_steps": 4}


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return write_shards(tmp_path_factory.mktemp("sharded") / "shards", {"en": 24, "fr": 12, "sw": 8})


def train(shards: Path, out: Path, config: Path, processes: int, *extra: str) -> list[dict]:
    """Run `python -m moe_train.train` (under torchrun with gloo when processes > 1); its log records."""
    if not (out / "shards").exists():
        out.mkdir(parents=True, exist_ok=True)
        (out / "shards").symlink_to(shards)
    launcher = [sys.executable, "-m", "moe_train.train"]
    if processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        launcher += ["--nproc_per_node", str(processes), "-m", "moe_train.train"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [*launcher, "--config", str(config), "--out", str(out), *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    log = out / "train" / "logs" / "train.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()]


def config(tmp_path: Path, name: str, **train) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"registry": {"scheme": "family7"}, "train": {**SMALL, **train}}))
    return path


def losses(records: list[dict]) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def test_two_ranks_write_shards_and_one_process_resumes_them(shards, tmp_path):
    """2 gloo ranks x grad_accum 1 and 1 process x grad_accum 2 see the same global batch, so a run
    checkpointed by two ranks and finished by one gives the uninterrupted two-rank run's losses."""
    two = config(tmp_path, "two", grad_accum=1)
    full = losses(train(shards, tmp_path / "full", two, 2))
    assert sorted(full) == [1, 2, 3, 4]

    train(shards, tmp_path / "split", two, 2, "--stop-after", "2")
    checkpoint = latest_checkpoint(tmp_path / "split" / "train" / "checkpoints")
    assert checkpoint is not None and checkpoint.name == "step-000002" and is_sharded(checkpoint)
    shard_files = sorted(p.name for p in (checkpoint / SHARDS).glob("*.distcp"))
    assert len(shard_files) == 2  # one per rank: no rank gathered the whole state
    assert not (checkpoint / "model.safetensors").exists() and not (checkpoint / "optimizer.pt").exists()
    assert {"rng-0.pt", "rng-1.pt", "trainer.json", "config.json"} <= {p.name for p in checkpoint.iterdir()}
    assert f"{SHARDS}/.metadata" in json.loads((checkpoint / FILES).read_text())

    one = config(tmp_path, "one", grad_accum=2)
    resumed = train(shards, tmp_path / "split", one, 1, "--resume")
    resumed_losses = losses(resumed)
    assert [s for s in resumed_losses if s > 2] == [3, 4]
    for step in (3, 4):
        assert resumed_losses[step] == pytest.approx(full[step], rel=1e-5)
    export = tmp_path / "split" / "train" / "export"
    assert (export / "model.safetensors").is_file()  # gathered from the resharded state, no optimizer


def test_sharded_format_in_one_process_resumes_bit_for_bit(shards, tmp_path):
    """`checkpoint_format: sharded` in one process: the same exact resume as the full format."""
    cfg = TrainSection(**SMALL, checkpoint_format="sharded")
    full = Trainer(cfg, shards, tmp_path / "full").fit()
    Trainer(cfg, shards, tmp_path / "split").fit(stop_after=2)
    checkpoint = latest_checkpoint(tmp_path / "split" / "checkpoints")
    assert is_sharded(checkpoint)
    resumed = Trainer(cfg, shards, tmp_path / "split", resume=True)
    assert resumed.step == 2
    assert resumed.fit().losses == full.losses


def test_damaged_sharded_checkpoint_falls_back_to_the_previous_one(shards, tmp_path, capsys):
    cfg = TrainSection(**{**SMALL, "checkpoint_every": 1, "keep_checkpoints": 3}, checkpoint_format="sharded")
    Trainer(cfg, shards, tmp_path / "run").fit(stop_after=3)
    root = tmp_path / "run" / "checkpoints"
    shard = next((root / "step-000003" / SHARDS).glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[:-16])
    assert latest_checkpoint(root).name == "step-000002"
    assert "step-000003" in capsys.readouterr().err
    resumed = Trainer(cfg, shards, tmp_path / "run", resume=True)
    assert resumed.step == 2 and torch.isfinite(torch.tensor(resumed.fit().final_loss))
