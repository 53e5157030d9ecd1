"""mfe-deploy admin grant|revoke: who is an administrator is decided by an operator, never by whoever
registers first with a listed address."""

from __future__ import annotations

import re
from typing import Annotated

import typer

from mfe_deploy.cli.app import EnvOption, JsonOption, Verbs, app, application

admin_app = typer.Typer(help="Grant or revoke the admin role of a registered user.", rich_markup_mode=None, cls=Verbs)
app.add_typer(admin_app, name="admin")

EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{2,}")
EmailArgument = Annotated[str, typer.Argument(help="The user's email address (registered first).")]


def role_sql(schema: str | None, email: str, role: str) -> str:
    from mfe_deploy.backups.pg import ident, literal

    table = f"{ident(schema)}.users" if schema else "users"
    return f"UPDATE {table} SET role = {literal(role)} WHERE email = {literal(email)} RETURNING role;"  # noqa: S608


def _set_role(env: str, email: str, role: str, action: str, as_json: bool = False) -> None:
    from mfe_deploy.backups import pg
    from mfe_deploy.cli.context import mutating, runtime
    from mfe_deploy.errors import MfeError, UsageError

    address = email.strip().lower()
    if not EMAIL.fullmatch(address):
        raise UsageError(f"{email!r} is not an email address")
    with mutating(env, action, {"email": address}):
        rt = runtime(env)
        (auth,) = pg.targets(rt.env, "auth")
        done = rt.runner.run(pg.sql(rt.postgres(), auth.database, role_sql(auth.schema, address, role)), timeout=60)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no error output"])[-1]
            raise MfeError(f"the auth database of {env} did not answer ({tail})")
        if role not in done.stdout.split():
            raise MfeError(f"no user {address} in {env}: the user registers first (POST /api/auth/register)")
    if as_json:
        application().console.json({"env": env, "email": address, "role": role})
        return
    application().console.print(f"{address}: {role} in {env} (from the next login on)")


@admin_app.command("grant")
def grant(email: EmailArgument, env: EnvOption, as_json: JsonOption = False) -> None:
    """Make a registered user an administrator."""
    _set_role(env, email, "admin", "admin grant", as_json)


@admin_app.command("revoke")
def revoke(email: EmailArgument, env: EnvOption, as_json: JsonOption = False) -> None:
    """Make an administrator an ordinary user again."""
    _set_role(env, email, "user", "admin revoke", as_json)
