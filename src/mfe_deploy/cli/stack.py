"""up, status, health, logs, down: the same flags and output on every runtime."""

from __future__ import annotations

import subprocess
import sys
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from mfe_deploy.cli.app import EnvOption, JsonOption, app, application, host

if TYPE_CHECKING:
    from collections.abc import Iterator

    from mfe_deploy.runtimes.docker import DockerRuntime
    from mfe_deploy.runtimes.local import LocalRuntime, UnitStatus

RuntimeOption = Annotated[
    str | None, typer.Option("--runtime", "-r", help="local or docker [default: from the environment].")
]
LockWait = Annotated[float, typer.Option("--lock-wait", help="Seconds to wait for the deploy lock.")]
ForceUnlock = Annotated[bool, typer.Option("--force-unlock", help="Break a stale deploy lock.")]


def _runtime(env: str, runtime: str | None) -> LocalRuntime | DockerRuntime:
    from mfe_deploy.config import loader
    from mfe_deploy.engine import server_version
    from mfe_deploy.errors import MfeError

    state = application()
    loaded, secrets = loader.load_with_secrets(state.project_dir, env)
    state.console.add_secrets(secrets.maskable())
    if loaded.env.target != "local" and (runtime or loaded.env.runtime) not in ("docker", "auto"):
        raise MfeError(f"{env} targets {loaded.env.target}: remote hosts run the docker runtime, not "
                       f"{runtime or loaded.env.runtime!r}")  # fmt: skip
    where = host(env, loaded.env)  # connected once: the lock and the audit log of this command use it too
    if where.remote:
        from mfe_deploy.runtimes.docker import DockerRuntime

        return DockerRuntime(state.project_dir, loaded, secrets, state.console, host=where)
    chosen = runtime or loaded.env.runtime
    if chosen == "auto":
        engine = server_version()
        chosen = "docker" if engine else "local"
        why = f"Docker Engine {engine[0]}.{engine[1]} answers" if engine else "no Docker engine answers"
        state.console.info(f"runtime: {chosen} ({why})")
    if chosen == "docker":
        from mfe_deploy.runtimes.docker import DockerRuntime

        return DockerRuntime(state.project_dir, loaded, secrets, state.console)
    if chosen != "local":
        raise MfeError(f"unknown runtime {chosen!r}: local or docker")
    from mfe_deploy.runtimes.local import LocalRuntime

    return LocalRuntime(state.project_dir, loaded, secrets, state.console)


@contextmanager
def _locked_and_audited(
    env: str, action: str, details: dict[str, object], wait: float, force: bool
) -> Iterator[dict[str, object]]:
    from mfe_deploy.state import audit, lock

    where = host(env)
    command = " ".join(["mfe-deploy", *sys.argv[1:]])
    state = application()
    breaking = force and where.files.read_text(where.state / "deploy.lock") is not None
    with (
        audit.audited(
            where.files, where.state / "audit.jsonl", action, env, dict(details), state.notify_outcome
        ) as record,
        lock.held(where.files, where.state / "deploy.lock", command, wait=wait, force_unlock=force),
    ):
        if breaking:
            _lock_broken(env, f"--force-unlock by {command}")
        yield record


def _lock_broken(env: str, how: str) -> None:
    from mfe_deploy.notify import Event

    application().notify(env, Event("lock.broken", env, f"the deploy lock of {env} was broken ({how})"))


def _version(project_dir: object) -> str:
    try:
        out = subprocess.run(["git", "-C", str(project_dir), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=5, check=False)  # fmt: skip
    except OSError:
        return "dev"
    return out.stdout.strip() or "dev"


def _print_status(rows: list[UnitStatus], as_json: bool) -> None:
    console = application().console
    if as_json:
        console.json([row.__dict__ for row in rows])
        return
    table = [(r.name, r.state, r.pid or "-", r.version, r.health) for r in rows]
    console.table(("SERVICE", "STATE", "PID", "VERSION", "HEALTH"), table)


@app.command()
def up(
    env: EnvOption,
    runtime: RuntimeOption = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Do not wait for /health.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for each stage.")] = 120,
    as_json: JsonOption = False,
    version: Annotated[str | None, typer.Option("--version", help="Version tag [default: git describe].")] = None,
    lock_wait: LockWait = 0,
    force_unlock: ForceUnlock = False,
) -> None:
    """Render, start the stores, migrate, start the services, wait until healthy."""
    started = time.monotonic()
    application().console.plain = as_json
    rt = _runtime(env, runtime)
    tag = version or _version(application().project_dir)
    with _locked_and_audited(env, "up", {"version": tag, "runtime": rt.name}, lock_wait, force_unlock):
        rows = rt.up(wait=not no_wait, timeout=timeout, version=tag)
    _print_status(rows, as_json)
    if not as_json:
        application().console.info(f"{env} is up ({rt.name} runtime, {time.monotonic() - started:.1f}s)")


@app.command()
def status(env: EnvOption, runtime: RuntimeOption = None, as_json: JsonOption = False) -> None:
    """Each unit: state, pid, version, health."""
    _print_status(_runtime(env, runtime).status(), as_json)


@app.command()
def health(env: EnvOption, runtime: RuntimeOption = None, as_json: JsonOption = False) -> None:
    """Call every /health; exit 1 if any is unhealthy."""
    from mfe_deploy.errors import MfeError

    probes = _runtime(env, runtime).health()
    console = application().console
    if as_json:
        console.json({n: {"status": p.status, "body": dict(p.body), "error": p.error} for n, p in probes.items()})
    else:
        rows = []
        for name, p in probes.items():
            checks = p.body.get("services", {})
            detail = ", ".join(f"{k}={v}" for k, v in checks.items()) if isinstance(checks, dict) else ""
            rows.append((name, p.status or "-", p.body.get("status", "down"), detail or p.error))
        console.table(("SERVICE", "HTTP", "STATUS", "CHECKS"), rows)
    bad = sorted(n for n, p in probes.items() if not p.healthy)
    if bad:
        raise MfeError(f"unhealthy: {', '.join(bad)}")


@app.command()
def logs(
    env: EnvOption,
    service: Annotated[str | None, typer.Argument(help="One unit (default: all).")] = None,
    runtime: RuntimeOption = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
    tail: Annotated[
        int | None, typer.Option("--tail", "-n", help="Lines to show from the end [50; all with --request-id].")
    ] = None,
    request_id: Annotated[
        str | None, typer.Option("--request-id", help="Only the lines of one request (as X-Request-ID said).")
    ] = None,
) -> None:
    """Show the logs of one unit or all."""
    import re

    from mfe_deploy.errors import MfeError, UsageError

    if request_id is not None and not re.fullmatch(r"[A-Za-z0-9._:\-]{1,128}", request_id):
        raise UsageError(f"--request-id {request_id!r}: request ids are 1 to 128 of A-Z a-z 0-9 . _ : -")
    # The services log one JSON object per line: a request's lines carry its id in this exact form.
    needle = f'"request_id": "{request_id}"' if request_id else None
    lines_wanted = tail if tail is not None else (None if needle else 50)
    rt = _runtime(env, runtime)
    units = rt.units()
    if service is not None and service not in units:
        raise MfeError(f"unknown unit {service!r}; one of: {', '.join(units)}")
    from mfe_deploy.runtimes.docker import DockerRuntime

    if isinstance(rt, DockerRuntime):
        rt.logs(service, lines_wanted, follow, needle)
        return
    chosen = [service] if service else units
    console = application().console
    prefix = len(chosen) > 1
    offsets = {}
    for unit in chosen:
        path = rt.log_file(unit)
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        lines = [line for line in lines if needle is None or needle in line]
        for line in lines[-lines_wanted:] if lines_wanted is not None else lines:
            console.print(f"{unit} | {line}" if prefix else line)
        offsets[unit] = path.stat().st_size if path.exists() else 0
    while follow:
        time.sleep(0.5)
        for unit in chosen:
            path = rt.log_file(unit)
            if not path.exists() or path.stat().st_size <= offsets[unit]:
                continue
            with path.open("rb") as handle:
                handle.seek(offsets[unit])
                data = handle.read()
            offsets[unit] += len(data)
            for line in data.decode(errors="replace").splitlines():
                if needle is None or needle in line:
                    console.print(f"{unit} | {line}" if prefix else line)


@app.command()
def down(
    env: EnvOption,
    runtime: RuntimeOption = None,
    volumes: Annotated[bool, typer.Option("--volumes", help="Also delete the data (databases, queues).")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Required to delete production data.")] = False,
) -> None:
    """Stop everything; --volumes also deletes the data."""
    from mfe_deploy.config import loader
    from mfe_deploy.errors import MfeError

    console = application().console
    production = volumes and loader.load(application().project_dir, env).env.tier == "production"
    if production and not force:
        raise MfeError("refusing to delete production data without --force")
    rt = _runtime(env, runtime)
    if volumes and not yes:
        if not sys.stdin.isatty():
            raise MfeError("--volumes deletes data: confirm with --yes when not running interactively")
        typer.confirm(f"Delete all data of {env} (databases, queues, cache)?", abort=True)
    from mfe_deploy.runtimes.docker import DockerRuntime

    if isinstance(rt, DockerRuntime):
        stopped = rt.down(volumes=volumes)
    else:
        stopped = rt.down()
        if volumes:
            rt.delete_data()
    console.print(f"{env}: stopped" if stopped else f"{env}: nothing was running")
    if volumes:
        console.print(f"{env}: data deleted")


@app.command()
def rollback(
    service: Annotated[str, typer.Argument(help="The service to return to its previous version.")],
    env: EnvOption,
    to: Annotated[str | None, typer.Option("--to", help="A version whose image exists locally.")] = None,
    runtime: RuntimeOption = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait until healthy.")] = 120,
    lock_wait: LockWait = 0,
    force_unlock: ForceUnlock = False,
) -> None:
    """Return one service to its previous successful version (or --to), health-gated."""
    from mfe_deploy.errors import MfeError
    from mfe_deploy.runtimes.docker import DockerRuntime

    rt = _runtime(env, runtime)
    if not isinstance(rt, DockerRuntime):
        raise MfeError("rollback needs versioned images: it works on the docker runtime")
    with _locked_and_audited(env, "rollback", {"service": service, "to": to}, lock_wait, force_unlock) as record:
        release = rt.rollback(service, to, timeout)
        record["versions"] = dict(release.versions)
    application().console.print(f"{service}: now {release.versions[service]} (release {release.id})")


@app.command()
def releases(
    env: EnvOption,
    service: Annotated[str | None, typer.Argument(help="Only this service's versions.")] = None,
    as_json: JsonOption = False,
) -> None:
    """The release ledger: every up, rollback and automatic rollback, with its outcome."""
    from dataclasses import asdict

    from mfe_deploy.state.ledger import Ledger, Release

    where = host(env)
    ledger = Ledger(where.files, where.state / "releases.jsonl")
    rows = ledger.all()
    console = application().console
    if as_json:
        console.json([asdict(r) for r in rows])
        return

    def versions(r: Release) -> str:
        v: dict[str, str] = dict(r.versions)
        if service:
            return v.get(service, "-")
        distinct = set(v.values())
        return next(iter(distinct)) if len(distinct) == 1 else ", ".join(f"{k}={x}" for k, x in v.items())

    console.table(("ID", "TIME", "WHO", "KIND", "OUTCOME", "VERSIONS"),
                  [(r.id, r.time, r.who, r.kind, r.outcome, versions(r)) for r in rows])  # fmt: skip


@app.command()
def history(env: EnvOption, as_json: JsonOption = False) -> None:
    """The audit log: who did what, when, how long, with what result."""
    from mfe_deploy.state.ledger import read_lines

    where = host(env)
    lines = read_lines(where.files, where.state / "audit.jsonl")
    console = application().console
    if as_json:
        console.json(lines)
        return
    console.table(("TIME", "WHO", "ACTION", "RESULT", "SECONDS", "DETAIL"),
                  [(r["time"], r["who"], r["action"], r.get("result", "?"), r.get("seconds", "-"),
                    r.get("error") or r.get("version") or r.get("service") or "") for r in lines])  # fmt: skip


lock_app = typer.Typer(help="Inspect or release the deploy lock.", rich_markup_mode=None)
app.add_typer(lock_app, name="lock")


@lock_app.command("status")
def lock_status(env: EnvOption) -> None:
    """Who holds the deploy lock, and whether that process is still alive."""
    from mfe_deploy.state import lock

    where = host(env)
    holder = lock.read(where.files, where.state / "deploy.lock")
    if holder is None:
        application().console.print(f"{env}: unlocked")
        return
    alive = holder.alive()
    state = "stale (that process is gone)" if alive is False else "held"
    application().console.print(f"{env}: {state} by {holder.describe()}")


@lock_app.command("release")
def lock_release(env: EnvOption, yes: Annotated[bool, typer.Option("--yes", "-y")] = False) -> None:
    """Remove the deploy lock (only do this when its holder is gone)."""
    from mfe_deploy.errors import MfeError
    from mfe_deploy.state import lock

    where = host(env)
    path = where.state / "deploy.lock"
    holder = lock.read(where.files, path)
    if holder is None:
        application().console.print(f"{env}: unlocked")
        return
    if holder.alive() and not yes:
        raise MfeError(f"the lock is held by a live process: {holder.describe()}; add --yes to remove it anyway")
    where.files.unlink(path)
    _lock_broken(env, f"lock release; it was {holder.describe()}")
    application().console.print(f"{env}: lock released (was {holder.describe()})")


images_app = typer.Typer(help="Service images.", rich_markup_mode=None)
app.add_typer(images_app, name="images")


@images_app.command("prune")
def images_prune(
    env: EnvOption,
    keep: Annotated[int, typer.Option("--keep", min=1, help="Versions to keep per service.")] = 5,
) -> None:
    """Remove old service images, keeping the newest --keep and every one a recent release uses."""
    from mfe_deploy.errors import MfeError
    from mfe_deploy.runtimes.docker import DockerRuntime

    rt = _runtime(env, "docker")
    if not isinstance(rt, DockerRuntime):
        raise MfeError("images live on the docker runtime")
    removed = rt.prune(keep)
    console = application().console
    for tag in removed:
        console.print(f"removed {tag}")
    console.print(f"{env}: {len(removed)} image(s) removed")
