"""up, status, health, logs, down: the same flags and output on every runtime."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import TYPE_CHECKING, Annotated

import typer

from mfe_deploy.cli.app import EnvOption, JsonOption, app, application

if TYPE_CHECKING:
    from mfe_deploy.runtimes.local import LocalRuntime, UnitStatus

RuntimeOption = Annotated[
    str | None, typer.Option("--runtime", "-r", help="local or docker [default: from the environment].")
]


def _runtime(env: str, runtime: str | None) -> LocalRuntime:
    from mfe_deploy.config import loader
    from mfe_deploy.engine import server_version
    from mfe_deploy.errors import MfeError
    from mfe_deploy.runtimes.local import LocalRuntime

    state = application()
    loaded, secrets = loader.load_with_secrets(state.project_dir, env)
    state.console.add_secrets(secrets.maskable())
    chosen = runtime or loaded.env.runtime
    if chosen == "auto":
        # The docker runtime lands with issue 5; until then auto means local, and says so.
        engine = server_version()
        chosen = "local"
        why = "Docker engine answers, but the docker runtime is not available yet" if engine else "no Docker engine"
        state.console.info(f"runtime: local ({why})")
    if chosen != "local":
        raise MfeError(f"runtime {chosen!r} is not available yet; use --runtime local")
    return LocalRuntime(state.project_dir, loaded, secrets, state.console)


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
) -> None:
    """Render, start the stores, migrate, start the services, wait until healthy."""
    started = time.monotonic()
    rt = _runtime(env, runtime)
    rows = rt.up(wait=not no_wait, timeout=timeout, version=_version(application().project_dir))
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
    tail: Annotated[int, typer.Option("--tail", "-n", help="Lines to show from the end.")] = 50,
) -> None:
    """Show the logs of one unit or all."""
    from mfe_deploy.errors import MfeError

    rt = _runtime(env, runtime)
    units = rt.units()
    if service is not None and service not in units:
        raise MfeError(f"unknown unit {service!r}; one of: {', '.join(units)}")
    chosen = [service] if service else units
    console = application().console
    prefix = len(chosen) > 1
    offsets = {}
    for unit in chosen:
        path = rt.log_file(unit)
        lines = path.read_text(errors="replace").splitlines()[-tail:] if path.exists() and tail > 0 else []
        for line in lines:
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
        typer.confirm(f"Delete all data of {env} ({rt.layout.data})?", abort=True)
    stopped = rt.down()
    console.print(f"{env}: stopped" if stopped else f"{env}: nothing was running")
    if volumes:
        rt.delete_data()
        console.print(f"{env}: data deleted")
