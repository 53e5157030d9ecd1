"""/health shares its verdict: a burst of probes costs one round of checks (issue: the stack saturated
under a 30% share of /health requests, each fanning out to every service and store)."""

from __future__ import annotations

import asyncio
from typing import Any

from mfe_services.common import health


def test_a_burst_of_calls_runs_the_checks_once_and_a_later_call_again() -> None:
    rounds = 0

    async def slow_check() -> None:
        nonlocal rounds
        rounds += 1
        await asyncio.sleep(0.05)

    async def scenario() -> list[tuple[int, dict[str, Any]]]:
        verdict = health.Verdict(ttl=0.3)
        run = lambda: health.report({"database": slow_check})  # noqa: E731
        burst = await asyncio.gather(*(verdict.get(run) for _ in range(50)))
        assert rounds == 1
        await asyncio.sleep(0.35)
        later = await verdict.get(run)
        return [*burst, later]

    answers = asyncio.run(scenario())
    assert rounds == 2
    assert {status for status, _ in answers} == {200}
    assert answers[0][1]["services"] == {"database": "healthy"}


def test_a_failed_check_is_shared_too_and_clears_after_the_ttl() -> None:
    broken = True

    async def check() -> None:
        if broken:
            raise ConnectionError("down")

    async def scenario() -> list[int]:
        nonlocal broken
        verdict = health.Verdict(ttl=0.2)
        run = lambda: health.report({"redis": check})  # noqa: E731
        first = (await verdict.get(run))[0]
        broken = False
        cached = (await verdict.get(run))[0]
        await asyncio.sleep(0.25)
        return [first, cached, (await verdict.get(run))[0]]

    assert asyncio.run(scenario()) == [503, 503, 200]
