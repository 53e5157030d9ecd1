"""Plain-SQL migrations for one service database, driven by `mfe-deploy migrate`.

    DATABASE_URL=... python -m mfe_services.migrate --service auth apply|status|resolve|down [...]

Each pending file runs in its own transaction (with lock_timeout and statement_timeout) under a
PostgreSQL advisory lock, so concurrent runs apply each migration exactly once. History records id,
SHA-256, time and duration. An applied file that changed is refused; a failed migration is rolled back,
recorded, and blocks further runs until it is resolved (as Prisma's `migrate resolve`). `down --to ID`
undoes the applied migrations after ID, newest first, each with its `NNNN_name.down.sql` in one transaction
(recorded as rolled_back, so a later `apply` runs it again); one compatible with older code and without a
down file stays applied.
Output is one JSON document on stdout; exit 0 on success, 3 when refused or failed, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from mfe_services import envfile

HISTORY = "mfe_schema_migrations"
NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
DOWN = re.compile(r"^(\d{4})_[a-z0-9_]+\.down\.sql$")
LOCK_WAIT_SECONDS = 120.0


class Refused(Exception):
    def __init__(self, kind: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.kind, self.details = kind, details


@dataclass(frozen=True)
class Migration:
    id: str
    path: Path
    sql: str
    checksum: str
    down: str | None = None  # the SQL of NNNN_name.down.sql, which undoes it


def migrations_dir(service: str) -> Path:
    exact = os.environ.get("MFE_MIGRATIONS_FOLDER")  # a service of yours: its own folder
    if exact:
        return Path(exact)
    override = os.environ.get("MFE_MIGRATIONS_DIR")
    if override:
        return Path(override) / service
    packaged = Path(__file__).parent / "migrations" / service
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / service / "migrations"


def discover(folder: Path) -> list[Migration]:
    found = []
    downs: dict[str, str] = {}
    for path in sorted(folder.glob("*.sql")):
        if DOWN.match(path.name):
            downs[path.name.removesuffix(".down.sql")] = path.read_text(encoding="utf-8")
            continue
        if not NAME.match(path.name):
            raise Refused("bad_name", f"{path}: migration files are named NNNN_description.sql (and .down.sql)")
        raw = path.read_bytes()
        found.append(Migration(path.stem, path, raw.decode("utf-8"), hashlib.sha256(raw).hexdigest()))
    orphans = sorted(set(downs) - {m.id for m in found})
    if orphans:
        raise Refused("bad_name", f"{folder / (orphans[0] + '.down.sql')}: no {orphans[0]}.sql for it to undo")
    found = [dataclasses.replace(m, down=downs.get(m.id)) for m in found]
    numbers = [m.id[:4] for m in found]
    if len(set(numbers)) != len(numbers):
        raise Refused("bad_name", f"{folder}: two migrations share a number")
    return found


CLIENT_CHECK_MS = 2000


def lock_key(service: str) -> int:
    return int.from_bytes(hashlib.sha256(f"mfe-migrate:{service}".encode()).digest()[:8], "big", signed=True)


def _lock(conn: psycopg.Connection[Any], service: str) -> None:
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (lock_key(service),)).fetchone()
        if row and row[0]:
            return
        if time.monotonic() > deadline:
            raise Refused("lock_timeout", f"another migration of {service} held the lock for {LOCK_WAIT_SECONDS:.0f}s")
        time.sleep(0.1)


def _history(conn: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {HISTORY} (id text PRIMARY KEY, checksum text NOT NULL, "
        "status text NOT NULL CHECK (status IN ('applied', 'failed', 'rolled_back')), "
        "applied_at timestamptz NOT NULL DEFAULT now(), duration_ms integer NOT NULL DEFAULT 0, error text)"
    )
    rows = conn.execute(
        f"SELECT id, checksum, status, applied_at, duration_ms, error FROM {HISTORY} ORDER BY id"
    ).fetchall()
    return {
        r[0]: {
            "id": r[0],
            "checksum": r[1],
            "status": r[2],
            "applied_at": r[3].isoformat(),
            "duration_ms": r[4],
            "error": r[5],
        }
        for r in rows
    }


def _check(history: dict[str, dict[str, Any]], migrations: list[Migration], service: str, env_name: str) -> None:
    for record in history.values():
        if record["status"] == "failed":
            raise Refused(
                "blocked",
                f"migration {record['id']} of {service} failed ({record['error']}); fix it, then run "
                f"`mfe-deploy migrate resolve --env {env_name} --service {service} --rolled-back {record['id']}` "
                f"(or --applied {record['id']} if you applied it by hand)",
                migration=record["id"],
            )
    for m in migrations:
        applied_record = history.get(m.id)
        if applied_record and applied_record["status"] == "applied" and applied_record["checksum"] != m.checksum:
            raise Refused(
                "checksum_mismatch",
                f"{m.path}: applied migration {m.id} was edited after it ran (checksum differs); "
                "add a new migration instead",
                migration=m.id,
                file=str(m.path),
            )


# A migration that older code survives (expand-only) says so on a line of its own; `migrate lint` refuses the
# line on a file with a breaking statement, and a rollback across it needs no schema change.
COMPATIBLE = re.compile(r"^\s*--\s*mfe:\s*compatible\s*$", re.MULTILINE | re.IGNORECASE)


def status(conn: psycopg.Connection[Any], migrations: list[Migration]) -> list[dict[str, Any]]:
    history = _history(conn)
    conn.commit()
    rows = []
    for m in migrations:
        record = history.get(m.id)
        state = "pending" if record is None or record["status"] == "rolled_back" else record["status"]
        if record and state == "applied" and record["checksum"] != m.checksum:
            state = "changed"
        applied_at = record["applied_at"] if record else None
        compatible = bool(COMPATIBLE.search(m.sql))
        rows.append(
            {"id": m.id, "state": state, "applied_at": applied_at, "compatible": compatible, "down": m.down is not None}
        )
    known = {m.id for m in migrations}
    rows += [{"id": i, "state": "missing", "applied_at": r["applied_at"]} for i, r in history.items() if i not in known]
    return rows


def apply(
    conn: psycopg.Connection[Any],
    migrations: list[Migration],
    service: str,
    *,
    env_name: str,
    dry_run: bool,
    statement_timeout: str,
) -> dict[str, Any]:
    _lock(conn, service)
    try:
        history = _history(conn)
        conn.commit()
        _check(history, migrations, service, env_name)
        pending = [m for m in migrations if m.id not in history or history[m.id]["status"] == "rolled_back"]
        if dry_run:
            return {"applied": [], "pending": [{"id": m.id, "sql": m.sql} for m in pending]}
        applied: list[dict[str, Any]] = []
        for m in pending:
            started = time.monotonic()
            try:
                with conn.transaction():
                    conn.execute("SET LOCAL lock_timeout = '5s'")
                    conn.execute(f"SET LOCAL statement_timeout = '{statement_timeout}'")
                    conn.execute(m.sql.encode())  # no parameters: runs as a multi-statement script
                    conn.execute(
                        f"INSERT INTO {HISTORY} (id, checksum, status, duration_ms) VALUES (%s, %s, 'applied', %s) "
                        "ON CONFLICT (id) DO UPDATE SET checksum = EXCLUDED.checksum, status = 'applied', "
                        "applied_at = now(), duration_ms = EXCLUDED.duration_ms, error = NULL",
                        (m.id, m.checksum, int((time.monotonic() - started) * 1000)),
                    )
            except psycopg.Error as exc:
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                with conn.transaction():
                    conn.execute(
                        f"INSERT INTO {HISTORY} (id, checksum, status, error) VALUES (%s, %s, 'failed', %s) "
                        "ON CONFLICT (id) DO UPDATE SET status = 'failed', error = EXCLUDED.error, applied_at = now()",
                        (m.id, m.checksum, message),
                    )
                raise Refused(
                    "failed",
                    f"{m.path}: {message} (rolled back; nothing of it was applied)",
                    migration=m.id,
                    applied=applied,
                ) from None
            applied.append({"id": m.id, "duration_ms": int((time.monotonic() - started) * 1000)})
        done = [i for i, r in history.items() if r["status"] == "applied"] + [a["id"] for a in applied]
        # the schema's newest migration, applied now or before: the release records what its code runs against
        return {"applied": applied, "pending": [], "head": max(done, default=None)}
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (lock_key(service),))
        conn.commit()


def down(
    conn: psycopg.Connection[Any],
    migrations: list[Migration],
    service: str,
    to: str | None,
    *,
    env_name: str,
    statement_timeout: str,
) -> dict[str, Any]:
    """Undo the applied migrations after `to` (all when None), newest first. Refused before anything runs
    when one of them has no down file and is not compatible with older code; a down that fails rolls back
    (its migration stays applied) and stops there."""
    _lock(conn, service)
    try:
        history = _history(conn)
        conn.commit()
        _check(history, migrations, service, env_name)
        known = {m.id: m for m in migrations}
        applied = [i for i, r in history.items() if r["status"] == "applied" and (to is None or i > to)]
        after = sorted(applied, reverse=True)
        missing = [i for i in after if i not in known]
        if missing:
            raise Refused("missing", f"{', '.join(missing)} of {service} applied but not in this image's migrations")
        kept = [i for i in after if known[i].down is None and COMPATIBLE.search(known[i].sql)]
        lacking = [i for i in after if known[i].down is None and i not in kept]
        if lacking:
            raise Refused(
                "no_down",
                f"{', '.join(lacking)} of {service} cannot be undone: no {lacking[0]}.down.sql "
                "(and not marked compatible with older code)",
                migrations=lacking,
            )
        undone: list[dict[str, Any]] = []
        for i in after:
            m = known[i]
            if m.down is None:
                continue
            started = time.monotonic()
            try:
                with conn.transaction():
                    conn.execute("SET LOCAL lock_timeout = '5s'")
                    conn.execute(f"SET LOCAL statement_timeout = '{statement_timeout}'")
                    conn.execute(m.down.encode())
                    conn.execute(
                        f"UPDATE {HISTORY} SET status = 'rolled_back', applied_at = now(), duration_ms = %s, "
                        "error = NULL WHERE id = %s",
                        (int((time.monotonic() - started) * 1000), m.id),
                    )
            except psycopg.Error as exc:
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise Refused(
                    "failed",
                    f"{m.path.with_name(m.id + '.down.sql')}: {message} (rolled back; {m.id} stays applied)",
                    migration=m.id,
                    undone=undone,
                ) from None
            undone.append({"id": m.id, "duration_ms": int((time.monotonic() - started) * 1000)})
        return {"undone": undone, "kept": kept}
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (lock_key(service),))
        conn.commit()


def resolve(
    conn: psycopg.Connection[Any], migrations: list[Migration], service: str, migration_id: str, outcome: str
) -> dict[str, Any]:
    _lock(conn, service)
    try:
        history = _history(conn)
        record = history.get(migration_id)
        if record is None or record["status"] != "failed":
            raise Refused("not_failed", f"migration {migration_id} of {service} is not recorded as failed")
        checksum = next((m.checksum for m in migrations if m.id == migration_id), record["checksum"])
        conn.execute(
            f"UPDATE {HISTORY} SET status = %s, checksum = %s WHERE id = %s",
            (outcome, checksum, migration_id),
        )
        conn.commit()
        return {"resolved": migration_id, "status": outcome}
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (lock_key(service),))
        conn.commit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mfe_services.migrate")
    parser.add_argument("--service", required=True)
    parser.add_argument("--env-name", default="ENV")
    sub = parser.add_subparsers(dest="action", required=True)
    ap = sub.add_parser("apply")
    ap.add_argument("--dry-run", action="store_true")
    sub.add_parser("status")
    dp = sub.add_parser("down")
    dp.add_argument("--to", required=True, help="the migration id to go back to; `none`: undo all")
    rp = sub.add_parser("resolve")
    group = rp.add_mutually_exclusive_group(required=True)
    group.add_argument("--rolled-back", dest="rolled_back")
    group.add_argument("--applied")
    parser.add_argument("--env-file", help="the service's env file (its DATABASE_URL), read before the user switch")
    parser.add_argument("--user", help="UID[:GID] to run as once the env file is read (when started as root)")
    args = parser.parse_args(argv)
    envfile.load(args.env_file, args.user)
    url = os.environ.get("DATABASE_URL")
    if not url:
        print(json.dumps({"error": {"kind": "usage", "message": "DATABASE_URL is not set"}}))
        return 2
    out: dict[str, Any] = {"service": args.service}
    try:
        migrations = discover(migrations_dir(args.service))
        # A killed runner's session would otherwise run its statement to the end, holding its locks and the
        # advisory lock (up to statement_timeout): PostgreSQL checks the client's socket every 2 s instead.
        options = f"-c client_connection_check_interval={CLIENT_CHECK_MS}"
        name = f"mfe-migrate:{args.service}"
        with psycopg.connect(url, connect_timeout=5, application_name=name, options=options) as conn:
            out["database"] = conn.info.dbname
            if args.action == "status":
                out["migrations"] = status(conn, migrations)
            elif args.action == "apply":
                timeout = os.environ.get("MIGRATION_STATEMENT_TIMEOUT", "5min")
                out.update(
                    apply(
                        conn,
                        migrations,
                        args.service,
                        env_name=args.env_name,
                        dry_run=args.dry_run,
                        statement_timeout=timeout,
                    )
                )
            elif args.action == "down":
                timeout = os.environ.get("MIGRATION_STATEMENT_TIMEOUT", "5min")
                to = None if args.to == "none" else args.to
                out.update(down(conn, migrations, args.service, to, env_name=args.env_name, statement_timeout=timeout))
            else:
                outcome = "rolled_back" if args.rolled_back else "applied"
                out.update(resolve(conn, migrations, args.service, args.rolled_back or args.applied, outcome))
    except Refused as exc:
        out["error"] = {"kind": exc.kind, "message": str(exc), **exc.details}
        print(json.dumps(out))
        return 3
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "connection failed"
        out["error"] = {"kind": "connection", "message": first}
        print(json.dumps(out))
        return 3
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
