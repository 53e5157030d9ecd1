"""mfe-deploy maintenance on|off|status: API routes answer 503 with Retry-After while /health answers.

The notice is a file in the environment's folder on its host, mounted read-only into the gateway's
container (docker) or named to the gateway process (local runtime); the gateway looks at it once a
second, so it works behind nginx and needs no restart or reload."""

from __future__ import annotations

import getpass
import json
import time
from datetime import UTC, datetime
from pathlib import PurePath
from typing import TYPE_CHECKING, Annotated

import typer

from mfe_deploy.cli.app import EnvOption, JsonOption, Verbs, app, application, host
from mfe_deploy.cli.context import audited

if TYPE_CHECKING:
    from mfe_deploy.exec.host import Host

maintenance_app = typer.Typer(help="Answer API requests with 503 while you work.", rich_markup_mode=None, cls=Verbs)
app.add_typer(maintenance_app, name="maintenance")

RECHECK = 1.1  # the gateway looks at the notice once a second: when the command returns, it is in effect


def _notice(env: str) -> tuple[Host, PurePath]:
    from mfe_deploy.render import MAINTENANCE_DIR

    where = host(env)
    return where, where.root / MAINTENANCE_DIR / "maintenance.json"


def switch_on(env: str, message: str = "", retry_after: int = 120) -> dict[str, object]:
    where, path = _notice(env)
    notice = {
        "message": message or "the service is under maintenance",
        "retry_after": retry_after,
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
        "by": getpass.getuser(),
    }
    with audited(env, "maintenance on", {"message": notice["message"]}):
        where.files.makedirs(path.parent, 0o755)
        where.files.write_atomic(path, json.dumps(notice) + "\n", 0o644)  # read by the gateway's own user
        time.sleep(RECHECK)
    application().console.info(f"{env}: maintenance on (503, Retry-After: {retry_after})")
    return notice


def switch_off(env: str) -> None:
    where, path = _notice(env)
    with audited(env, "maintenance off", {}):
        where.files.unlink(path)
        time.sleep(RECHECK)
    application().console.info(f"{env}: maintenance off")


@maintenance_app.command("on")
def on(
    env: EnvOption,
    message: Annotated[str, typer.Option("--message", "-m", help="What clients are told.")] = "",
    retry_after: Annotated[int, typer.Option("--retry-after", min=1, max=86400, help="Seconds.")] = 120,
    as_json: JsonOption = False,
) -> None:
    """API routes answer 503 JSON with Retry-After; /health keeps answering."""
    notice = switch_on(env, message, retry_after)
    if as_json:
        application().console.json({"env": env, "on": True, "notice": notice})


@maintenance_app.command("off")
def off(env: EnvOption, as_json: JsonOption = False) -> None:
    """Traffic flows again."""
    switch_off(env)
    if as_json:
        application().console.json({"env": env, "on": False, "notice": None})


@maintenance_app.command("status")
def status(env: EnvOption, as_json: JsonOption = False) -> None:
    """On (since when, by whom, with what message) or off."""
    where, path = _notice(env)
    text = where.files.read_text(path)
    console = application().console
    notice: dict[str, object] | None = None
    if text is not None:
        try:
            loaded = json.loads(text)
            notice = {k: loaded[k] for k in ("since", "by", "message")}
        except (ValueError, KeyError, TypeError):
            notice = None
    if as_json:
        console.json({"env": env, "on": text is not None, "notice": notice})
    elif text is None:
        console.print(f"{env}: maintenance off")
    elif notice is None:
        console.print(f"{env}: maintenance on (the notice at {path} is not readable JSON)")
    else:
        console.print(f"{env}: maintenance on since {notice['since']} by {notice['by']}: {notice['message']}")
