"""tests/groups.py: the `rest` modules are split into groups of about equal weight (five for --quick,
FULL_SPLIT beside the engine groups of a full run), every module in exactly one, each group on its own ports."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from tests import groups


@pytest.mark.parametrize(("quick", "split"), [(True, groups.QUICK_SPLIT), (False, groups.FULL_SPLIT)])
def test_rest_groups_hold_every_rest_module_once_on_disjoint_ports(quick: bool, split: int) -> None:
    chosen = groups.modules(quick)
    listed = {f"tests/{name}" for files in groups.GROUPS.values() for name in files}
    everything = sorted(f"tests/{p.name}" for p in (groups.REPO / "tests").glob("test_*.py"))
    rest = {g: files for g, files in chosen.items() if g.startswith("rest")}
    assert (
        len(rest) == split
        and (quick or set(groups.GROUPS) <= set(chosen))
        and not (quick and set(groups.GROUPS) & set(chosen))
    )
    assert sorted(f for files in rest.values() for f in files) == sorted(set(everything) - listed)
    low, high = (int(p) for p in groups.PORTS["rest"].split("-"))
    spans = sorted(tuple(int(p) for p in groups.ports(g, split).split("-")) for g in rest)
    assert spans[0][0] == low and spans[-1][1] <= high, spans
    spans = sorted(tuple(int(p) for p in groups.ports(g, split).split("-")) for g in chosen)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(spans)), spans  # the engine groups' too
    weights = [sum(groups.WEIGHTS.get(f.rsplit("/", 1)[1], 5) for f in files) for files in rest.values()]
    assert max(weights) - min(weights) <= max(groups.WEIGHTS.values()) // 4, weights


def test_the_summary_prints_the_figures_the_groups_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "figures.txt").write_text("tests/test_x.py::test_y: 2,000 requests, 3 failed (none)\n")
    (tmp_path / "a.xml").write_text('<testsuite tests="2" failures="0" errors="0" skipped="0"><testcase/></testsuite>')
    assert groups.summary(tmp_path, {"a": 0}, 1.0) == 0
    out = capsys.readouterr().out
    assert "test_x.py::test_y: 2,000 requests, 3 failed" in out and "2 passed, 0 failed, 0 skipped" in out
