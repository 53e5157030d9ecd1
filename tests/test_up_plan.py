"""`up` executes the plan: over every case of tests/test_plan.py, the use case (app.up) prints the plan,
hands each phase exactly the plan's steps in order, says each step as it starts and ends, and the steps
executed are the steps planned. The runtime here records the primitives it is asked for (a unit test of
the use case); tests/test_docker_runtime.py holds the docker runtime's `up` to its `plan` on a real engine."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NoReturn

import pytest

from mfe_deploy.app import up as app
from mfe_deploy.plan import PHASES, Desired, Have, Observed, Step, Want, phase, plan
from mfe_deploy.runtimes.contract import Prepared, RolledBack, StartFailed, UnitStatus
from tests.test_plan import CASES


class Said:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)


class Recording:
    """The primitives of a stepwise runtime, recorded; `failing`: the phase whose primitive fails."""

    name = "recording"

    def __init__(self, desired: Desired, observed: Observed, failing: str | None = None) -> None:
        self.desired, self.observed, self.failing = desired, observed, failing
        self.calls: list[tuple[str, tuple[Step, ...]]] = []
        self.failed: list[str] = []
        self.finished = False

    def prepare(self, version: str, *, restart_stores: bool) -> Prepared:
        versions = dict.fromkeys(self.desired.services, version)
        return Prepared(version, versions, "digest", None, plan(self.desired, self.observed))

    def run_phase(self, phase: str, steps: Sequence[Step], prepared: Prepared, *, timeout: float, wait: bool) -> None:
        self.calls.append((phase, tuple(steps)))
        if phase == self.failing:
            raise StartFailed(f"{phase} failed")

    def fail(self, prepared: Prepared, error: StartFailed, timeout: float) -> NoReturn:
        self.failed.append(str(error))
        raise RolledBack(f"rolled back: {error}")

    def finish(self, prepared: Prepared, seconds: float) -> list[UnitStatus]:
        self.finished = True
        return [UnitStatus("auth", "RUNNING", None, prepared.version, "healthy")]

    def status(self) -> list[UnitStatus]:
        return []


STORES = {"postgres": "h1", "redis": "h2"}
EXTRA = [
    # A first deploy: nothing runs, the stores start first, every migration is pending.
    (
        "first deploy",
        {"auth": Want("p/auth:v1", 1, "c2")},
        {},
        {"auth": ("0001_init",)},
        {},
    ),
    # A store restarted (asked for), a service replaced, one scaled, one removed, in the phases' order.
    (
        "every phase",
        {"gateway": Want("p/gateway:v2", 2, "c1"), "auth": Want("p/auth:v1", 2, "c2")},
        {"gateway": Have("p/gateway:v1", 2, "c1"), "auth": Have("p/auth:v1", 1, "c2"), "old": Have("p/old:v1", 1, "c")},
        {"auth": ("0002_a",)},
        {"postgres": "h1", "redis": "old"},
    ),
]


def _cases() -> list[tuple[str, Desired, Observed]]:
    out = [(c[0], Desired(c[1], c[3]), Observed(c[2])) for c in CASES]
    out += [(c[0], Desired(c[1], c[3], stores=STORES), Observed(c[2], stores=c[4])) for c in EXTRA]
    return out


@pytest.mark.parametrize(("desired", "observed"), [c[1:] for c in _cases()], ids=[c[0] for c in _cases()])
def test_up_executes_exactly_the_steps_planned_phase_by_phase(desired: Desired, observed: Observed) -> None:
    planned = plan(desired, observed)
    rt = Recording(desired, observed)
    said = Said()
    rows = app.up(rt, said, version="v1", wait=True, timeout=60)  # type: ignore[arg-type]
    assert rows and rt.finished and not rt.failed
    # Every phase once, in order, each with the plan's steps of that phase, in the plan's order.
    assert [name for name, _ in rt.calls] == list(PHASES)
    assert [s for _, steps in rt.calls for s in steps] == list(planned.steps)
    assert all(phase(s) == name for name, steps in rt.calls for s in steps)
    # Printed first: the plan, a line per step; then each step as it starts and as it ends.
    shown = [f"  {s.action} {s.target}: {s.reason}" for s in planned.steps]
    assert said.lines[1 : 1 + len(shown)] == shown
    starts = [line.removeprefix("start: ") for line in said.lines if line.startswith("start: ")]
    ends = [line.removeprefix("done: ").rsplit(" (", 1)[0] for line in said.lines if line.startswith("done: ")]
    assert starts == ends == [f"{s.action} {s.target}" for s in planned.steps]


def test_the_extra_cases_cover_every_phase() -> None:
    """The table above is not vacuous: its cases hold a step of every phase, stores first."""
    _, desired, observed = _cases()[-1]
    steps = plan(desired, observed).steps
    assert [phase(s) for s in steps] == ["stores", "migrate", "replace", "converge", "converge"]
    assert [(s.action, s.target) for s in steps][:1] == [("restart", "redis")]
    _, desired, observed = _cases()[-2]
    assert [(s.action, s.target) for s in plan(desired, observed).steps] == [
        ("start", "postgres"),
        ("start", "redis"),
        ("migrate", "auth"),
        ("start", "auth"),
    ]


@pytest.mark.parametrize("failing", PHASES)
def test_a_failed_phase_stops_the_plan_there_and_the_runtime_recovers(failing: str) -> None:
    _, desired, observed = _cases()[-1]
    rt = Recording(desired, observed, failing=failing)
    with pytest.raises(RolledBack):
        app.up(rt, Said(), version="v1", wait=True, timeout=60)  # type: ignore[arg-type]
    assert [name for name, _ in rt.calls] == list(PHASES[: PHASES.index(failing) + 1])
    assert rt.failed == [f"{failing} failed"] and not rt.finished


def test_nothing_to_do_runs_no_phase() -> None:
    class Unchanged(Recording):
        def prepare(self, version: str, *, restart_stores: bool) -> Prepared:
            prepared = super().prepare(version, restart_stores=restart_stores)
            prepared.nothing = True
            return prepared

    _, desired, observed = _cases()[0]
    rt, said = Unchanged(desired, observed), Said()
    app.up(rt, said, version="v1", wait=True, timeout=60)  # type: ignore[arg-type]
    assert rt.calls == [] and not rt.finished
    assert said.lines == ["nothing to do: the running release already matches (same files, same images, all healthy)"]
