"""`up` executes the plan: over every case of tests/test_plan.py, the use case (app.up) prints the plan,
hands each phase exactly the plan's steps in order, says each step as it starts and ends, and the steps
executed are the steps planned. The runtime here records the primitives it is asked for (a unit test of
the use case); tests/test_docker_runtime.py holds the docker runtime's `up` to its `plan` on a real engine."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from mfe_deploy.app import up as app
from mfe_deploy.plan import PHASES, Desired, Have, Observed, Step, Want, phase, plan
from mfe_deploy.runtimes.contract import Fallback, Prepared, RolledBack, StartFailed, UnitStatus
from mfe_deploy.state.ledger import Release
from tests.test_plan import CASES


class Said:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)


class Recording:
    """The primitives of a stepwise runtime, recorded; `failing`: the phases whose primitive fails (the
    first time each is run); `back`: what the way back to the last good release (7) has to do."""

    name = "recording"

    def __init__(
        self,
        desired: Desired,
        observed: Observed,
        failing: Sequence[str] = (),
        back: Desired | None = None,
        now: Observed | None = None,
    ) -> None:
        self.desired, self.observed, self.failing, self.back = desired, observed, list(failing), back
        self.now = now or observed  # what runs once the deploy failed
        self.calls: list[tuple[str, tuple[Step, ...]]] = []
        self.errors: list[str] = []
        self.recorded: list[tuple[str, str]] = []
        self.finished = False

    def prepare(self, version: str, *, restart_stores: bool) -> Prepared:
        versions = dict.fromkeys(self.desired.services, version)
        return Prepared(version, versions, "digest", None, plan(self.desired, self.observed))

    def run_phase(self, phase: str, steps: Sequence[Step], prepared: Prepared, *, timeout: float, wait: bool) -> None:
        self.calls.append((phase, tuple(steps)))
        if phase in self.failing:
            self.failing.remove(phase)
            raise StartFailed(f"{phase} failed")

    def failed(self, prepared: Prepared, error: StartFailed) -> Fallback:
        self.errors.append(str(error))
        self.recorded.append(("up", "failed"))
        if self.back is None:
            raise StartFailed(f"the deploy of {prepared.version} did not become healthy\nthe units' logs")
        good = Release(7, "t", "me", "up", "succeeded", dict.fromkeys(self.back.services, "v0"))
        way = Prepared("release 7", dict(good.versions), "d0", good, plan(self.back, self.now))
        return Fallback("the units' logs", way, good)

    def rolled_back(self, back: Prepared, error: StartFailed | None) -> None:
        self.recorded.append(("auto-rollback", "succeeded" if error is None else "failed"))

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
    assert rows and rt.finished and not rt.errors
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
    rt = Recording(desired, observed, failing=[failing], back=observed_as_desired(observed))
    with pytest.raises(RolledBack) as raised:
        app.up(rt, Said(), version="v1", wait=True, timeout=60)  # type: ignore[arg-type]
    ran = [name for name, _ in rt.calls]
    assert ran[: PHASES.index(failing) + 1] == list(PHASES[: PHASES.index(failing) + 1])
    assert rt.errors == [f"{failing} failed"] and not rt.finished
    assert rt.recorded == [("up", "failed"), ("auto-rollback", "succeeded")]
    assert str(raised.value).startswith("the deploy of v1 did not become healthy and was rolled back to release 7\n")
    assert "the units' logs" in str(raised.value)


def observed_as_desired(observed: Observed) -> Desired:
    """What ran before: the last good release's services, as a release wants them."""
    return Desired({n: Want(h.image or "", h.replicas, h.config or "") for n, h in observed.services.items()}, {})


def test_the_way_back_is_a_plan_printed_then_executed_without_migrations() -> None:
    """A deploy fails at its replacements: the plan back to the last good release is printed, then run
    phase by phase as `up` runs one (no migration phase: the schema stays), each step said."""
    _, desired, observed = _cases()[-1]
    back = Desired({"gateway": Want("p/gateway:v1", 2, "c1"), "auth": Want("p/auth:v0", 1, "c2")}, {})
    now = Observed({"gateway": Have("p/gateway:v2", 1, "c1", 1), "auth": Have("p/auth:v1", 1, "c2")})
    rt, said = Recording(desired, observed, failing=["replace"], back=back, now=now), Said()
    with pytest.raises(RolledBack):
        app.up(rt, said, version="v2", wait=True, timeout=60)  # type: ignore[arg-type]
    way_back = plan(back, now)
    assert [(s.action, s.target) for s in way_back.steps] == [("replace", "gateway"), ("replace", "auth")]
    after = [name for name, _ in rt.calls][PHASES.index("replace") + 1 :]
    assert after == ["replace", "converge"]  # no stores, no migrations on the way back
    assert [s for _, steps in rt.calls[PHASES.index("replace") + 1 :] for s in steps] == list(way_back.steps)
    at = said.lines.index("rolling back to release 7 (v0)")
    assert said.lines[at + 1] == "plan for release 7: 2 steps"
    assert said.lines[at + 2 : at + 4] == [f"  {s.action} {s.target}: {s.reason}" for s in way_back.steps]
    starts = [line for line in said.lines[at:] if line.startswith("start: ")]
    assert starts == ["start: replace gateway", "start: replace auth"]
    assert rt.recorded == [("up", "failed"), ("auto-rollback", "succeeded")]


def test_a_way_back_that_fails_is_recorded_and_the_deploy_fails() -> None:
    _, desired, observed = _cases()[-1]
    rt = Recording(desired, observed, failing=["replace", "replace"], back=observed_as_desired(observed))
    with pytest.raises(StartFailed) as raised:
        app.up(rt, Said(), version="v1", wait=True, timeout=60)  # type: ignore[arg-type]
    assert not isinstance(raised.value, RolledBack)
    assert rt.recorded == [("up", "failed"), ("auto-rollback", "failed")]


def test_no_release_to_go_back_to_fails_the_deploy_with_the_units_report() -> None:
    _, desired, observed = _cases()[-1]
    rt = Recording(desired, observed, failing=["converge"])
    with pytest.raises(StartFailed) as raised:
        app.up(rt, Said(), version="v1", wait=True, timeout=60)  # type: ignore[arg-type]
    assert not isinstance(raised.value, RolledBack)
    assert str(raised.value) == "the deploy of v1 did not become healthy\nthe units' logs"
    assert [name for name, _ in rt.calls] == list(PHASES) and rt.recorded == [("up", "failed")]


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
