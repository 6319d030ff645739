"""Security: no unsafe deserialisation in our code, secrets never reach logs or outputs, and a stage
never writes outside OUT."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import demo_runs

pytestmark = pytest.mark.slow  # runs stages, subprocesses or training: not in `make test-fast`

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
PACKAGES = ("pipeline", "stages", "moe_train", "bench")
SECRET = "sk-medbabel-test-9f3c2a7e51d04b8c"

# Modules whose loaders run code from the data they read.
UNSAFE_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "shelve", "marshal", "joblib", "jsonpickle"}


def _python_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES if (ROOT / pkg).is_dir() for p in (ROOT / pkg).rglob("*.py"))


def _kw(call: ast.Call, name: str):
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    return None


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


SAFE_YAML_LOADERS = ("SafeLoader", "CSafeLoader", "StrictLoader")  # StrictLoader: see the test below


def unsafe_calls(source: str) -> list[str]:
    """What in one module could execute code hidden in data or models it loads."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"line {node.lineno}: imports {n}" for n in names if n.split(".")[0] in UNSAFE_MODULES]
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
        where = f"line {node.lineno}: {owner + '.' if owner else ''}{name}"
        if owner == "torch" and name == "load" and not _is_true(_kw(node, "weights_only")):
            found.append(f"{where} without weights_only=True")
        if owner == "yaml" and name in ("load", "load_all", "unsafe_load", "full_load", "unsafe_load_all"):
            loader = _kw(node, "Loader")
            loader_name = loader.attr if isinstance(loader, ast.Attribute) else getattr(loader, "id", "")
            safe = name == "load" and loader_name in SAFE_YAML_LOADERS
            if not safe:
                found.append(f"{where} (use yaml.safe_load or Loader=yaml.CSafeLoader)")
        if name == "load" and owner in ("np", "numpy") and _is_true(_kw(node, "allow_pickle")):
            found.append(f"{where} with allow_pickle=True")
        if name == "read_pickle" or (isinstance(func, ast.Name) and name in ("eval", "exec")):
            found.append(where)
        if _is_true(_kw(node, "trust_remote_code")):
            found.append(f"{where} with trust_remote_code=True")
        safetensors = _kw(node, "use_safetensors")
        if name == "from_pretrained" and isinstance(safetensors, ast.Constant) and safetensors.value is False:
            found.append(f"{where} with use_safetensors=False")
    return found


def test_the_strict_yaml_loader_is_a_safe_loader():
    from pipeline.yaml_files import StrictLoader

    assert issubclass(StrictLoader, yaml.SafeLoader | getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    assert yaml.constructor.SafeConstructor in StrictLoader.__mro__


def test_the_checker_catches_what_it_should():
    bad = (
        "import pickle\nimport dill as d\nfrom cloudpickle import loads\nimport torch, yaml, numpy as np\n"
        "torch.load('x.pt')\ntorch.load('x.pt', weights_only=False)\nyaml.load(s)\nyaml.unsafe_load(s)\n"
        "np.load('a.npy', allow_pickle=True)\neval('1')\nM.from_pretrained(p, trust_remote_code=True)\n"
        "M.from_pretrained(p, use_safetensors=False)\nyaml.load(s, Loader=yaml.Loader)\n"
        "yaml.load(s, Loader=yaml.FullLoader)\n"
    )
    assert len(unsafe_calls(bad)) == 13
    good = (
        "import torch, yaml\ntorch.load('o.pt', weights_only=True)\nyaml.safe_load(s)\nM.from_pretrained(p)\n"
        "yaml.load(s, Loader=yaml.CSafeLoader)\n"
        "model.eval()\nmodel.to(d).eval()\n"
    )
    assert unsafe_calls(good) == []


def test_no_unsafe_deserialisation_in_our_code():
    files = _python_files()
    assert any(p.parts[-2] == "pipeline" for p in files)
    problems = [f"{p.relative_to(ROOT)} {what}" for p in files for what in unsafe_calls(p.read_text())]
    assert problems == []


def _files_containing(root: Path, needle: bytes) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
            hits.append(str(path.relative_to(root)))
    return hits


def test_a_secret_in_a_failing_task_stays_out_of_logs_and_messages(tmp_path):
    """A task fails while a local variable holds the API key: the console, the task logs and the
    error message must not show it (loguru would print local variables in tracebacks)."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"executor": {"kind": "local", "tasks": 2, "workers": 2}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGURU_")}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE)]), MEDBABEL_TEST_API_KEY=SECRET)
    result = subprocess.run(
        [
            sys.executable,
            str(HERE / "helpers" / "crash_helpers.py"),
            "leaky",
            str(config),
            str(tmp_path / "w"),
        ],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert b"TaskFailedError" in output and b"the endpoint refused" in output  # it did fail, loudly
    assert SECRET.encode() not in output
    assert _files_containing(tmp_path / "w", SECRET.encode()) == []
    assert list((tmp_path / "w" / "logs" / "leaky" / "logs").glob("task_*.log"))  # logs were written


def test_the_api_key_reaches_no_output_file_of_a_run(tmp_path, shared_data):
    """The demo's stages that call an LLM (collect, translate, rewrite: later stages never read the
    key, and would only copy what these wrote) against a loopback endpoint that needs the key and
    sometimes answers with an error, or a completion, echoing it: no file the run writes (the LLM
    cache, records, quarantine, logs, summaries) and nothing it prints holds the key."""
    from helpers.llm_server import FakeLLM, LoopbackServer, tico_parallel

    key_env = "MEDBABEL_SECURITY_TEST_KEY"
    parallel = tico_parallel(shared_data / "tico19_health_sentences.jsonl.gz")
    fake = FakeLLM(
        parallel,
        api_key=SECRET,
        faults={"echo_key": 0.2, "echo_key_in_reply": 0.2, "server_error": 0.1},
        seed=5,
    )
    with LoopbackServer(fake) as server:
        overrides = {
            "llm": {
                "base_url": server.base_url,
                "model": "fake",
                "api_key_env": key_env,
                "max_retries": 1,
                "backoff_base_s": 0.001,
                "timeout_s": 5,
            },
            "translate": {"targets": ["fr", "sw"], "budget_docs_per_target": 6},
            "rewrite": {"enabled": True, "max_docs": 4},
        }
        config = demo_runs.make_project(
            tmp_path, {"kind": "local", "tasks": 2, "workers": 1}, overrides=overrides
        )
        out = tmp_path / "out"
        console = demo_runs.run_all(config, out, ["collect", "translate", "rewrite"], env={key_env: SECRET})
    assert fake.outcomes["ok"] > 0 and fake.outcomes["echo_key"] > 0  # the key was used, and echoed
    assert fake.outcomes["echo_key_in_reply"] > 0
    for stage in ("translate", "rewrite"):
        assert json.loads((out / stage / "summary.json").read_text())["docs_out"] > 0, stage
    assert SECRET not in console
    assert _files_containing(out, SECRET.encode()) == []


def test_a_stage_never_writes_outside_out(tmp_path):
    """Collection with a hostile source name (`../../escape`) and bad records to reject: everything
    it writes lands under OUT; the project, the inputs, HOME are untouched."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "a.jsonl").write_text('{"text": "Fever and cough."}\n{"text": 42}\nnot json\n')
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    out = tmp_path / "run" / "out"
    config = tmp_path / "config.yaml"
    source = {
        "name": "../../escape",
        "path": str(inputs / "a.jsonl"),
        "format": "jsonl",
        "source_type": "paper",
        "license": "CC0",
        "language": "en",
    }
    config.write_text(yaml.safe_dump({"executor": {"tasks": 2, "workers": 2}, "sources": [source]}))
    watched = [ROOT, inputs, home, tmp_path]
    before = {str(w): demo_runs.snapshot(w, {out.parent, tmp}) for w in watched}
    env = dict(os.environ, HOME=str(home), TMPDIR=str(tmp), PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "collect", "--config", str(config), "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    after = {str(w): demo_runs.snapshot(w, {out.parent, tmp}) for w in watched}
    assert after == before
    written = [p for p in out.parent.rglob("*") if p.is_file()]
    assert written and all(p.resolve().is_relative_to(out.resolve()) for p in written)
    assert sorted(p.name for p in (out / "collect" / "rejected").iterdir()) == ["_.._escape-00000.parquet"]
