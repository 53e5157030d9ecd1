"""The printer's progress for long waits: a line each time the news changes, never for the clock alone."""

from __future__ import annotations

import io

import pytest

from mfe_deploy.console import Console
from mfe_deploy.ops.health import Probe, progress


def _probe(healthy: bool) -> Probe:
    return Probe(200 if healthy else 503, {"status": "healthy" if healthy else "unhealthy"}, "")


def test_progress_names_what_is_still_awaited() -> None:
    probes = {"api-gateway": _probe(False), "auth": _probe(True), "payments": _probe(True), "profile": _probe(False)}
    assert progress(probes) == "2/4 healthy; waiting for api-gateway, profile"


def test_plain_waits_print_a_line_per_change_of_news() -> None:
    err = io.StringIO()
    console = Console(out=io.StringIO(), err=err)
    with console.status("waiting for the services") as waiting:
        waiting.update("1/5 healthy; waiting for a, b, c, d", "1s of 120s")
        waiting.update("1/5 healthy; waiting for a, b, c, d", "2s of 120s")
        waiting.update("4/5 healthy; waiting for d", "3s of 120s")
    assert err.getvalue().splitlines() == [
        "... waiting for the services",
        "... 1/5 healthy; waiting for a, b, c, d (1s of 120s)",
        "... 4/5 healthy; waiting for d (3s of 120s)",
    ]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("no_color", "plain", "live"), [("", False, True), ("1", False, False), ("", True, False)])
def test_live_views_only_on_a_terminal_without_no_color_or_json(
    monkeypatch: pytest.MonkeyPatch, no_color: str, plain: bool, live: bool
) -> None:
    monkeypatch.setenv("NO_COLOR", no_color)
    console = Console(out=io.StringIO(), err=_Terminal())
    console.plain = plain
    assert console.live is live
