"""YAML that remembers where each value came from, rejects duplicate keys and expands ${VAR}.

PyYAML silently keeps the last of two equal keys and forgets line numbers once it builds Python
objects, so we walk the composed node tree ourselves: every value is built with PyYAML's own
constructors, and its line is kept in a map keyed by its path (``("jobs", "prices", "cron")``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

Path = tuple[str | int, ...]

_VAR = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\})")
_MERGE_TAG = "tag:yaml.org,2002:merge"
# libyaml's parser (10x faster on large files) where PyYAML was built with it; same nodes, marks.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class Source:
    """A parsed YAML document: plain data plus the line of every key and the problems found."""

    data: Any
    lines: dict[Path, int] = field(default_factory=dict)
    # Strings that contained ${...}: their text as written, so secrets can be shown uninterpolated.
    templates: dict[Path, str] = field(default_factory=dict)
    problems: list[tuple[Path, int, str]] = field(default_factory=list)

    def line(self, path: Path) -> int:
        """The line of ``path``, or of its nearest ancestor that has one."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), 1)


def parse(text: str, environ: Mapping[str, str]) -> Source:
    """Parse ``text``; raise yaml.YAMLError on syntax errors (the caller adds the file name)."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    finally:
        loader.dispose()
    source = Source(data=None)
    if node is None:
        return source
    source.lines[()] = node.start_mark.line + 1
    source.data = _build(node, (), loader, source, environ)
    return source


def _build(
    node: yaml.Node, path: Path, loader: yaml.SafeLoader, src: Source, environ: Mapping[str, str]
) -> Any:
    if isinstance(node, yaml.MappingNode):
        return _build_mapping(node, path, loader, src, environ)
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, child in enumerate(node.value):
            src.lines[(*path, i)] = child.start_mark.line + 1
            items.append(_build(child, (*path, i), loader, src, environ))
        return items
    value = loader.construct_object(node, deep=True)
    if isinstance(value, str) and "$" in value:
        return _interpolate(value, path, node.start_mark.line + 1, src, environ)
    return value


def _build_mapping(
    node: yaml.MappingNode,
    path: Path,
    loader: yaml.SafeLoader,
    src: Source,
    environ: Mapping[str, str],
) -> dict[Any, Any]:
    result: dict[Any, Any] = {}
    seen: dict[Any, int] = {}
    merged: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        if key_node.tag == _MERGE_TAG:  # YAML merge key: `<<: *defaults`
            sources = (
                value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            )
            for merged_node in sources:
                built = _build(merged_node, path, loader, src, environ)
                if isinstance(built, dict):
                    merged = {**built, **merged}
            continue
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str | int | float | bool) or key is None:
            src.problems.append(((*path, str(key)), line, "expected a plain key"))
            continue
        key = str(key) if not isinstance(key, str) else key
        if key in seen:
            src.problems.append(
                ((*path, key), line, f"duplicate key {key!r} (first defined on line {seen[key]})")
            )
            continue
        seen[key] = line
        src.lines[(*path, key)] = line
        result[key] = _build(value_node, (*path, key), loader, src, environ)
    return {**merged, **result}


def _interpolate(text: str, path: Path, line: int, src: Source, environ: Mapping[str, str]) -> Any:
    missing: list[str] = []

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        value = environ.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                missing.append(name)
                return ""
            return default
        return value

    expanded = _VAR.sub(replace, text)
    if "${" in text:
        src.templates[path] = text
    for name in missing:
        src.problems.append(
            (path, line, f"environment variable {name} is not set (use ${{{name}:-default}})")
        )
    if _VAR.fullmatch(text) and text != "$$":
        # A value that is exactly one ${VAR} is typed as if its expansion had been written there.
        try:
            return yaml.safe_load(expanded) if expanded.strip() else expanded
        except yaml.YAMLError:
            return expanded
    return expanded
