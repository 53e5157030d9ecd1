from __future__ import annotations

import pytest

from mfe_deploy.config import source
from mfe_deploy.errors import ConfigError

BASE = """\
project: x
services:
  auth:
    port: 3001
  admin:
    port: 3003
list: [1, 2]
"""
OVER = """\
services:
  auth:
    replicas: 2
list: [9]
"""


def test_lines_are_recorded_per_key() -> None:
    doc = source.parse(BASE, "b.yaml")
    assert doc.locate(("services", "auth", "port")) == source.Location("b.yaml", 4)
    assert doc.locate(("services", "admin")) == source.Location("b.yaml", 5)


def test_missing_key_points_at_its_parent() -> None:
    doc = source.parse(BASE, "b.yaml")
    assert doc.locate(("services", "auth", "replicas")) == source.Location("b.yaml", 3)
    assert doc.locate(("nothing",)) == source.Location("b.yaml", 1)


def test_merge_keeps_base_and_override_lines() -> None:
    merged = source.merge(source.parse(BASE, "b.yaml"), source.parse(OVER, "o.yaml"))
    assert merged.data["services"]["auth"] == {"port": 3001, "replicas": 2}
    assert merged.data["list"] == [9]
    assert merged.locate(("services", "auth", "port")) == source.Location("b.yaml", 4)
    assert merged.locate(("services", "auth", "replicas")) == source.Location("o.yaml", 3)
    assert merged.locate(("list", 0)) == source.Location("o.yaml", 4)
    assert ("list", 1) not in merged.lines  # the replaced list's second item is gone


def test_duplicate_keys_are_refused() -> None:
    with pytest.raises(ConfigError) as info:
        source.parse("a: 1\nb: 2\na: 3\n", "d.yaml")
    assert info.value.lines() == ["d.yaml:3: a: duplicate key (first set on line 1)"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [((), ""), (("a",), "a"), (("a", "b-c", 2, "d"), "a.b-c[2].d")],
)
def test_format_path(path: source.KeyPath, expected: str) -> None:
    assert source.format_path(path) == expected
