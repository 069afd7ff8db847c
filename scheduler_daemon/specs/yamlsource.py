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

from scheduler_daemon.specs.values import Templated

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


# Deeper nesting is no config anyone writes; the limit keeps every later recursion (validation,
# hashing, JSON) far from Python's own.
MAX_DEPTH = 64
# Aliases may repeat the document's values this many times over (on top of a base allowance)
# before the file is taken for an alias bomb: 400 bytes could otherwise expand to 10^7 values.
ALIAS_FACTOR = 10
ALIAS_BASE = 10_000


class TooLarge(Exception):
    """Alias expansion past the limit: the whole document is refused."""


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
    builder = _Builder(loader, node, source, environ)
    try:
        source.data = builder.build(node, ())
    except TooLarge as exc:
        source.data = None
        source.problems[:] = [((), builder.limit_line, str(exc))]
    return source


class _Builder:
    """Builds plain data from the node tree; aliases are followed with loops and bombs refused."""

    def __init__(
        self, loader: yaml.SafeLoader, root: yaml.Node, src: Source, environ: Mapping[str, str]
    ) -> None:
        self.loader = loader
        self.root = root
        self.src = src
        self.environ = environ
        self.building: set[int] = set()  # nodes on the current path: seen again = an alias loop
        self.built = 0  # values built, an alias's once per use
        self.limit = ALIAS_BASE
        self.counted = False
        self.limit_line = 1

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.built += 1
        if self.built > self.limit:
            self._check_expansion(path)
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        if len(path) > MAX_DEPTH:
            self._problem(path, f"nested more than {MAX_DEPTH} levels deep")
            return None
        if id(node) in self.building:
            self._problem(path, "a YAML alias refers to a value that contains it (a loop)")
            return None
        self.building.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            items = []
            for i, child in enumerate(node.value):
                self.src.lines[(*path, i)] = child.start_mark.line + 1
                items.append(self.build(child, (*path, i)))
            return items
        finally:
            self.building.discard(id(node))

    def _check_expansion(self, path: Path) -> None:
        """Past the base allowance, the limit becomes relative to the document's own size
        (counted once: files that do not use aliases much never get here or pay only once)."""
        if not self.counted:
            self.counted = True
            self.limit = ALIAS_BASE + (ALIAS_FACTOR + 1) * _distinct(self.root)
        if self.built > self.limit:
            self.limit_line = self.src.line(path)
            raise TooLarge(
                f"YAML aliases expand the document to more than {self.limit} values (at "
                f"{'.'.join(str(p) for p in path)}): refused as an alias bomb"
            )

    def _problem(self, path: Path, message: str) -> None:
        self.src.problems.append((path, self.src.line(path), message))

    def _scalar(self, node: yaml.ScalarNode, path: Path, *, interpolate: bool = True) -> Any:
        try:
            value = self.loader.construct_object(node, deep=True)
        except (ValueError, OverflowError) as exc:  # 2026-02-30, a 5000-digit integer
            self._problem(path, f"expected a valid {_kind(node)}, got {node.value!r} ({exc})")
            return None
        if interpolate and isinstance(value, str) and "$" in value:
            line = node.start_mark.line + 1
            return _interpolate(value, path, line, self.src, self.environ)
        return value

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[Any, Any]:
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
                    built = self.build(merged_node, path)
                    if isinstance(built, dict):
                        merged = {**built, **merged}
                continue
            key = (
                self._scalar(key_node, (*path, "?"), interpolate=False)
                if isinstance(key_node, yaml.ScalarNode)
                else None
            )
            if not isinstance(key, str | int | float | bool) or key is None:
                self.src.problems.append(((*path, str(key)), line, "expected a plain key"))
                continue
            key = str(key) if not isinstance(key, str) else key
            if key in seen:
                self.src.problems.append(
                    (
                        (*path, key),
                        line,
                        f"duplicate key {key!r} (first defined on line {seen[key]})",
                    )
                )
                continue
            seen[key] = line
            self.src.lines[(*path, key)] = line
            result[key] = self.build(value_node, (*path, key))
        return {**merged, **result}


def _distinct(root: yaml.Node) -> int:
    """How many nodes the document has, each alias target once (iterative: loops are fine)."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.extend((key, value))
    return len(seen)


def _kind(node: yaml.ScalarNode) -> str:
    return {
        "tag:yaml.org,2002:timestamp": "date",
        "tag:yaml.org,2002:int": "integer",
        "tag:yaml.org,2002:float": "number",
    }.get(node.tag, "value")


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
    for name in missing:
        src.problems.append(
            (path, line, f"environment variable {name} is not set (use ${{{name}:-default}})")
        )
    if "${" in text:
        src.templates[path] = text
        # Always a string (never re-read as YAML: `s3cr3t #x` stayed `s3cr3t`, `1:30` became 90);
        # a field that is not a string parses it (specs.values), messages name the template.
        return Templated(expanded, text)
    return expanded
