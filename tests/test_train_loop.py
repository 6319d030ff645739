"""The training loop: fused loss, exact resume, NaN stop, export/reload, 2-process FSDP2, `make train`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from helpers.train_shards import TINY_TRAIN, write_shards

from moe_train.loss import IGNORE_INDEX, linear_cross_entropy, per_token_cross_entropy
from moe_train.train import NonFiniteLossError, Trainer, lr_factor, no_decay
from moe_train.upcycle import no_shared_expert_warning
from pipeline.config import TrainSection, load_config

pytestmark = pytest.mark.slow  # runs stages, subprocesses or training: not in `make test-fast`

ROOT = Path(__file__).resolve().parent.parent
LANGUAGES = {"en": 24, "fr": 12, "zh": 12, "sw": 8}
SMALL = {**TINY_TRAIN, "eval_every": 3, "checkpoint_every": 2}


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return write_shards(tmp_path_factory.mktemp("train") / "shards", LANGUAGES)


def losses_of(log: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, log.read_text().splitlines()) if "loss" in r]


def test_linear_cross_entropy_matches_the_reference_loss_and_gradients():
    torch.manual_seed(0)
    hidden = torch.randn(37, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 50, (37,))
    labels[::4] = IGNORE_INDEX
    fused = linear_cross_entropy(hidden, weight, labels, chunk_size=10)
    (2 * fused).backward()
    grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    reference = F.cross_entropy(hidden @ weight.T, labels, ignore_index=IGNORE_INDEX, reduction="sum")
    (2 * reference).backward()
    torch.testing.assert_close(fused, reference)
    torch.testing.assert_close(grads[0], hidden.grad)
    torch.testing.assert_close(grads[1], weight.grad)
    per_token = per_token_cross_entropy(hidden.detach(), weight.detach(), labels, chunk_size=7)
    expected = F.cross_entropy(hidden @ weight.T, labels, ignore_index=IGNORE_INDEX, reduction="none")
    torch.testing.assert_close(per_token, expected.float().detach(), rtol=1e-6, atol=1e-6)


def test_schedule_and_weight_decay_groups():
    cfg = TrainSection(max_steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.1) and lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(10, cfg) == pytest.approx(1.0) and lr_factor(100, cfg) == pytest.approx(0.1)
    assert lr_factor(55, cfg) == pytest.approx(0.55)
    norm, bias, matrix = (
        torch.nn.Parameter(torch.ones(4)),
        torch.nn.Parameter(torch.ones(4)),
        torch.ones(4, 4),
    )
    assert no_decay("model.norm.weight", norm) and no_decay("q_proj.bias", bias)
    assert not no_decay("q_proj.weight", torch.nn.Parameter(matrix))


def test_resume_repeats_the_uninterrupted_run_exactly(shards, tmp_path):
    cfg = TrainSection(**SMALL, max_steps=4)
    full = Trainer(cfg, shards, tmp_path / "full").fit()
    assert len(full.losses) == 4

    first = Trainer(cfg, shards, tmp_path / "split").fit(stop_after=2)
    assert first.steps == 2 and first.export_dir is None
    assert (tmp_path / "split" / "checkpoints" / "latest").read_text().strip() == "step-000002"
    resumed = Trainer(cfg, shards, tmp_path / "split", resume=True)
    assert resumed.step == 2
    second = resumed.fit()
    assert second.losses == full.losses  # bit-for-bit on CPU
    assert losses_of(tmp_path / "split" / "logs" / "train.jsonl") == full.losses
    assert second.validation["val_loss"] == pytest.approx(full.validation["val_loss"], rel=1e-6)
    assert set(second.validation["val_loss_by_language"]) <= set(LANGUAGES)
    assert len(second.validation["val_loss_by_language"]) >= 2
    assert 0.0 <= second.validation["agreement"] <= 1.0
    assert set(second.validation["agreement_by_layer"]) == {"layer_2", "layer_3"}
    records = [
        json.loads(line) for line in (tmp_path / "full" / "logs" / "train.jsonl").read_text().splitlines()
    ]
    step = next(r for r in records if r.get("step") == 3)  # an evaluation step (eval_every=3)
    for key in ("lr", "grad_norm", "tokens_per_s", "peak_memory_gb", "router_agreement", "expert_load"):
        assert key in step
    assert len(step["expert_load"]["layer_3"]) == 7 and sum(step["expert_load"]["layer_3"]) == pytest.approx(
        1
    )
    assert "val_loss_by_language" in step


def test_export_is_a_stock_checkpoint_that_loads_and_generates(shards, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2MoeForCausalLM

    trainer = Trainer(TrainSection(**SMALL, max_steps=2, router_supervision_coef=0.01), shards, tmp_path)
    result = trainer.fit()
    export = result.export_dir
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= {
        p.name for p in export.iterdir()
    }
    config = json.loads((export / "config.json").read_text())
    assert config["model_type"] == "qwen2_moe" and config["num_experts"] == 7
    assert "auto_map" not in config
    with no_shared_expert_warning():  # stock transformers, as a user loads it (the note is harmless)
        model = AutoModelForCausalLM.from_pretrained(export, local_files_only=True).eval()
    assert type(model) is Qwen2MoeForCausalLM
    tokenizer = AutoTokenizer.from_pretrained(export, local_files_only=True)
    prompt = tokenizer("User:What is fever?\nAssistant:", return_tensors="pt")
    generated = model.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] > prompt["input_ids"].shape[1]
    # the exported weights are the trained ones: same logits as the trainer's model with stock routing
    batch = trainer.validation[0]
    with torch.no_grad():
        trained = trainer.model.lm(batch.input_ids, position_ids=batch.position_ids, use_cache=False).logits
        exported = model(batch.input_ids, position_ids=batch.position_ids, use_cache=False).logits
    torch.testing.assert_close(exported, trained, rtol=1e-5, atol=1e-5)


def test_non_finite_loss_stops_with_a_checkpoint(shards, tmp_path):
    trainer = Trainer(TrainSection(**SMALL, max_steps=4), shards, tmp_path)
    with torch.no_grad():
        trainer.model.lm.model.norm.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"step 1.*training stopped.*step-000000"):
        trainer.fit()
    checkpoint = tmp_path / "checkpoints" / "step-000000"
    assert (checkpoint / "model.safetensors").is_file() and (checkpoint / "trainer.json").is_file()
    assert json.loads((checkpoint / "trainer.json").read_text())["data"]["sequences"] == 0
    with pytest.raises(RuntimeError, match="create a new one"):
        trainer.fit()


def _write_config(path: Path, train: dict) -> Path:
    path.write_text(yaml.safe_dump({"registry": {"scheme": "family7"}, "train": train}))
    return path


@pytest.mark.slow
def test_two_processes_with_gloo_match_one_process(shards, tmp_path):
    """Same global batch: 1 process x grad_accum 2 == 2 FSDP2 processes (gloo) x grad_accum 1."""
    train = {**SMALL, "max_steps": 2, "eval_every": 2, "checkpoint_every": 2}
    runs = {}
    for name, accum, launcher in (
        ("single", 2, [sys.executable, "-m", "moe_train.train"]),
        (
            "fsdp",
            1,
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc_per_node",
                "2",
                "-m",
                "moe_train.train",
            ],
        ),
    ):
        out = tmp_path / name
        (out / "shards").parent.mkdir(parents=True, exist_ok=True)
        (out / "shards").symlink_to(shards)
        config = _write_config(tmp_path / f"{name}.yaml", {**train, "grad_accum": accum})
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(
            [*launcher, "--config", str(config), "--out", str(out)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = [
            json.loads(line) for line in (out / "train" / "logs" / "train.jsonl").read_text().splitlines()
        ]
    single = [r for r in runs["single"] if "loss" in r]
    fsdp = [r for r in runs["fsdp"] if "loss" in r]
    assert next(r for r in runs["fsdp"] if r.get("event") == "start")["world_size"] == 2
    assert len(single) == len(fsdp) == 2
    for a, b in zip(single, fsdp, strict=True):
        assert a["trained_tokens"] == b["trained_tokens"]
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
    assert fsdp[-1]["val_loss"] == pytest.approx(single[-1]["val_loss"], rel=1e-5)
    assert (tmp_path / "fsdp" / "train" / "export" / "model.safetensors").is_file()


def test_make_train_stage_trains_and_exports(shards, tmp_path):
    """The `make train` path: OUT/shards from the shards stage -> OUT/train (via pipeline.dag.run_stage)."""
    from pipeline.dag import run_stage

    out = tmp_path / "out"
    (out / "shards").mkdir(parents=True)
    for item in shards.iterdir():
        (out / "shards" / item.name).symlink_to(item)
    (out / "shards" / ".done").write_text("test-fixture\n")
    train = {**SMALL, "seq_len": 64, "micro_batch_size": 2, "max_steps": 8, "lr": 5e-3}
    train.update(eval_every=8, checkpoint_every=8)
    cfg = load_config(_write_config(tmp_path / "config.yaml", train))
    summary = run_stage("train", cfg, out)
    assert summary["steps"] == 8
    losses = losses_of(out / "train" / "logs" / "train.jsonl")
    assert losses[-1] < losses[0] - 0.3 and sum(losses[-3:]) < sum(losses[:3])
    assert Path(summary["export_dir"], "model.safetensors").is_file()
    assert (out / "train" / ".done").is_file() and (out / "train" / "summary.json").is_file()
    assert run_stage("train", cfg, out)["steps"] == 8  # up to date: not trained again


@pytest.mark.slow
def test_benchmark_smoke_mode(tmp_path):
    result = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "train_gpu.py"), "--smoke", "--out", str(result)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "2"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(result.read_text())
    assert {r["variant"] for r in report["results"]} == {"dense", "postmoe", "postmoe_eager"}
    for row in report["results"]:
        assert row["tokens_per_s"] > 0 and row["loss_last"] > 0
    assert report["checks"]["fused_ce_loss"] < 1e-5
    assert report["goals"][0]["postmoe_step_over_dense"] > 0


@pytest.mark.slow
def test_resume_check_script_on_cpu_is_bit_for_bit(shards, tmp_path):
    config = _write_config(tmp_path / "config.yaml", {**SMALL, "max_steps": 4})
    result = tmp_path / "resume.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "train_resume_gpu.py"), "--config", str(config),
         "--shards", str(shards), "--out", str(result)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "2"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(result.read_text())
    assert report["device"] == "cpu" and report["steps"] == 4 and report["resumed_after"] == 2
    assert report["bit_for_bit"] and report["max_abs_loss_difference"] == 0.0
    assert len(report["losses_resumed"]) == 4
    assert report["export_generates_tokens"] == 8
