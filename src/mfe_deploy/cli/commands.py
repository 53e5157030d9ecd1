"""The configuration commands: envs, validate, config, render. Heavy imports stay inside the functions
so that `mfe-deploy --help` loads neither pydantic nor jinja."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mfe_deploy.cli.app import EnvOption, JsonOption, ReleaseOption, app, application, release

if TYPE_CHECKING:
    from mfe_deploy.bundle import Drift


@app.command()
def envs(as_json: JsonOption = False) -> None:
    """List the environments of the project."""
    from mfe_deploy.config import loader
    from mfe_deploy.errors import MfeError

    state = application()
    loader.require_project(state.project_dir)
    rows = []
    for name in loader.list_environments(state.project_dir):
        try:
            env = loader.load(state.project_dir, name).env
        except MfeError:
            rows.append({"name": name, "tier": "?", "runtime": "?", "target": "?", "valid": False, "secrets": False})
            continue
        try:  # valid as a file, and deployable here only when its secrets resolve (what validate checks)
            loader.load_with_secrets(state.project_dir, name)
            secrets = True
        except MfeError:
            secrets = False
        row = {"name": name, "tier": env.tier, "runtime": env.runtime, "target": env.target}
        rows.append({**row, "valid": True, "secrets": secrets})
    if as_json:
        state.console.json(rows)
        return
    verdicts = {(True, True): "ok", (True, False): "secrets missing", (False, False): "INVALID"}
    table = [
        (r["name"], r["tier"], r["runtime"], r["target"], verdicts[bool(r["valid"]), bool(r["secrets"])]) for r in rows
    ]
    state.console.table(("ENVIRONMENT", "TIER", "RUNTIME", "TARGET", "CONFIG"), table)


@app.command()
def validate(env: EnvOption, as_json: JsonOption = False) -> None:
    """Load and validate an environment, including its secrets policy."""
    from mfe_deploy.config import loader

    state = application()
    loaded, secrets = loader.load_with_secrets(state.project_dir, env)
    state.console.add_secrets(secrets.maskable())
    e = loaded.env
    if as_json:
        state.console.json(
            {
                "file": loaded.file,
                "valid": True,
                "tier": e.tier,
                "layout": e.database.layout,
                "event_hub": e.event_hub,
                "nginx": e.nginx.enabled,
                "secrets": len(secrets.values()),
            }
        )
        return
    state.console.print(
        f"{loaded.file}: valid ({e.tier}, {e.database.layout} databases, {e.event_hub} event hub, "
        f"nginx {'on' if e.nginx.enabled else 'off'}, {len(secrets.values())} secrets resolved)"
    )


@app.command()
def config(env: EnvOption, as_json: JsonOption = False) -> None:
    """Show the effective configuration (base + overrides), secrets masked."""
    from mfe_deploy.config import loader
    from mfe_deploy.config.view import effective

    state = application()
    data = effective(loader.load(state.project_dir, env).env)
    if as_json:
        state.console.json(data)
        return
    import yaml

    state.console.print(yaml.safe_dump(data, sort_keys=False).rstrip())


@app.command()
def render(
    env: EnvOption,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Bundle directory [default: .mfe/ENV].")] = None,
    check: Annotated[bool, typer.Option("--check", help="Write nothing; exit 1 with a diff on drift.")] = False,
    version: ReleaseOption = None,
    engine_version: Annotated[
        str | None,
        typer.Option("--engine-version", help="Docker Engine version to render for [default: ask]."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Render what `up` deploys (compose, or a Swarm environment's stack files; nginx, env files, the
    database init script) into a bundle directory."""
    from mfe_deploy import bundle
    from mfe_deploy.config import loader
    from mfe_deploy.engine import capabilities
    from mfe_deploy.errors import BundleDrift
    from mfe_deploy.render import render as render_bundle

    state = application()
    loaded, secrets = loader.load_with_secrets(state.project_dir, env)
    state.console.add_secrets(secrets.maskable())
    versions: dict[str, str] = dict.fromkeys(loaded.env.services, release(version))
    caps = capabilities(engine_version)
    result = render_bundle(loaded.env, secrets, versions=versions, caps=caps)
    target = out if out is not None else state.project_dir / ".mfe" / env
    if loaded.env.runtime == "swarm":  # what `up` deploys there: the stack files, not compose.yml
        from mfe_deploy.swarm_bundle import swarm_bundle

        def made(path: str) -> str | None:
            file = target / path
            return file.read_text() if file.is_file() else None

        result = swarm_bundle(loaded.env, result, caps, made)
    shown = _display(target, state.project_dir)
    if check:
        drifts = bundle.drift(result, target)
        if as_json:  # what differs, never the contents: a file may hold secrets
            rows = [{"kind": d.kind, "path": d.path, "secret": d.secret} for d in drifts]
            state.console.json({"env": env, "bundle": shown, "files": len(result.files), "drift": rows})
        else:
            print_drift(drifts, shown)
        if drifts:
            raise BundleDrift(f"{len(drifts)} file(s) in {shown} differ from the rendered bundle")
        if not as_json:
            state.console.print(f"{shown}: up to date ({len(result.files)} files)")
        return
    changed = bundle.write(result, target)
    if as_json:
        state.console.json({"env": env, "bundle": shown, "files": len(result.files), "changed": sorted(changed)})
        return
    state.console.print(f"rendered {len(result.files)} files to {shown} ({len(changed)} changed)")


def print_drift(drifts: list[Drift], shown: str) -> None:
    console = application().console
    for d in drifts:
        console.print(f"{d.kind}: {shown}/{d.path}" + (" (holds secrets: values not shown)" if d.secret else ""))
        for line in d.diff:
            console.print(line.rstrip("\n"))


def _display(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base))
    except ValueError:
        return str(path)


@app.command("version")
def version(as_json: JsonOption = False) -> None:
    """Print mfe-deploy's version (as --version does)."""
    from mfe_deploy import __version__

    console = application().console
    if as_json:
        console.json({"name": "mfe-deploy", "version": __version__})
    else:
        console.print(f"mfe-deploy {__version__}")


@app.command("help")
def help_(
    ctx: typer.Context,
    command: Annotated[list[str] | None, typer.Argument(help="A command, or a group and its verb.")] = None,
) -> None:
    """Show the help of mfe-deploy, or of a command (as COMMAND --help does)."""
    from mfe_deploy.errors import UsageError

    info = ctx.find_root()
    target = info.command
    for name in command or []:
        found = target.get_command(info, name) if hasattr(target, "get_command") else None
        if found is None:
            raise UsageError(f"no command {' '.join(command or [])!r}: see mfe-deploy help")
        info, target = type(ctx)(found, info_name=name, parent=info), found
    typer.echo(target.get_help(info))


@app.command()
def init(
    folder: Annotated[Path | None, typer.Argument(help="Where to start it (default: here); made when missing.")] = None,
    service: Annotated[str, typer.Option("--service", help="Your service's name.")] = "hello",
    port: Annotated[int, typer.Option("--port", help="Your service's port.")] = 3010,
    project: Annotated[
        str | None, typer.Option("--project", help="The project's name [default: the folder's].")
    ] = None,
) -> None:
    """Start a project: the gateway and the JWT issuer in front of one service of yours, in development and
    production environments. Never overwrites a file."""
    from mfe_deploy import scaffold
    from mfe_deploy.errors import UsageError
    from mfe_deploy.exec.host import write_atomic

    console = application().console
    where = (folder or Path.cwd()).resolve()
    name = project or scaffold.project_name(where.name)
    wanted = scaffold.files(name, service, port)
    there = [path for path in wanted if (where / path).exists()]
    if there:
        raise UsageError(f"{where}: {', '.join(there)} exist already; init never overwrites (choose an empty folder)")
    for path, text in wanted.items():
        write_atomic(where / path, text, 0o644)
    console.print(f"{where}: project {name!r}, with your service {service!r} ({', '.join(wanted)})")
    here = [] if where == Path.cwd().resolve() else [f"cd {where}"]
    steps = [*here, "mfe-deploy up --env development", f"curl http://localhost:3000/api/{service}/hello"]
    console.print("next:\n" + "\n".join(f"  {step}" for step in steps))


@app.command()
def docs() -> None:
    """Print the configuration reference: every key of an environment file, its type, default and purpose."""
    from mfe_deploy.config.reference import reference

    application().console.print(reference().rstrip("\n"))
