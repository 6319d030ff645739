"""The DAG is written once: the Makefile's stage rules must match the Python stage table."""

from __future__ import annotations

import re

from conftest import ROOT

from pipeline.dag import STAGES

MAKEFILE = (ROOT / "Makefile").read_text()


def test_makefile_stage_list_is_the_stage_table_in_order():
    declared = re.search(r"^STAGES := (.+)$", MAKEFILE, re.M)
    assert declared, "Makefile has no `STAGES := ...` line"
    assert declared.group(1).split() == [spec.name for spec in STAGES]


def test_makefile_stage_rules_have_the_tables_inputs():
    rules = re.findall(r"^\$\(eval \$\(call stage_rule,(\w+),([\w ]*)\)\)$", MAKEFILE, re.M)
    assert [name for name, _ in rules] == [spec.name for spec in STAGES]
    for (name, inputs), spec in zip(rules, STAGES, strict=True):
        assert tuple(inputs.split()) == spec.inputs, f"Makefile rule for {name}: {inputs!r} != {spec.inputs}"


def test_make_help_lists_every_stage():
    help_recipe = MAKEFILE.split("\nhelp:\n", 1)[1].split("\n\n", 1)[0]
    listed = re.findall(r"^\t  '  (\w+)\s", help_recipe, re.M)
    assert [s for s in listed if s in {spec.name for spec in STAGES}] == [spec.name for spec in STAGES]


def test_stage_inputs_come_earlier_in_the_table():
    seen: set[str] = set()
    for spec in STAGES:
        assert set(spec.inputs) <= seen, f"{spec.name} reads {spec.inputs} before they run"
        seen.add(spec.name)
