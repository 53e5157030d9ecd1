"""Entry point: runs the app and turns errors into one-line messages and exit codes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# pydantic looks for plugins through every installed distribution's entry points on first use (40 ms
# here, on every command); the CLI uses none.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

from mfe_deploy.cli import (  # noqa: F401 - registers the commands on the app
    admin,
    backup,
    certs,
    commands,
    hosts,
    jobs,
    keys,
    maintenance,
    migrate,
    nodes,
    notify,
    oneoff,
    plans,
    stack,
)
from mfe_deploy.cli.app import Application, _env_debug, app, running
from mfe_deploy.errors import MfeError

INTERNAL_ERROR = 70  # EX_SOFTWARE


def _global_flags_first(args: list[str]) -> list[str]:
    """--debug anywhere before a `--` is the root's option (click takes it only before the command)."""
    end = args.index("--") if "--" in args else len(args)
    if "--debug" not in args[:end]:
        return args
    return ["--debug", *[a for a in args[:end] if a != "--debug"], *args[end:]]


def main() -> None:
    with running(Application(project_dir=Path.cwd(), debug=_env_debug())) as state:
        try:
            app(args=_global_flags_first(sys.argv[1:]), prog_name="mfe-deploy")
        except MfeError as exc:
            if exc.is_error:
                state.console.error(exc.lines())
            else:
                for line in exc.lines():
                    state.console.info(line)
            sys.exit(exc.exit_code)
        except Exception as exc:
            if state.debug:
                raise
            state.console.error([f"internal error: {type(exc).__name__}: {exc} (run with --debug for a traceback)"])
            sys.exit(INTERNAL_ERROR)
        finally:
            state.drain()  # notifications under way: a bounded wait
            state.resources.close()
