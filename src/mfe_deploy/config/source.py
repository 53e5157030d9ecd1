"""YAML documents that remember where every key came from, and the base+override merge.

PyYAML's composer keeps a mark on every node; we walk the node tree once to record the line of every
key path, refuse duplicate keys (PyYAML silently keeps the last one), and let later layers override
earlier ones so that an error in a merged value still points at the file and line that set it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mfe_deploy.errors import ConfigError, Problem

KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Location:
    file: str
    line: int


@dataclass
class Document:
    data: Any
    lines: dict[KeyPath, Location] = field(default_factory=dict)

    def locate(self, path: KeyPath) -> Location:
        """Where the longest prefix of `path` was set: a missing key points at its parent."""
        for end in range(len(path), -1, -1):
            found = self.lines.get(path[:end])
            if found is not None:
                return found
        raise KeyError(path)  # unreachable: the root is always recorded


def format_path(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# libyaml's parser keeps the same marks and is several times faster than the pure-Python one.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


MAX_BYTES = 1 << 20  # an environment file is a page of settings, not a data set
MAX_VALUES = 20_000  # values once aliases are expanded: a few kilobytes of aliases can expand to billions
MAX_DIGITS = 30  # no setting needs a longer number; Python refuses to convert past 4300 digits anyway
_INT = "tag:yaml.org,2002:int"


def parse(text: str, file: str) -> Document:
    if len(text.encode()) > MAX_BYTES:
        raise ConfigError([Problem(file, None, "", f"larger than {MAX_BYTES // 1024} KiB: not an environment file")])
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return Document(data=None, lines={(): Location(file, 1)})
        doc = Document(data=None, lines={(): Location(file, node.start_mark.line + 1)})
        problems: list[Problem] = []
        with contextlib.suppress(_TooLarge):
            _walk(node, (), file, doc.lines, problems, [0])
        if problems:
            raise ConfigError(problems)
        doc.data = loader.construct_document(node)
        return doc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        context = exc.context
        if context and exc.context_mark and mark and exc.context_mark.line != mark.line:
            context = f"{context} (started on line {exc.context_mark.line + 1})"
        what = " ".join(s for s in (context, exc.problem) if s)
        raise ConfigError([Problem(file, line, "", f"YAML syntax error: {what}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(file, None, "", f"YAML error: {exc}")]) from None
    finally:
        loader.dispose()


class _TooLarge(Exception):
    pass


def _walk(
    node: yaml.Node,
    path: KeyPath,
    file: str,
    lines: dict[KeyPath, Location],
    problems: list[Problem],
    count: list[int],
) -> None:
    count[0] += 1
    if count[0] > MAX_VALUES:
        line = node.start_mark.line + 1
        what = f"more than {MAX_VALUES} values once its aliases are expanded (a YAML alias bomb?)"
        problems.append(Problem(file, line, format_path(path), what))
        raise _TooLarge
    if isinstance(node, yaml.ScalarNode):
        if node.tag == _INT and len(node.value) > MAX_DIGITS:
            line = node.start_mark.line + 1
            problems.append(Problem(file, line, format_path(path), f"a number of more than {MAX_DIGITS} digits"))
    elif isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                problems.append(
                    Problem(
                        file,
                        line,
                        format_path((*path, key)),
                        f"duplicate key (first set on line {seen[key]})",
                    )
                )
            seen[key] = line
            lines[(*path, key)] = Location(file, line)
            _walk(value_node, (*path, key), file, lines, problems, count)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = Location(file, item.start_mark.line + 1)
            _walk(item, (*path, index), file, lines, problems, count)


def merge(base: Document, override: Document) -> Document:
    """Deep-merge mappings; anything else in `override` replaces what `base` had at that path."""
    lines = dict(base.lines)
    data = _merge_value(base.data, override.data, (), lines, override.lines)
    lines[()] = override.lines[()]
    return Document(data=data, lines=lines)


def _merge_value(
    base: Any, over: Any, path: KeyPath, lines: dict[KeyPath, Location], over_lines: dict[KeyPath, Location]
) -> Any:
    if isinstance(base, Mapping) and isinstance(over, Mapping):
        merged = dict(base)
        for key, value in over.items():
            sub = (*path, str(key))
            if key in base:
                merged[key] = _merge_value(base[key], value, sub, lines, over_lines)
            else:
                merged[key] = value
                _take(sub, lines, over_lines)
            if sub in over_lines:
                lines[sub] = over_lines[sub]
        return merged
    _take(path, lines, over_lines)
    return over


def _take(path: KeyPath, lines: dict[KeyPath, Location], over_lines: dict[KeyPath, Location]) -> None:
    n = len(path)
    for key in [k for k in lines if k[:n] == path and len(k) > n]:
        del lines[key]
    lines.update({k: v for k, v in over_lines.items() if k[:n] == path})


def read(path: Path, display: str) -> Document:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(display, None, "", f"not UTF-8 text ({exc.reason})")]) from None
    except OSError as exc:
        raise ConfigError([Problem(display, None, "", f"cannot read: {exc.strerror}")]) from None
    return parse(text, display)
