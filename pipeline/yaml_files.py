"""YAML loading for the files people edit (configs, the registry, the quality rules): libyaml when
PyYAML was built with it (much faster than the pure-Python loader; every stage reads the registry
and the quality rules), safe semantics, and two refusals that plain `safe_load` lacks:

- an alias (`*name`) is an error: a few lines of nested aliases expand to billions of nodes once the
  config is validated or hashed (the "billion laughs" attack), and no file here needs them;
- a key given twice in one mapping is an error naming the key and both lines, instead of the last
  one silently winning.
"""

from __future__ import annotations

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import ScalarNode

_Base = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader


class StrictLoader(_Base):
    def construct_object(self, node, deep=False):
        if node in self.constructed_objects or node in self.recursive_objects:
            raise ConstructorError(
                None,
                None,
                "an alias (*name) repeats an anchored node: anchors and aliases are not allowed; "
                "write the value out",
                node.start_mark,
            )
        return super().construct_object(node, deep=deep)

    def construct_mapping(self, node, deep=False):
        seen: dict[tuple[str, str], int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode):
                continue
            key = (key_node.tag, key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConstructorError(
                    None,
                    None,
                    f"duplicate key '{key_node.value}' (first given on line {seen[key]})",
                    key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def safe_load(text: str):
    return yaml.load(text, Loader=StrictLoader)
