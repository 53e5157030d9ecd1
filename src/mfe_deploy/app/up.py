"""`up`: the plan computed, printed, then executed phase by phase, each step reported as it starts and
ends. One code path: the plan `up` prints is the program it runs, and `plan --env E` computes it with the
same functions (plan.plan over the runtime's desired and observed state)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol, cast

from mfe_deploy.errors import MfeError
from mfe_deploy.plan import PHASES, Plan, Step, phase
from mfe_deploy.runtimes.contract import Prepared, RolledBack, Runtime, StartFailed, Stepwise, UnitStatus
from mfe_deploy.state.ledger import Release


class Report(Protocol):
    def info(self, message: str) -> None: ...


def up(
    rt: Runtime, report: Report, *, version: str, wait: bool, timeout: float, restart_stores: bool = False
) -> list[UnitStatus]:
    """Bring the environment to `version`; what runs after."""
    if not isinstance(rt, Stepwise):
        raise MfeError(f"the {rt.name} runtime cannot run a deploy's plan")  # every runtime can (tests/test_up_plan)
    started = time.monotonic()
    prepared = rt.prepare(version, restart_stores=restart_stores)
    if prepared.nothing:
        report.info("nothing to do: the running release already matches (same files, same images, all healthy)")
        return cast(Runtime, rt).status()
    show(prepared.plan, version, report)

    def run(name: str, steps: Sequence[Step]) -> None:
        rt.run_phase(name, steps, prepared, timeout=timeout, wait=wait)

    try:
        execute(prepared.plan, run, report)
    except StartFailed as exc:
        fallback = rt.failed(prepared, exc)  # raises when there is no release to go back to
        try:
            roll_back(rt, fallback.back, fallback.to, report, timeout)
        except StartFailed as again:
            raise StartFailed(
                f"the deploy of {version} did not become healthy\n{fallback.report}\n"
                f"the rollback to release {fallback.to.id} failed too: {again}"
            ) from None
        raise RolledBack(
            f"the deploy of {version} did not become healthy and was rolled back to release {fallback.to.id}\n"
            f"{fallback.report}"
        ) from None
    return rt.finish(prepared, time.monotonic() - started)


def roll_back(rt: Stepwise, back: Prepared, to: Release, report: Report, timeout: float) -> None:
    """The automatic rollback of a failed deploy: the plan back to the last good release (`to`), printed,
    then executed as a deploy is (its code goes back; no migration runs, the schema stays), waited on
    always."""
    report.info(f"rolling back to release {to.id} ({_versions(back.versions)})")
    show(back.plan, back.version, report)
    needed = {phase(s) for s in back.plan.steps} | {"replace", "converge"}

    def run(name: str, steps: Sequence[Step]) -> None:
        rt.run_phase(name, steps, back, timeout=timeout, wait=True)

    try:
        execute(back.plan, run, report, phases=[p for p in PHASES if p in needed])
    except StartFailed as exc:
        rt.rolled_back(back, exc)
        raise
    rt.rolled_back(back, None)


def _versions(versions: dict[str, str]) -> str:
    distinct = set(versions.values())
    return next(iter(distinct)) if len(distinct) == 1 else ", ".join(f"{k}={v}" for k, v in versions.items())


def show(plan: Plan, version: str, report: Report) -> None:
    if plan.empty:
        report.info(f"plan for {version}: no service changes (the release's other files and images are applied)")
        return
    report.info(f"plan for {version}: {len(plan.steps)} step{'s' * (len(plan.steps) != 1)}")
    for step in plan.steps:
        report.info(f"  {step.action} {step.target}: {step.reason}")


def execute(
    plan: Plan, run: Callable[[str, Sequence[Step]], None], report: Report, phases: Sequence[str] = PHASES
) -> list[Step]:
    """Every phase in order, each with its steps of the plan (the runtime runs a phase's steps side by side
    where it can: replacements in waves); each step said as it starts and as it ends. The steps executed,
    in order: the plan's, every one of them."""
    done: list[Step] = []
    for name in phases:
        steps = [s for s in plan.steps if phase(s) == name]
        for step in steps:
            report.info(f"start: {step.action} {step.target}")
        began = time.monotonic()
        run(name, steps)
        for step in steps:
            report.info(f"done: {step.action} {step.target} ({time.monotonic() - began:.1f}s)")
        done += steps
    return done
