"""The `medbabel` command's conventions: --version, config-schema, stage names in `run --help`, progress
bars only on terminals, training and evaluation logging through the pipeline's logger."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import jsonschema
import pytest
import yaml

from pipeline.cli import CONFIG_SCHEMA_FILE, config_json_schema, main
from pipeline.dag import STAGES

ROOT = Path(__file__).resolve().parent.parent
MEDBABEL = [sys.executable, "-m", "pipeline"]


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"medbabel {version('medbabel')}"


def test_run_help_lists_every_stage(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    for spec in STAGES:
        assert re.search(rf"^  {spec.name}\s+{re.escape(spec.description)}$", text, re.M), spec.name


def test_config_schema_is_committed_and_validates_every_config(capsys):
    assert main(["config-schema"]) == 0
    printed = capsys.readouterr().out
    assert printed == config_json_schema()
    assert (ROOT / CONFIG_SCHEMA_FILE).read_text() == printed, (
        f"run: medbabel config-schema > {CONFIG_SCHEMA_FILE}"
    )
    schema = json.loads(printed)
    validator = jsonschema.Draft202012Validator(schema)
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        first = path.read_text().splitlines()[0]
        assert first == "# yaml-language-server: $schema=medbabel.schema.json", path.name
        assert not list(validator.iter_errors(yaml.safe_load(path.read_text()))), path.name
    # and it catches what the config loader refuses
    errors = list(validator.iter_errors({"run": {"name": "x", "sead": 1}}))
    assert errors and "sead" in errors[0].message


BAR = (
    "from tqdm import tqdm\nfor _ in tqdm(range(3), desc='work'):\n    pass\n"
    "from tqdm.auto import tqdm as auto_tqdm\nfor _ in auto_tqdm(range(3), desc='auto', disable=False):\n    pass\n"
)


@pytest.mark.parametrize("terminal", [False, True])
def test_progress_bars_only_on_a_terminal(terminal):
    """The console helper turns tqdm off when stderr is a pipe (as in CI or `2> log`)."""
    script = (
        "import sys\n"
        "import tqdm.auto\n"  # imported before the switch, as the stages' libraries do
        f"sys.stderr.isatty = lambda: {terminal}\n"
        "from pipeline.console import progress_bars_off_unless_terminal\n"
        "progress_bars_off_unless_terminal()\n" + BAR
    )
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, env=env)
    assert result.returncode == 0, result.stderr
    assert (b"\r" in result.stderr) is terminal


@pytest.mark.slow  # imports the training stack in a fresh interpreter
def test_own_records_reach_the_console_through_the_pipeline_logger():
    """Training and evaluation log with loguru like the stages: their INFO lines reach the console,
    datatrove's INFO lines stay in the task logs."""
    script = (
        "from pipeline import console\n"
        "console.install()\n"
        "from loguru import logger\n"
        "import moe_train.train as train\n"
        "assert train.logger is logger\n"
        "logger.patch(lambda r: r.update(name='moe_train.train')).info('own line')\n"
        "logger.patch(lambda r: r.update(name='datatrove.executor.base')).info('datatrove line')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env={"PYTHONPATH": str(ROOT)}
    )
    assert result.returncode == 0, result.stderr
    assert "own line" in result.stderr and "datatrove line" not in result.stderr


@pytest.mark.slow  # runs the collect stage of the demo
def test_a_stage_run_into_a_pipe_draws_no_progress_bar(tmp_path):
    """`medbabel run` with stderr to a pipe (a log file, CI): the readers' datatrove progress bars, drawn
    in the task processes, stay off too."""
    from helpers import demo_runs

    config = demo_runs.make_project(tmp_path, executor={"kind": "local", "tasks": 2, "workers": 2})
    result = subprocess.run(
        demo_runs.stage_command("collect", config, tmp_path / "out"),
        cwd=config.parent.parent,
        env=demo_runs.cli_env(),
        capture_output=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert b"[collect] in " in result.stdout
    assert b"\r" not in result.stderr and b"Document progress" not in result.stderr
