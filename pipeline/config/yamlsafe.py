"""YAML for untrusted config files: bounded depth and alias expansion, safe tags only."""

from __future__ import annotations

from typing import Any, Dict

import yaml

YAML_MAX_DEPTH = 64          # nesting levels of a config file
YAML_MAX_VALUES = 100_000    # values of a config file once its aliases are expanded


class BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` for untrusted files: a document nested deeper than ``YAML_MAX_DEPTH``
    levels, holding more than ``YAML_MAX_VALUES`` values once its aliases are expanded (a "billion
    laughs" file of a few hundred bytes), or an alias inside its own anchor is refused as a
    ``yaml.YAMLError`` while it is composed, before any Python object is built from it."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > YAML_MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {YAML_MAX_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self):
        node = super().compose_document()
        _check_expanded_size(node)
        return node


def _node_children(node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for kv in node.value for n in kv]
    return []


def _check_expanded_size(root) -> None:
    """Count the values of the node graph ``root`` as if every alias were copied out (each shared
    node counted once per reference, memoised: linear in the file's size, no recursion)."""
    size: Dict[int, int] = {}
    on_path = set()
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        k = id(node)
        if done:
            on_path.discard(k)
            n = 1 + sum(size[id(c)] for c in _node_children(node))
            if n > YAML_MAX_VALUES:
                raise yaml.composer.ComposerError(
                    None, None, f"its aliases expand to more than {YAML_MAX_VALUES} values", node.start_mark)
            size[k] = n
            continue
        if k in size:
            continue
        if k in on_path:
            raise yaml.composer.ComposerError(None, None, "an alias refers to its own anchor", node.start_mark)
        on_path.add(k)
        stack.append((node, True))
        stack.extend((c, False) for c in _node_children(node) if id(c) not in size)


def load_yaml(text: str) -> Any:
    """``text`` parsed by `BoundedLoader` (safe tags only, bounded depth and expansion)."""
    return yaml.load(text, Loader=BoundedLoader)


def parse_scalar(text: str) -> Any:
    """A ``--set key=value`` value: YAML scalar syntax (``4``, ``true``, ``[0, 2]``, ``null``)."""
    try:
        return load_yaml(text)
    except yaml.YAMLError:
        return text
