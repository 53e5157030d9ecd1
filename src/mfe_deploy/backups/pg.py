"""PostgreSQL as the backups see it: where each service's data lives, the tool command lines, the SQL,
and parsers for what the tools answer. Pure: the runtimes say how a tool is reached (local binaries
over loopback, or `docker exec` into the postgres container)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mfe_deploy.config.models import Environment
from mfe_deploy.errors import ConfigError, Problem
from mfe_deploy.exec.command import Command
from mfe_deploy.exec.secret import Secret

END = "__MFE_END__"


class Postgres(Protocol):
    """How to run a PostgreSQL client tool against the environment's cluster, as its superuser."""

    def tool(self, name: str, *args: str, connect: bool = True) -> Command: ...


@dataclass(frozen=True)
class LocalPostgres:
    """The local runtime: the client tools next to the server binaries, over loopback."""

    bin: Path
    port: int
    superuser: str
    password: Secret

    def tool(self, name: str, *args: str, connect: bool = True) -> Command:
        where = ("-h", "127.0.0.1", "-p", str(self.port), "-U", self.superuser) if connect else ()
        return Command((str(self.bin / name), *where, *args), env={"PGPASSWORD": self.password})


@dataclass(frozen=True)
class ContainerPostgres:
    """The swarm runtime: the client tools inside the postgres task's container (`docker exec`), on the
    engine the runtime's runner talks to. The password travels in the environment (`-e PGPASSWORD`)."""

    container: str
    superuser: str
    password: Secret

    def tool(self, name: str, *args: str, connect: bool = True) -> Command:
        where = ("-h", "127.0.0.1", "-U", self.superuser) if connect else ()
        argv = ("docker", "exec", "-i", "-e", "PGPASSWORD", self.container, name, *where, *args)
        return Command(argv, env={"PGPASSWORD": self.password})


@dataclass(frozen=True)
class ComposePostgres:
    """The docker runtime: the client tools inside the postgres container of the compose project, found when a
    tool runs (`find`), reached with `docker exec` so that the database network stays internal. Not `compose
    exec`: compose 2.40 on Docker 20.10 exits 0 whatever the command did, and a failed pg_dump would pass."""

    find: Callable[[], str]
    superuser: str
    password: Secret

    def tool(self, name: str, *args: str, connect: bool = True) -> Command:
        return ContainerPostgres(self.find(), self.superuser, self.password).tool(name, *args, connect=connect)


@dataclass(frozen=True)
class Target:
    service: str
    database: str
    schema: str | None  # the shared layout: the service's schema in the one database
    role: str

    @property
    def file(self) -> str:
        return f"{self.service}.dump"


def targets(env: Environment, only: str | None = None) -> list[Target]:
    if only is not None and only not in env.database_services:
        known = ", ".join(env.database_services)
        raise ConfigError([Problem("--service", None, "", f"{only!r} has no database; one of: {known}")])
    shared = env.database.layout == "shared"
    return [
        Target(s, env.database_name(s), s if shared else None, env.database_role(s))
        for s in env.database_services
        if only in (None, s)
    ]


SCRATCH = "mfe_verify_"
SCRATCH_STALE_SECONDS = 3600
_SCRATCH_TIME = re.compile(r"mfe_verify_([0-9]{10})_")


def scratch_name(service: str, now: int, token: str) -> str:
    """A verify's scratch database: the prefix and the time it was made, so that what a killed verify
    left is recognised, and told from a verify still running."""
    return f"{SCRATCH}{now}_{service}_{token}"


SCRATCH_LIST_SQL = "SELECT datname FROM pg_database WHERE starts_with(datname, 'mfe_verify_') ORDER BY 1"


def stale_scratch(names: list[str], now: int) -> list[str]:
    """Scratch databases older than an hour (or named before the time was part of the name)."""
    stale = []
    for name in names:
        made = _SCRATCH_TIME.match(name)
        if name.startswith(SCRATCH) and (made is None or now - int(made[1]) > SCRATCH_STALE_SECONDS):
            stale.append(name)
    return stale


def literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def ident(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def counts_sql(schema: str | None) -> str:
    """Exact row counts of every table (of one schema, or of every user schema), one query."""
    where = (
        f"n.nspname = {literal(schema)}"
        if schema
        else "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'"
    )
    # Only literal() and constants are interpolated.
    return (
        "SELECT 'count', n.nspname || '.' || c.relname, (xpath('/row/c/text()', query_to_xml("  # noqa: S608
        "format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE c.relkind IN ('r', 'p') AND {where} ORDER BY 2;\n"
    )


def snapshot_script() -> str:
    """Sent to a psql session that stays open while pg_dump imports the snapshot; the same session then
    counts the rows (counts_script) in that snapshot, while pg_dump runs: exactly the rows dumped."""
    return (
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\n"
        "SELECT 'snapshot', pg_export_snapshot();\n"
        "SELECT 'version', current_setting('server_version');\n"
        f"\\echo {END}\n"
    )


def counts_script(schema: str | None) -> str:
    return f"{counts_sql(schema)}\\echo {END}\n"


@dataclass(frozen=True)
class SessionAnswer:
    snapshot: str
    server_version: str


def parse_session(lines: list[str]) -> SessionAnswer:
    """Lines of `psql -A -t -F TAB` output up to the END marker."""
    snapshot = version = ""
    for line in lines:
        parts = line.rstrip("\n").split("\t")
        if parts[0] == "snapshot" and len(parts) == 2:
            snapshot = parts[1]
        elif parts[0] == "version" and len(parts) == 2:
            version = parts[1]
    if not snapshot:
        raise ValueError("psql did not export a snapshot")
    return SessionAnswer(snapshot, version)


def parse_counts(text: str) -> dict[str, int]:
    return {p[1]: int(p[2]) for line in text.splitlines() if len(p := line.split("\t")) == 3 and p[0] == "count"}


PSQL = ("-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1")


def session(pg: Postgres, database: str) -> Command:
    return pg.tool("psql", *PSQL, "-d", database)


def sql(pg: Postgres, database: str, statement: str) -> Command:
    return pg.tool("psql", *PSQL, "-d", database, "-c", statement)


def dump(pg: Postgres, target: Target, snapshot: str) -> Command:
    schema = ("-n", target.schema) if target.schema else ()
    return pg.tool("pg_dump", "-Fc", f"--snapshot={snapshot}", *schema, "-d", target.database)


def dump_globals(pg: Postgres) -> Command:
    return pg.tool("pg_dumpall", "--globals-only", "--no-role-passwords", "-l", "postgres")


def restore(pg: Postgres, database: str, *, clean: bool) -> Command:
    """Reads the archive on stdin. One transaction, stop at the first error: a failure changes nothing."""
    mode = ("--clean", "--if-exists") if clean else ("--no-owner", "--no-acl")
    return pg.tool("pg_restore", *mode, "--single-transaction", "--exit-on-error", "-d", database)


def toc(pg: Postgres) -> Command:
    return pg.tool("pg_restore", "--list", connect=False)


def dump_version(pg: Postgres) -> Command:
    return pg.tool("pg_dump", "--version", connect=False)


_ENTRY = re.compile(r"^\d+; \d+ \d+ (?P<rest>.+)$")
_TWO_WORD_TYPES = ("TABLE DATA", "SEQUENCE SET", "SEQUENCE OWNED BY", "FK CONSTRAINT", "DEFAULT ACL")


@dataclass(frozen=True)
class Toc:
    database: str
    schemas: frozenset[str]


def parse_toc(text: str) -> Toc:
    """`pg_restore --list`: the database the archive was dumped from and the schemas its objects live in."""
    database = ""
    schemas: set[str] = set()
    for line in text.splitlines():
        if line.startswith(";") and "dbname:" in line:
            database = line.split("dbname:", 1)[1].strip()
            continue
        match = _ENTRY.match(line)
        if not match:
            continue
        rest = match["rest"]
        kind = next((t for t in _TWO_WORD_TYPES if rest.startswith(t + " ")), rest.split(" ", 1)[0])
        fields = rest[len(kind) :].split()
        if kind in ("SCHEMA", "EXTENSION", "DATABASE", "ENCODING", "STDSTRINGS", "SEARCHPATH"):
            if kind == "SCHEMA" and len(fields) >= 2:
                schemas.add(fields[1])
            continue
        if fields and fields[0] != "-":
            schemas.add(fields[0])
    return Toc(database, frozenset(schemas))


def toc_problem(found: Toc, target: Target) -> str | None:
    """Why an archive must not be restored into this target (it came from elsewhere), or None."""
    if found.database and found.database != target.database:
        return f"the archive was dumped from database {found.database!r}, not {target.database!r}"
    if target.schema is not None:
        others = sorted(found.schemas - {target.schema})
        if others:
            return f"the archive holds schema(s) {', '.join(others)}, not only {target.schema!r}"
    return None


def terminate_sql(role: str) -> str:
    return (  # literal() quotes the role
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "  # noqa: S608
        f"WHERE usename = {literal(role)} AND pid <> pg_backend_pid();"
    )
