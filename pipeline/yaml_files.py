"""YAML loading through libyaml when PyYAML was built with it (much faster than the pure-Python loader;
every stage reads the registry and the quality rules), with the same safe semantics."""

from __future__ import annotations

import yaml


def safe_load(text: str):
    if yaml.__with_libyaml__:
        return yaml.load(text, Loader=yaml.CSafeLoader)
    return yaml.safe_load(text)
