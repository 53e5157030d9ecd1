"""The Typer application, its global options and the object every command receives."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from mfe_deploy.console import Console

app = typer.Typer(
    name="mfe-deploy",
    help="Validate, render and deploy the universal MFE backend.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@dataclass
class Application:
    project_dir: Path
    debug: bool = False
    console: Console = field(default_factory=Console)


STATE: dict[str, Application] = {}


def application() -> Application:
    return STATE.setdefault("app", Application(project_dir=Path.cwd()))


@app.callback()
def _root(
    project_dir: Annotated[
        Path | None,
        typer.Option("--project-dir", "-C", envvar="MFE_PROJECT_DIR", help="Project root (holds environments/)."),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for unexpected errors.")] = False,
) -> None:
    STATE["app"] = Application(project_dir=(project_dir or Path.cwd()).resolve(), debug=debug or _env_debug())


def _env_debug() -> bool:
    return os.environ.get("MFE_DEBUG", "") not in ("", "0")


def state_dir(env: str) -> Path:
    """Where an environment's lock, release ledger and audit log live."""
    return application().project_dir / ".mfe" / env / "state"


EnvOption = Annotated[str, typer.Option("--env", "-e", help="Environment name (a file in environments/).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
