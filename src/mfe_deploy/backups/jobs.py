"""Backup, verify and restore: the thin shell that runs the tools of `pg` through a runtime and streams
their bytes to and from the backups folder (hashing, and encrypting when configured, on the way)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePath
from typing import IO, Any, Protocol

from mfe_deploy import __version__
from mfe_deploy.backups import crypt, pg
from mfe_deploy.backups.offsite import OffsiteError, OffsiteStore, for_env
from mfe_deploy.backups.store import BackupError, DatabaseEntry, Entry, FileEntry, Manifest, Store, fsync_dir, new_id
from mfe_deploy.config.models import Environment
from mfe_deploy.config.secrets import Secrets
from mfe_deploy.console import Console, Progress, Task, human_size
from mfe_deploy.exec.command import Command
from mfe_deploy.exec.host import Files
from mfe_deploy.exec.runner import Process, Runner
from mfe_deploy.exec.secret import Secret

BLOCK = 1 << 18
MIGRATION_HISTORY = "mfe_schema_migrations"  # the services' migration runner's table
GLOBALS = "globals.sql"


class ServiceControl(Protocol):
    """What a runtime offers a restore: stop the services that use a database, start them healthy."""

    def stop_services(self, names: Sequence[str]) -> None: ...
    def start_services(self, names: Sequence[str], timeout: float) -> None: ...


@dataclass(frozen=True)
class Verified:
    ok: bool
    problems: list[str]
    tables: int
    rows: int
    seconds: float


@dataclass
class Backups:
    env: Environment
    postgres: pg.Postgres
    runner: Runner
    store: Store
    console: Console
    passphrase: Secret | None = None
    release: dict[str, Any] | None = None
    offsite: OffsiteStore | None = None  # backup.offsite: each backup is copied there as it completes

    @classmethod
    def of(
        cls,
        env: Environment,
        postgres: pg.Postgres,
        runner: Runner,
        console: Console,
        secrets: Secrets,
        project_dir: Path,
        state: tuple[Files, PurePath],
        release: dict[str, Any] | None,
    ) -> Backups:
        """An environment's backups, put together here only: the project's backups folder on this machine,
        the offsite store (with the state folder whose ledger and audit log go up with each backup), the
        passphrase, and the release (the last good one) each backup belongs to."""
        store = Store.of(project_dir, env)
        offsite = for_env(env, secrets, project_dir, state)
        return cls(env, postgres, runner, store, console, secrets.backup_passphrase, release, offsite)

    # --- plumbing ------------------------------------------------------------------------------------
    @staticmethod
    def _tail(err: IO[bytes]) -> str:
        err.seek(0)
        lines = [line for line in err.read().decode(errors="replace").splitlines() if line.strip()]
        return lines[-1].strip() if lines else "no error output"

    def _run_sql(self, database: str, statement: str, timeout: float = 120) -> str:
        done = self.runner.run(pg.sql(self.postgres, database, statement), timeout=timeout)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no error output"])[-1]
            raise BackupError(f"psql on {database} failed: {tail}")
        return done.stdout

    def check_reachable(self) -> None:
        done = self.runner.run(pg.sql(self.postgres, "postgres", "SELECT 1"), timeout=60)
        if done.returncode != 0:
            raise self._unreachable((done.stderr.strip().splitlines() or ["no answer"])[-1])

    def _unreachable(self, why: str) -> BackupError:
        return BackupError(
            f"the PostgreSQL of {self.env.name} does not answer ({why}); "
            f"start it with `mfe-deploy up --env {self.env.name}`"
        )

    def _capture(self, command: Command, path: Path, task: Task, what: str) -> tuple[int, str]:
        """Stream a tool's stdout into `path`: written as path.tmp (0600), fsynced, then renamed."""
        with tempfile.TemporaryFile() as err:
            proc = self.runner.spawn(command, stderr=err)
            try:
                return self._write(proc, path, task)
            except BackupError:
                raise BackupError(f"{what} failed: {self._tail(err)}") from None
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                if proc.stdout is not None:  # closed here, not by a later garbage collection
                    proc.stdout.close()

    def _write(self, proc: Process, path: Path, task: Task) -> tuple[int, str]:
        assert proc.stdout is not None
        tmp = path.with_name(path.name + ".tmp")
        digest, size = hashlib.sha256(), 0
        encryptor = None
        if self.passphrase:
            encryptor = crypt.Encryptor(self.passphrase.reveal())
        with tmp.open("xb") as out:
            tmp.chmod(0o600)

            def put(data: bytes) -> None:
                nonlocal size
                if data:
                    out.write(data)
                    digest.update(data)
                    size += len(data)

            while chunk := proc.stdout.read(BLOCK):
                put(encryptor.update(chunk) if encryptor else chunk)
                task.advance(len(chunk))
            if encryptor:
                put(encryptor.finalize())
            out.flush()
            os.fsync(out.fileno())
        if proc.wait() != 0:
            tmp.unlink(missing_ok=True)
            raise BackupError("the dump process failed")
        tmp.rename(path)
        return size, digest.hexdigest()

    def _plain_chunks(self, path: Path, task: Task | None, encrypted: bool) -> Iterator[bytes]:
        """The bytes of a backup file as the tools need them. With a passphrase configured every file is
        decrypted, whatever the manifest says: a plaintext archive beside an edited manifest fails here."""
        if encrypted and self.passphrase is None:
            raise crypt.DecryptionFailed("the backup is encrypted: set secrets.backup_passphrase")
        decryptor = crypt.Decryptor(self.passphrase.reveal()) if self.passphrase else None
        with path.open("rb") as handle:
            while chunk := handle.read(BLOCK):
                if task is not None:
                    task.advance(len(chunk))
                yield decryptor.update(chunk) if decryptor else chunk
        if decryptor:
            yield decryptor.finalize()

    def _pipe(self, command: Command, entry: Entry, name: str, task: Task | None) -> tuple[int, bytes, str]:
        """Feed a backup file to a tool's stdin; return its exit code, stdout and last stderr line."""
        with tempfile.TemporaryFile() as err:
            return self._feed(command, entry, name, task, err)

    def _feed(
        self, command: Command, entry: Entry, name: str, task: Task | None, err: IO[bytes]
    ) -> tuple[int, bytes, str]:
        proc = self.runner.spawn(command, stdin=True, stderr=err)
        assert proc.stdin is not None and proc.stdout is not None
        out: list[bytes] = []
        reader = threading.Thread(target=lambda: out.append(proc.stdout.read() if proc.stdout else b""))
        reader.start()
        failure: str | None = None
        try:
            assert entry.manifest is not None
            for chunk in self._plain_chunks(entry.path / name, task, bool(entry.manifest.encryption)):
                proc.stdin.write(chunk)
        except BrokenPipeError:
            pass  # the tool stopped reading: its exit code and stderr say why
        except crypt.DecryptionFailed as exc:
            failure = str(exc)
            proc.kill()
        finally:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
        code = proc.wait()
        reader.join()
        if proc.stdout is not None:
            proc.stdout.close()
        tail = failure or self._tail(err)
        return (code if failure is None else 1), b"".join(out), tail

    # --- backup --------------------------------------------------------------------------------------
    def _dump_one(self, target: pg.Target, folder: Path, progress: Progress) -> tuple[DatabaseEntry, FileEntry, str]:
        with tempfile.TemporaryFile() as session_err:
            return self._dump_in_session(target, folder, progress, session_err)

    def _dump_in_session(
        self, target: pg.Target, folder: Path, progress: Progress, session_err: IO[bytes]
    ) -> tuple[DatabaseEntry, FileEntry, str]:
        session = self.runner.spawn(pg.session(self.postgres, target.database), stdin=True, stderr=session_err)
        assert session.stdin is not None and session.stdout is not None

        def failed() -> BackupError:
            session.wait(timeout=30)
            tail = self._tail(session_err)
            if any(m in tail for m in ("connection to server", "Is the server running", "is not running")):
                return self._unreachable(tail)
            return BackupError(f"{target.service}: psql on {target.database} failed: {tail}")

        def send(data: bytes) -> None:
            """To the session; a psql that has exited (the server ended it, say) is an error naming why."""
            assert session.stdin is not None
            try:
                session.stdin.write(data)
                session.stdin.flush()
            except BrokenPipeError:
                raise failed() from None

        def ask(script: str) -> list[str]:
            assert session.stdout is not None
            send(script.encode())
            lines = []
            while (line := session.stdout.readline().decode()) and line.strip() != pg.END:
                lines.append(line)
            if line:
                return lines
            raise failed()

        try:
            answer = pg.parse_session(ask(pg.snapshot_script()))
            task = progress.task(f"dump {target.service}")
            # The counts are sent first: they run in the session's snapshot while pg_dump reads the same one.
            send(pg.counts_script(target.schema).encode())
            dump = pg.dump(self.postgres, target, answer.snapshot)
            size, sha = self._capture(
                dump, folder / target.file, task, f"{target.service}: pg_dump of {target.database}"
            )
            tables = pg.parse_counts("".join(ask("")))
            task.finish(f"{sum(tables.values())} rows in {len(tables)} tables")
            send(b"COMMIT;\n")
            with contextlib.suppress(BrokenPipeError):
                session.stdin.close()
            session.wait(timeout=60)
        finally:
            if session.poll() is None:
                session.kill()
                session.wait()
            for pipe in (session.stdin, session.stdout):  # closed here, not by a later garbage collection
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
        db = DatabaseEntry(target.service, target.database, target.schema, tables)
        return db, FileEntry(target.file, size, sha, "pg_dump-custom", target.service), answer.server_version

    def _dump_globals(self, folder: Path, progress: Progress) -> FileEntry:
        task = progress.task("dump globals (roles, no passwords)")
        size, sha = self._capture(pg.dump_globals(self.postgres), folder / GLOBALS, task, "pg_dumpall --globals-only")
        task.finish("roles and tablespaces")
        return FileEntry(GLOBALS, size, sha, "pg_dumpall-globals")

    def backup(self, targets: Sequence[pg.Target], kind: str = "manual") -> Manifest:
        """A backup into the local folder, then (backup.offsite) its copy in the offsite store: a failed
        upload fails the backup with one line, the local copy kept and listed."""
        with self.store.locked():  # held through the upload: a prune never takes it for one cut short
            warming = None
            if self.offsite is not None:  # the S3 client (a quarter of a second to build) while the dumps run
                warming = threading.Thread(target=self._warm_offsite, daemon=True)
                warming.start()
            manifest = self._backup(targets, kind)
            if self.offsite is not None:
                if warming is not None:
                    warming.join()
                self.send_offsite(self.store.get(manifest.id))
        return manifest

    def _warm_offsite(self) -> None:
        """Build the client early; a failure here is the upload's to report, in one line, not a thread's."""
        with contextlib.suppress(Exception):
            assert self.offsite is not None
            self.offsite.client()

    def send_offsite(self, entry: Entry) -> None:
        assert self.offsite is not None and entry.manifest is not None
        started = time.monotonic()
        try:
            with self.console.progress() as progress:
                task = progress.task(f"uploading {entry.id} to {self.offsite.where()}", entry.manifest.size)
                self.offsite.upload(entry, task)
                self.offsite.put_state()
                task.finish(f"each part's SHA-256 checked by the store ({time.monotonic() - started:.1f}s)")
        except OffsiteError as exc:
            raise OffsiteError(
                f"backup {entry.id} is kept in {entry.path}, but its offsite copy failed: {exc}; "
                f"`mfe-deploy backup sync --env {self.env.name}` uploads it"
            ) from None

    def _backup(self, targets: Sequence[pg.Target], kind: str) -> Manifest:
        started = datetime.now(UTC)
        backup_id = new_id(started)
        folder = self.store.begin(backup_id)
        self.console.info(
            f"backup {backup_id}: {', '.join(t.service for t in targets)} + globals"
            f"{' (encrypted)' if self.passphrase else ''}"
        )
        try:
            with self.console.progress() as progress, ThreadPoolExecutor(len(targets) + 2) as pool:
                version = pool.submit(self.runner.run, pg.dump_version(self.postgres), timeout=60)
                globals_job = pool.submit(self._dump_globals, folder, progress)
                jobs = [pool.submit(self._dump_one, t, folder, progress) for t in targets]
                results = [j.result() for j in jobs]
                files = {r[1].name: r[1] for r in results}
                files[GLOBALS] = globals_job.result()
            fsync_dir(folder)
            manifest = Manifest(
                id=backup_id,
                env=self.env.name,
                kind=kind,
                started_at=started.isoformat(timespec="milliseconds"),
                finished_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
                postgresql={"server": results[0][2], "pg_dump": version.result().stdout.strip()},
                layout=self.env.database.layout,
                files=files,
                databases={r[0].service: r[0] for r in results},
                release=self.release,
                tool={"name": "mfe-deploy", "version": __version__},
                encryption={"scheme": crypt.SCHEME, "key": "secrets.backup_passphrase"} if self.passphrase else None,
            )
            if self.passphrase:
                mac = crypt.manifest_mac(self.passphrase.reveal(), manifest.to_json())
                manifest = dataclasses.replace(manifest, mac=mac)
            self.store.commit(folder, manifest)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)  # a clean failure leaves nothing; a kill leaves .partial
            raise
        return manifest

    def count(self, target: pg.Target) -> dict[str, int]:
        """Exact row counts of the target's tables, now."""
        return pg.parse_counts(self._run_sql(target.database, pg.counts_sql(target.schema), timeout=600))

    # --- verify ----------------------------------------------------------------------------------------
    def checksums(self, entry: Entry, names: Sequence[str] | None = None) -> list[str]:
        """Every file of the backup (or the named ones) against its manifest size and SHA-256."""
        assert entry.manifest is not None
        problems = []
        wanted = [f for f in entry.manifest.files.values() if names is None or f.name in names]
        with self.console.progress() as progress:
            for f in wanted:
                path = entry.path / f.name
                task = progress.task(f"checksum {f.name}", total=f.size)
                digest, size = hashlib.sha256(), 0
                try:
                    with path.open("rb") as handle:
                        while chunk := handle.read(BLOCK):
                            digest.update(chunk)
                            size += len(chunk)
                            task.advance(len(chunk))
                except FileNotFoundError:
                    problems.append(f"{f.name}: missing")
                    continue
                if size != f.size or digest.hexdigest() != f.sha256:
                    problems.append(
                        f"{f.name}: SHA-256 mismatch (the file is corrupt: {size} bytes, {f.size} recorded)"
                    )
                    task.finish("CORRUPT")
                else:
                    task.finish("ok")
        return problems

    def authentic(self, entry: Entry) -> None:
        """With a passphrase configured, only a backup whose manifest it authenticates (an encrypted one,
        made with it) is read: the manifest is a file anyone who can write the backups folder can edit."""
        manifest = entry.manifest
        assert manifest is not None
        if self.passphrase is None:
            return
        unsealed = dataclasses.replace(manifest, mac=None).to_json()
        if manifest.encryption is None or manifest.mac is None:
            why = "is not encrypted" if manifest.encryption is None else "has no manifest MAC"
        elif not crypt.manifest_mac_ok(self.passphrase.reveal(), unsealed, manifest.mac):
            why = "has a manifest the passphrase does not authenticate (altered, or another passphrase's)"
        else:
            return
        raise BackupError(
            f"backup {entry.id} {why}, and secrets.backup_passphrase is set: refused, nothing was changed"
        )

    def verify(self, entry: Entry) -> Verified:
        assert entry.manifest is not None
        started = time.monotonic()
        problems = self.checksums(entry)
        tables = rows = 0
        if not problems and entry.manifest.encryption and not self._key_opens(entry):
            # Every SHA-256 matched: the files are as written. A wrong key says nothing of the backup.
            raise BackupError(
                f"the passphrase does not open backup {entry.id}; its files are intact (every "
                "SHA-256 matches) and no verdict was recorded: verify with the passphrase it was "
                "made with"
            )
        self.authentic(entry)
        if not problems:
            self.check_reachable()
            dropped = self.drop_leftover_scratch()
            if dropped:
                self.console.info(
                    f"dropped {len(dropped)} scratch database(s) an interrupted verify left: " + ", ".join(dropped)
                )
            databases = list(entry.manifest.databases.values())
            with self.console.progress() as progress, ThreadPoolExecutor(len(databases) or 1) as pool:
                for found in pool.map(lambda d: self._verify_one(entry, d, progress), databases):
                    problems += found
            tables = sum(len(d.tables) for d in databases)
            rows = sum(sum(d.tables.values()) for d in databases)
        result = Verified(not problems, problems, tables, rows, time.monotonic() - started)
        self.store.mark_verified(
            entry,
            {
                "ok": result.ok,
                "time": datetime.now(UTC).isoformat(timespec="seconds"),
                "problems": problems,
                "tables": tables,
                "rows": rows,
            },
        )
        return result

    def drop_leftover_scratch(self) -> list[str]:
        """Scratch databases of verifies that were killed: older than an hour, and not in use (a plain DROP
        DATABASE fails on a database with sessions, so a verify still running keeps its own)."""
        listed = self._run_sql("postgres", pg.SCRATCH_LIST_SQL)
        dropped = []
        for name in pg.stale_scratch(listed.split(), int(time.time())):
            try:
                self._run_sql("postgres", f"DROP DATABASE IF EXISTS {pg.ident(name)}")
            except BackupError:
                continue
            dropped.append(name)
        return dropped

    def _key_opens(self, entry: Entry) -> bool:
        assert entry.manifest is not None
        if self.passphrase is None:
            return False
        name = next(iter(sorted(entry.manifest.files)))
        with (entry.path / name).open("rb") as handle:
            head = handle.read(crypt.head_size())
        return crypt.opens(head, self.passphrase.reveal(), whole=len(head) < crypt.head_size())

    def _verify_one(self, entry: Entry, db: DatabaseEntry, progress: Progress) -> list[str]:
        """Restore into a scratch database, count every table, compare with the manifest, drop it."""
        scratch = pg.scratch_name(db.service, int(time.time()), secrets.token_hex(3))
        self._run_sql("postgres", f"CREATE DATABASE {pg.ident(scratch)}")
        try:
            task = progress.task(f"restore {db.service} into a scratch database", total=self._file_size(entry, db))
            code, _, tail = self._pipe(
                pg.restore(self.postgres, scratch, clean=False), entry, f"{db.service}.dump", task
            )
            if code != 0:
                task.finish("FAILED")
                return [f"{db.service}: the dump does not restore: {tail}"]
            counted = pg.parse_counts(self._run_sql(scratch, pg.counts_sql(db.schema), timeout=600))
            task.finish(f"{sum(counted.values())} rows in {len(counted)} tables")
            return [f"{db.service}: {line}" for line in compare_counts(db.tables, counted)]
        finally:
            self._run_sql("postgres", f"DROP DATABASE IF EXISTS {pg.ident(scratch)} WITH (FORCE)")

    @staticmethod
    def _file_size(entry: Entry, db: DatabaseEntry) -> int:
        assert entry.manifest is not None
        return entry.manifest.files[f"{db.service}.dump"].size

    # --- restore ---------------------------------------------------------------------------------------
    def preflight(self, entry: Entry, only: str | None) -> list[pg.Target]:
        """Everything that can be checked before anything changes: checksums, and that each archive came
        from the database it would replace."""
        manifest = entry.manifest
        assert manifest is not None
        if manifest.env != self.env.name:
            raise BackupError(f"backup {entry.id} is of environment {manifest.env!r}, not {self.env.name!r}")
        if manifest.encryption and self.passphrase is None:
            raise BackupError(f"backup {entry.id} is encrypted: set secrets.backup_passphrase to restore it")
        self.authentic(entry)
        wanted = pg.targets(self.env, only)
        targets = [t for t in wanted if t.service in manifest.databases]
        if not targets:
            raise BackupError(f"backup {entry.id} holds no database of {only}")
        problems = self.checksums(entry, [t.file for t in targets])
        if problems:
            raise BackupError(f"backup {entry.id} is corrupt, nothing was changed: " + "; ".join(problems))
        for t in targets:
            recorded = manifest.databases[t.service]
            if (recorded.database, recorded.schema) != (t.database, t.schema):
                held, used = f"{recorded.database}/{recorded.schema or '*'}", f"{t.database}/{t.schema or '*'}"
                raise BackupError(
                    f"{t.service}: the backup holds {held}, this environment uses {used}; nothing was changed"
                )

        def check(t: pg.Target) -> str | None:
            code, out, tail = self._pipe(pg.toc(self.postgres), entry, t.file, None)
            if code != 0:
                return f"{t.service}: the archive cannot be read: {tail}"
            return pg.toc_problem(pg.parse_toc(out.decode(errors="replace")), t)

        with ThreadPoolExecutor(len(targets)) as pool:
            bad = [p for p in pool.map(check, targets) if p]
        if bad:
            raise BackupError(
                f"backup {entry.id} does not match this environment, nothing was changed: " + "; ".join(bad)
            )
        return targets

    def restore_into(self, entry: Entry, targets: Sequence[pg.Target]) -> dict[str, Failure]:
        """Restore each target in one transaction (concurrently). Returns the failures by service: rolled
        back (pg_restore failed, the database is as it was) or committed (the rows differ afterwards)."""
        assert entry.manifest is not None
        manifest = entry.manifest
        for t in targets:
            self._run_sql(t.database, pg.terminate_sql(t.role))

        def one(t: pg.Target, progress: Progress) -> Failure | None:
            task = progress.task(f"restore {t.service}", total=manifest.files[t.file].size)
            code, _, tail = self._pipe(pg.restore(self.postgres, t.database, clean=True), entry, t.file, task)
            if code != 0:
                task.finish("FAILED, rolled back")
                return Failure(f"pg_restore failed and its transaction rolled back: {tail}", committed=False)
            counted = pg.parse_counts(self._run_sql(t.database, pg.counts_sql(t.schema), timeout=600))
            recorded = manifest.databases[t.service].tables
            mismatch = compare_counts(recorded, {k: v for k, v in counted.items() if k in recorded})
            task.finish(f"{sum(recorded.values())} rows" if not mismatch else "ROW COUNTS DIFFER")
            return Failure("restored, but " + "; ".join(mismatch), committed=True) if mismatch else None

        with self.console.progress() as progress, ThreadPoolExecutor(len(targets)) as pool:
            results = list(pool.map(lambda t: one(t, progress), targets))
        return {t.service: r for t, r in zip(targets, results, strict=True) if r}


@dataclass(frozen=True)
class Failure:
    message: str
    committed: bool


@dataclass(frozen=True)
class Restored:
    backup: str
    pre_restore: str
    services: list[str]
    seconds: float


def restore(
    backups: Backups,
    entry: Entry,
    only: str | None,
    control: ServiceControl,
    timeout: float,
    then: Callable[[list[str]], None] | None = None,
) -> Restored:
    """Checks first (nothing changed when they fail), then the affected services are stopped (the fence:
    from here on no write can be acknowledged), then the pre-restore backup, then the restore. A failed
    target rolls back on its own (one transaction); the targets that were already restored are put back
    from the pre-restore backup, which holds every write acknowledged before the fence. The services
    start again as they were, or, after a restore that succeeded, by `then` (a rollback starts older code)."""
    started = time.monotonic()
    restored = False
    targets = backups.preflight(entry, only)
    services = [t.service for t in targets]
    stopped: list[str] = []
    try:
        backups.console.info(f"stopping {', '.join(services)}")
        stopped = services  # even a stop that fails half-way is followed by a start
        control.stop_services(services)
        backups.console.info(f"taking a pre-restore backup of {', '.join(services)}")
        pre = backups.backup(targets, kind="pre-restore")
        pre_entry = backups.store.get(pre.id)
        failures = backups.restore_into(entry, targets)
        if failures:
            # Everything that changed goes back: the successes, and restores whose result was wrong.
            done = [t for t in targets if t.service not in failures or failures[t.service].committed]
            undo = backups.restore_into(pre_entry, done) if done else {}
            why = "; ".join(f"{s}: {f.message}" for s, f in failures.items())
            if undo:
                raise BackupError(
                    f"restore of {entry.id} failed ({why}); putting back {', '.join(undo)} from the "
                    f"pre-restore backup {pre.id} failed too: restore it by hand"
                )
            back = f"; {', '.join(t.service for t in done)} put back from pre-restore backup {pre.id}" if done else ""
            raise BackupError(f"restore of {entry.id} failed, the databases are as they were ({why}){back}")
        restored = True
    finally:
        if stopped and restored and then is not None:
            then(stopped)
        elif stopped:
            backups.console.info(f"starting {', '.join(stopped)}")
            control.start_services(stopped, timeout)
    return Restored(entry.id, pre.id, services, time.monotonic() - started)


def compare_counts(recorded: dict[str, int], counted: dict[str, int]) -> list[str]:
    out = []
    for table in sorted(set(recorded) | set(counted)):
        want, got = recorded.get(table), counted.get(table)
        if want != got:
            out.append(
                f"{table}: {got if got is not None else 'missing'} rows, "
                f"{want if want is not None else 'none'} recorded"
            )
    return out


def lost(restored: DatabaseEntry, before: DatabaseEntry) -> list[str]:
    """What a restore threw away, table by table: the rows the database held at the fence (the pre-restore
    backup's count) beyond the restored backup's. A changed or deleted row is not counted, nor the
    migration history's rows (the restore takes the schema back too: that is the point)."""
    out = []
    for table in sorted(set(restored.tables) | set(before.tables)):
        if table.rsplit(".", 1)[-1] == MIGRATION_HISTORY:
            continue
        gone = before.tables.get(table, 0) - restored.tables.get(table, 0)
        if gone > 0:
            out.append(f"{table}: {gone} row{'s' if gone != 1 else ''}")
    return out


def summary(manifest: Manifest, seconds: float) -> str:
    return (
        f"backup {manifest.id}: {len(manifest.databases)} database(s), {manifest.rows} rows, "
        f"{human_size(manifest.size)} in {seconds:.1f}s"
    )
