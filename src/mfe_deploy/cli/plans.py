"""mfe-deploy plan and diff: what `up` would change, without changing anything (exit 1 when not in sync)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from mfe_deploy.cli.app import EnvOption, JsonOption, ReleaseOption, app, application, release
from mfe_deploy.cli.context import RuntimeOption, runtime

if TYPE_CHECKING:
    from mfe_deploy.bundle import Drift
    from mfe_deploy.plan import Desired, Observed


@app.command()
def plan(
    env: EnvOption,
    version: ReleaseOption = None,
    runtime_name: RuntimeOption = None,
    as_json: JsonOption = False,
    rollback: Annotated[
        str | None, typer.Option("--rollback", metavar="SERVICE", help="Instead: what `rollback SERVICE` would do.")
    ] = None,
    to: Annotated[str | None, typer.Option("--to", help="With --rollback: the version to go back to.")] = None,
) -> None:
    """The steps `up` would take, each with its reason; exit 0 in sync, 1 otherwise. With --rollback: the
    versions and the migrations in the way, and what each way past them would do; exit 1 when a plain
    rollback would be refused."""
    from mfe_deploy import plan as plans
    from mfe_deploy.app import rollback as app_rollback
    from mfe_deploy.errors import NotInSync
    from mfe_deploy.runtimes.contract import Rollbacks, able

    console = application().console
    console.plain = as_json
    rt = runtime(env, runtime_name)
    if rollback is not None:
        found = app_rollback.plan(able(rt, Rollbacks), rollback, to)
        refused = found.verdict is not None and found.verdict.refusal("check") is not None
        if as_json:
            verdict = found.verdict.__dict__ if found.verdict else None
            row = {"service": rollback, "running": found.running, "target": found.target, "schema": verdict}
            console.json({**row, "refused": refused})
        else:
            for line in found.lines():
                console.print(line)
        if refused:
            raise NotInSync(f"{env}: rolling {rollback} back to {found.target} as it is would be refused")
        return
    tag = release(version)
    with console.status("comparing what runs with the environment"):
        result = plans.plan(rt.desired(tag), rt.observe())
    if as_json:
        console.json({"version": tag, "steps": [s.__dict__ for s in result.steps], "in_sync": result.empty})
    elif result.empty:
        console.print(f"{env}: in sync with {tag} (nothing to do)")
    else:
        console.table(("STEP", "TARGET", "WHY"), [(s.action, s.target, s.reason) for s in result.steps])
    if not result.empty:
        raise NotInSync(f"{env}: {len(result.steps)} step(s) to reach {tag}")


@app.command()
def diff(
    env: EnvOption, version: ReleaseOption = None, runtime_name: RuntimeOption = None, as_json: JsonOption = False
) -> None:
    """What differs between the environment and what runs: files, images, replicas, migrations."""
    from mfe_deploy import plan as plans
    from mfe_deploy.cli.commands import print_drift
    from mfe_deploy.errors import NotInSync

    console = application().console
    console.plain = as_json
    rt = runtime(env, runtime_name)
    tag = release(version)
    with console.status("comparing what runs with the environment"):
        desired, observed = rt.desired(tag), rt.observe()
        drifts = rt.drift(tag)
    if as_json:
        _diff_json(env, tag, desired, observed, drifts)
        return
    print_drift(drifts, f".mfe/{env}")
    rows = []
    for name in [*desired.services, *(n for n in observed.services if n not in desired.services)]:
        if name in plans.INFRA:
            continue
        want, have = desired.services.get(name), observed.services.get(name)
        running = f"{have.image or '?'} x{have.replicas}" if have and have.replicas else "-"
        wanted = f"{want.image} x{want.replicas}" if want else "- (removed)"
        same = want is not None and have is not None and (have.image, have.replicas) == (want.image, want.replicas)
        rows.append((name, running, wanted, "" if same else "differs"))
    console.table(("SERVICE", "RUNNING", "WANTED", ""), rows)
    for name, ids in desired.pending.items():
        if ids:
            console.print(f"{name}: pending migrations {', '.join(ids)}")
    steps = plans.plan(desired, observed).steps
    if drifts or steps:
        raise NotInSync(f"{env}: not in sync with {tag} ({len(drifts)} file(s), {len(steps)} step(s))")
    console.print(f"{env}: in sync with {tag}")


def _diff_json(env: str, tag: str, desired: Desired, observed: Observed, drifts: list[Drift]) -> None:
    from mfe_deploy import plan as plans
    from mfe_deploy.errors import NotInSync

    services = {}
    for name in [*desired.services, *(n for n in observed.services if n not in desired.services)]:
        if name in plans.INFRA:
            continue
        want, have = desired.services.get(name), observed.services.get(name)
        services[name] = {
            "running": {"image": have.image, "replicas": have.replicas} if have and have.replicas else None,
            "wanted": {"image": want.image, "replicas": want.replicas} if want else None,
        }
    steps = plans.plan(desired, observed).steps
    application().console.json(
        {
            "env": env,
            "release": tag,
            "files": [{"path": d.path, "change": d.kind} for d in drifts],
            "services": services,
            "pending_migrations": {name: list(ids) for name, ids in desired.pending.items() if ids},
            "steps": len(steps),
            "in_sync": not drifts and not steps,
        }
    )
    if drifts or steps:
        raise NotInSync(f"{env}: not in sync with {tag} ({len(drifts)} file(s), {len(steps)} step(s))")
