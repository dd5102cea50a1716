"""Reading a YAML file a user wrote, strictly: every problem is one line, never a traceback.

PyYAML's ``safe_load`` builds no objects, but it still accepts what a campaign file must not
hold: a key given twice (the last one silently wins), aliases that expand to billions of nodes
("billion laughs": the loaded objects share memory, but every later walk over them does not),
nesting deep enough to exhaust the recursion limit, and bytes that are not UTF-8. Each of these
is a :class:`YAMLFileError` here, with the line and column where PyYAML knows them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "YAMLFileError", "load_yaml"]

MAX_BYTES = 10 * 1024 * 1024  # a campaign file is a page of text, not a data set
MAX_DEPTH = 64  # nested mappings and lists
MAX_NODES = 1_000_000  # values after aliases are expanded


class YAMLFileError(ValueError):
    """A YAML file cannot be read; the message says where and why."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                continue  # the base class reports an unhashable key
            if key in seen:
                first = seen[key]
                raise yaml.constructor.ConstructorError(
                    None, None,
                    f"duplicate key {key!r} (first at line {first.line + 1}); give each key once",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _check_size(data: Any) -> None:
    """Count values as a reader walking the data would meet them (aliases expanded)."""
    count = 0
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise YAMLFileError(f"more than {MAX_NODES:,} values once aliases are expanded "
                                "(an alias bomb?)")
        if depth > MAX_DEPTH:
            raise YAMLFileError(f"nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
            stack.extend((k, depth + 1) for k in value if isinstance(k, tuple))
        elif isinstance(value, list | tuple):
            stack.extend((v, depth + 1) for v in value)


def load_yaml(path: Path) -> Any:
    """The content of a YAML file.

    Raises
    ------
    YAMLFileError
        For a missing, unreadable, oversized, non-UTF-8 or malformed file, a duplicate key,
        too deep nesting or an alias bomb.
    """
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise YAMLFileError(f"{size:,} bytes; a campaign file holds at most {MAX_BYTES:,}")
        raw = path.read_bytes()
    except OSError as err:
        raise YAMLFileError(f"cannot read {path.name}: {err.strerror or err}") from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise YAMLFileError(f"not UTF-8 text: byte 0x{raw[err.start]:02x} at line {line}; "
                            "save the file as UTF-8") from err
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise YAMLFileError(f"malformed YAML{where}: {problem}") from err
    except RecursionError as err:
        raise YAMLFileError(f"nested more than {MAX_DEPTH} levels deep") from err
    _check_size(data)
    return data
