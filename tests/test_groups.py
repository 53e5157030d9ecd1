"""tests/groups.py: --quick splits the `rest` group into groups of about equal weight, every module in
exactly one, each with its own part of the rest group's ports."""

from __future__ import annotations

import itertools

from tests import groups


def test_quick_groups_hold_every_rest_module_once_on_disjoint_ports() -> None:
    full, quick = groups.modules(False), groups.modules(True)
    assert sorted(f for files in quick.values() for f in files) == sorted(full["rest"])
    assert len(quick) == groups.QUICK_SPLIT
    low, high = (int(p) for p in groups.PORTS["rest"].split("-"))
    spans = sorted(tuple(int(p) for p in groups.ports(g).split("-")) for g in quick)
    assert spans[0][0] == low and spans[-1][1] <= high
    assert all(a[1] < b[0] for a, b in itertools.pairwise(spans)), spans
    weights = [sum(groups.WEIGHTS.get(f.rsplit("/", 1)[1], 5) for f in files) for files in quick.values()]
    assert max(weights) - min(weights) <= max(groups.WEIGHTS.values()) // 4, weights
