"""mfe-deploy backup [list|verify|sync|prune|schedule|check], mfe-deploy restore and mfe-deploy recover."""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mfe_deploy.cli.app import EnvOption, GroupOptions, JsonOption, ReleaseOption, app, application, host, release
from mfe_deploy.cli.context import (
    DestOption,
    ForceUnlock,
    InstallOption,
    LockWait,
    RuntimeOption,
    SecretsFileOption,
    SystemdOption,
    audited,
    mutating,
    runtime,
    show_timer,
    this_program,
)
from mfe_deploy.cli.maintenance import switch_off, switch_on

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from mfe_deploy.backups.jobs import Backups, Verified
    from mfe_deploy.backups.offsite import OffsiteEntry, OffsiteStore
    from mfe_deploy.backups.store import Entry, Manifest, Store
    from mfe_deploy.config.models import Environment
    from mfe_deploy.console import Task
    from mfe_deploy.remote.backups import RemoteBackups
    from mfe_deploy.runtimes.contract import Runtime

backup_app = typer.Typer(
    help="Checksummed backups of every service database. Without a verb, `backup --env E` takes one (as "
    "`backup create`); the group's options (--env, --json, ...) reach its verbs.",
    rich_markup_mode=None,
    cls=GroupOptions,
)
app.add_typer(backup_app, name="backup")

ServiceOption = Annotated[str | None, typer.Option("--service", "-s", help="Only this service's database.")]


def store_for(env: Environment) -> Store:
    from mfe_deploy.backups.store import Store

    return Store.of(application().project_dir, env)


def _backups(env: str, runtime_name: str | None) -> tuple[Backups, Runtime]:
    rt = runtime(env, runtime_name)
    return rt.backups(), rt


def _offsite(env: str) -> OffsiteStore:
    """The environment's offsite store, or a clear error when it has none (no runtime needed)."""
    from mfe_deploy.backups.offsite import for_env
    from mfe_deploy.errors import MfeError

    loaded = application().environment(env)
    if loaded.env.backup.offsite is None:
        raise MfeError(f"environments/{env}.yaml: backup.offsite is not set: {env} has no offsite store")
    where = host(env)
    store = for_env(loaded.env, application().secrets(env), application().project_dir, (where.files, where.state))
    assert store is not None
    return store


def _fetch_offsite(offsite: OffsiteStore, store: Store, backup_id: str | None) -> Entry:
    """An offsite backup in a local folder: downloaded (checksums checked as it arrives) unless there."""
    wanted = offsite.get(backup_id)
    return _fetch_into(
        store, wanted.id, wanted.manifest, offsite.where(), lambda task: offsite.download(wanted, store, task)
    )


def _fetch_into(
    store: Store, backup_id: str, manifest: Manifest | None, source: str, download: Callable[[Task], Entry]
) -> Entry:
    """The backup from the local folder when it is there; else `download` brings it, with progress."""
    assert manifest is not None
    for entry in store.complete():
        if entry.id == backup_id:
            return entry
    started = time.monotonic()
    with application().console.progress() as progress:
        task = progress.task(f"downloading {backup_id} from {source}", manifest.size)
        entry = download(task)
        task.finish(f"checksums match ({time.monotonic() - started:.1f}s)")
    return entry


def _remote(env: str) -> RemoteBackups | None:
    """The environment's backups on its remote host; None for a local target."""
    where = host(env)
    if not where.remote:
        return None
    from mfe_deploy.remote.backups import RemoteBackups

    return RemoteBackups(where)


def _fetch(remote: RemoteBackups, store: Store, backup_id: str | None) -> Entry:
    """A remote backup in the local folder: downloaded (checksums checked as it arrives) unless there."""
    wanted = remote.get(backup_id)
    return _fetch_into(
        store, wanted.id, wanted.manifest, remote.host.name, lambda task: remote.download(wanted, store, task)
    )


def _upload(remote: RemoteBackups, entry: Entry) -> None:
    assert entry.manifest is not None
    started = time.monotonic()
    with application().console.progress() as progress:
        task = progress.task(f"uploading {entry.id} to {remote.host.name}", entry.manifest.size)
        remote.upload(entry, task)
        task.finish(f"checked with sha256sum there ({time.monotonic() - started:.1f}s)")


def _row(entry: Entry) -> dict[str, Any]:
    m = entry.manifest
    verified = entry.verified or {}
    return {
        "id": entry.id,
        "complete": entry.complete,
        "kind": m.kind if m else None,
        "finished_at": m.finished_at if m else None,
        "size": m.size if m else None,
        "rows": m.rows if m else None,
        "databases": sorted(m.databases) if m else [],
        "encrypted": bool(m and m.encryption),
        "verified": verified.get("ok") if verified else None,
        "release": (m.release or {}).get("id") if m else None,
        "problem": entry.problem,
    }


Kind = Annotated[str, typer.Option("--kind", help="Recorded in the manifest: manual or scheduled.")]
Verify = Annotated[bool, typer.Option("--verify", help="Then verify it by a scratch restore.")]
Download = Annotated[
    bool, typer.Option("--download", help="Remote targets: also keep a copy in the local backups folder.")
]
GroupEnv = Annotated[str | None, typer.Option("--env", "-e", help="Environment name.")]


@backup_app.callback(invoke_without_command=True)
def backup(
    ctx: typer.Context,
    env: GroupEnv = None,
    service: ServiceOption = None,
    verify: Verify = False,
    kind: Kind = "manual",
    download: Download = False,
    runtime_name: RuntimeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Dump every service database (concurrently) and the roles, checksummed, into the backups folder
    (on a remote target: the host's, and with --download this machine's too)."""
    if ctx.invoked_subcommand is None:
        _create(env, service, verify, kind, download, runtime_name, as_json)


@backup_app.command("create")
def create(
    env: GroupEnv = None,
    service: ServiceOption = None,
    verify: Verify = False,
    kind: Kind = "manual",
    download: Download = False,
    runtime_name: RuntimeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Take a backup: what `backup --env E` does."""
    _create(env, service, verify, kind, download, runtime_name, as_json)


def _create(
    env: str | None,
    service: str | None,
    verify: bool,
    kind: str,
    download: bool,
    runtime_name: str | None,
    as_json: bool,
) -> None:
    if env is None:
        raise typer.BadParameter("--env is required", param_hint="--env")
    from mfe_deploy.backups import pg
    from mfe_deploy.backups.jobs import summary
    from mfe_deploy.errors import MfeError

    if kind not in ("manual", "scheduled"):
        raise typer.BadParameter("manual or scheduled", param_hint="--kind")
    application().console.plain = as_json
    started = time.monotonic()
    backups, rt = _backups(env, runtime_name)
    remote = _remote(env)
    with audited(env, "backup", {"service": service}) as record:
        manifest = backups.backup(pg.targets(backups.env, service), kind=kind)
        record["backup"] = manifest.id
        result = None
        if verify:
            result = backups.verify(backups.store.get(manifest.id))
        entry = backups.store.get(manifest.id)
        if verify and backups.offsite is not None and entry.verified is not None:
            backups.offsite.mark_verified(entry.id, entry.verified)
        point_in_time = rt.point_in_time() if service is None else None
        if point_in_time is not None:  # database.pitr: a full backup, the base for the WAL from now on
            with application().console.status("pgBackRest: full backup"):
                point_in_time.backup()
            record["pgbackrest"] = "full"
        if remote is not None:
            _upload(remote, entry)
    console = application().console
    if as_json:
        row = _row(entry)
        places = {
            "local": str(entry.path) if remote is None or download else None,
            "remote": remote.where(manifest.id) if remote is not None else None,
        }
        console.json({**row, **places, "seconds": round(time.monotonic() - started, 2)})
    else:
        console.print(summary(manifest, time.monotonic() - started))
        if remote is not None:
            console.print(f"  {remote.where(manifest.id)}")
        if remote is None or download:
            console.print(f"  {entry.path}")
    if remote is not None and not download:
        backups.store.remove(entry)  # the host holds it; this machine only passed it through
    if result is not None and not result.ok:
        raise MfeError(f"backup {manifest.id} failed verification: " + "; ".join(result.problems))
    if result is not None and not as_json:
        console.print(
            f"  verified: {result.tables} tables, {result.rows} rows restored and counted ({result.seconds:.1f}s)"
        )


OffsiteFlag = Annotated[bool, typer.Option("--offsite", help="The copies in the offsite store (backup.offsite).")]


def _offsite_entries(offsite: OffsiteStore) -> list[Entry]:
    return [e.as_entry(offsite.where(e.id)) for e in offsite.scan()]


@backup_app.command("list")
def list_(env: EnvOption, offsite: OffsiteFlag = False, as_json: JsonOption = False) -> None:
    """Backups, oldest first: complete ones with size, rows and verification; interrupted ones marked."""
    from mfe_deploy.console import human_size

    remote = _remote(env)
    if offsite:
        entries = _offsite_entries(_offsite(env))
    elif remote is not None:
        entries = remote.scan()
    else:
        entries = store_for(application().environment(env).env).scan()
    shown = [e for e in entries if e.complete or e.damaged]  # interrupted ones are prune's business
    rows = [_row(e) for e in shown]
    console = application().console
    if as_json:
        console.json(rows)
        return
    verdict = {True: "ok", False: "FAILED", None: "-"}
    table = [
        (
            r["id"],
            r["kind"],
            r["finished_at"],
            human_size(r["size"]),
            r["rows"],
            verdict[r["verified"]],
            r["release"] or "-",
        )
        if r["complete"]
        else (r["id"], "-", "-", "-", "-", "DAMAGED", "-")
        for r in rows
    ]
    console.table(
        ("ID", "KIND", "FINISHED", "SIZE", "ROWS", "VERIFIED", "RELEASE"), table, empty=f"no backups of {env}"
    )
    for entry in shown:
        if entry.damaged:
            console.warn(f"{entry.id}: {entry.problem}; its dumps are kept, look at {entry.path}")
    pitr = application().environment(env).env.database.pitr
    if pitr is not None:
        point_in_time = runtime(env).point_in_time()
        window = point_in_time.window(offsite=offsite) if point_in_time is not None else None
        where = " (the offsite copy)" if offsite else ""
        if window is not None and window.earliest is not None:
            console.print(
                f"point in time{where}: any moment from {window.earliest.isoformat(timespec='seconds')} to now "
                f"(`restore --to-time`; WAL archived at least every {pitr.archive_timeout}; "
                f"{window.backups} full backup(s))"
            )
        else:
            console.print(f"point in time{where}: no pgBackRest full backup yet (`up` or `backup` takes one)")


@backup_app.command("verify")
def verify(
    env: EnvOption,
    backup_id: Annotated[str | None, typer.Argument(metavar="[ID]", help="Default: the newest.")] = None,
    offsite: Annotated[
        bool,
        typer.Option("--offsite", help="Verify the offsite copy: downloaded into a scratch folder, checked, restored."),
    ] = False,
    runtime_name: RuntimeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check every SHA-256, restore each dump into a scratch database and compare row counts."""
    if offsite:
        _verify_offsite(env, backup_id, runtime_name, as_json)
        return

    backups, _ = _backups(env, runtime_name)
    remote = _remote(env)
    entry = _fetch(remote, backups.store, backup_id) if remote else backups.store.get(backup_id)
    with audited(env, "backup-verify", {"backup": entry.id}):
        result = backups.verify(entry)
        if remote is not None:
            remote.mark_verified(entry.id, backups.store.get(entry.id).verified or {})
        if backups.offsite is not None and backups.offsite.holds(entry.id):
            backups.offsite.mark_verified(entry.id, backups.store.get(entry.id).verified or {})
    files = f"{len(entry.manifest.files) if entry.manifest else 0} files, "
    _report_verified(entry.id, "", files, {"id": entry.id}, result, as_json)


def _report_verified(
    backup_id: str, where: str, more: str, row: dict[str, Any], result: Verified, as_json: bool
) -> None:
    """One verification's verdict (`where`: " at <place>" or ""): a JSON row or a line; exit 1 when it failed."""
    from mfe_deploy.errors import MfeError

    console = application().console
    if as_json:
        console.json({**row, **result.__dict__})
    elif result.ok:
        console.print(
            f"backup {backup_id}{where}: ok ({more}{result.tables} tables, {result.rows} rows; {result.seconds:.1f}s)"
        )
    if not result.ok:
        raise MfeError(f"backup {backup_id} failed verification: " + "; ".join(result.problems))


def _verify_offsite(env: str, backup_id: str | None, runtime_name: str | None, as_json: bool) -> None:
    """The offsite copy itself, never a local one: downloaded into a scratch folder beside the backups
    folder (each file's SHA-256 checked as it arrives), restored into scratch databases, then removed."""
    import dataclasses
    import shutil

    from mfe_deploy.backups.store import Store

    backups, _ = _backups(env, runtime_name)
    offsite = _offsite(env)
    scratch = Store(backups.store.root.with_name(f".{backups.store.root.name}.offsite-verify"))
    shutil.rmtree(scratch.root, ignore_errors=True)
    try:
        with audited(env, "backup-verify", {"backup": backup_id, "offsite": True}) as record:
            entry = _fetch_offsite(offsite, scratch, backup_id)
            record["backup"] = entry.id
            result = dataclasses.replace(backups, store=scratch).verify(entry)
            offsite.mark_verified(entry.id, scratch.get(entry.id).verified or {})
    finally:
        shutil.rmtree(scratch.root, ignore_errors=True)
    row = {"id": entry.id, "offsite": offsite.where(entry.id)}
    _report_verified(entry.id, f" at {offsite.where(entry.id)}", "", row, result, as_json)


@backup_app.command("sync")
def sync(env: EnvOption, runtime_name: RuntimeOption = None, as_json: JsonOption = False) -> None:
    """Upload to the offsite store every complete local backup it does not hold whole (an upload that
    failed or was cut short), and the release ledger and audit log."""
    backups, _ = _backups(env, runtime_name)
    offsite = _offsite(env)
    backups.offsite = offsite
    sent: list[str] = []
    with audited(env, "backup-sync", {}) as record, backups.store.locked():
        there = {e.id for e in offsite.scan() if e.complete}
        for entry in backups.store.complete():
            if entry.id not in there:
                backups.send_offsite(entry)
                sent.append(entry.id)
        offsite.put_state()
        record["uploaded"] = sent
    console = application().console
    if as_json:
        console.json({"uploaded": sent, "offsite": offsite.where()})
    else:
        console.print(f"{env}: {len(sent)} backup(s) uploaded to {offsite.where()}" + "".join(f"\n  {i}" for i in sent))


@backup_app.command("prune")
def prune(
    env: EnvOption,
    keep: Annotated[
        int | None, typer.Option("--keep", min=1, help="Verified backups to keep [env's backup.keep].")
    ] = None,
    max_age: Annotated[int | None, typer.Option("--max-age", min=1, help="Days [env's backup.max_age_days].")] = None,
    confirm: Annotated[
        bool, typer.Option("--yes", "-y", "--confirm", help="Delete; without it, only show the plan.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Keep the newest --keep complete, verified backups; remove interrupted ones and older ones."""
    import shutil
    from datetime import UTC, datetime

    from mfe_deploy.backups.store import plan_prune

    environment = application().environment(env).env
    store = store_for(environment)
    keep = keep or environment.backup.keep
    age = max_age or environment.backup.max_age_days
    console = application().console
    remote = _remote(env)
    with store.locked():
        plan = plan_prune(remote.scan() if remote else store.scan(), keep, age, datetime.now(UTC))
        if confirm:
            with mutating(env, "backup prune", {"removed": [e.id for e in plan.remove]}):
                for entry in plan.remove:
                    if remote is not None:
                        remote.remove(entry)
                    else:
                        store.remove(entry)
                if remote is not None:
                    remote.leftovers()
                for folder in store.leftovers():  # what a killed prune was removing
                    shutil.rmtree(folder, ignore_errors=True)
        offsite_plan = None
        if environment.backup.offsite is not None:  # the same rules on the offsite copies, on their own
            offsite = _offsite(env)
            offsite_plan = plan_prune(_offsite_entries(offsite), keep, age, datetime.now(UTC))
            if confirm:
                with mutating(env, "backup prune", {"removed offsite": [e.id for e in offsite_plan.remove]}):
                    for entry in offsite_plan.remove:
                        offsite.remove(entry.id)
    if as_json:
        console.json(
            {
                "keep": [e.id for e in plan.keep],
                "remove": plan.reasons,
                "applied": confirm,
                **(
                    {"offsite": {"keep": [e.id for e in offsite_plan.keep], "remove": offsite_plan.reasons}}
                    if offsite_plan is not None
                    else {}
                ),
            }
        )
        return
    for entry in plan.remove:
        console.print(f"{'removed' if confirm else 'would remove'} {entry.id} ({plan.reasons[entry.id]})")
    if offsite_plan is not None:
        for entry in offsite_plan.remove:
            doing = "removed" if confirm else "would remove"
            console.print(f"{doing} the offsite copy of {entry.id} ({offsite_plan.reasons[entry.id]})")
    console.print(
        f"{env}: {len(plan.keep)} kept, {len(plan.remove)} {'removed' if confirm else 'to remove'}"
        f"{'' if confirm else ' (dry run: add --yes)'}"
    )


@backup_app.command("schedule")
def schedule(
    env: EnvOption,
    systemd: SystemdOption = False,
    install: InstallOption = False,
    dest: DestOption = None,
    env_file: SecretsFileOption = None,
) -> None:
    """Print (or install) the job that runs backup --verify then prune on the environment's schedule."""
    from mfe_deploy.backups import schedule as sched
    from mfe_deploy.errors import MfeError

    environment = application().environment(env).env
    job = sched.Job(
        env,
        application().project_dir,
        this_program(),
        environment.backup.schedule,
        env_file.resolve() if env_file else None,
    )
    try:
        show_timer(job.timer(), systemd=systemd, install=install, dest=dest)
    except ValueError as exc:
        raise MfeError(f"environments/{env}.yaml: backup.schedule: {exc}") from None


@backup_app.command("download")
def download(
    env: EnvOption,
    backup_id: Annotated[str | None, typer.Argument(metavar="[ID]", help="Default: the newest.")] = None,
) -> None:
    """Fetch a backup from the environment's remote host into the local backups folder, checking every
    file's SHA-256 against the manifest as it arrives."""
    from mfe_deploy.errors import MfeError

    remote = _remote(env)
    if remote is None:
        raise MfeError(f"{env} runs on this machine: its backups are already here")
    store = store_for(application().environment(env).env)
    with store.locked():
        entry = _fetch(remote, store, backup_id)
    application().console.print(f"{entry.id}: downloaded to {entry.path}")


@backup_app.command("check")
def check(
    env: EnvOption,
    max_hours: Annotated[float | None, typer.Option("--max-hours", help="[env's backup.max_staleness_hours]")] = None,
    as_json: JsonOption = False,
) -> None:
    """Exit 1 when the newest complete backup is older than the policy allows (for monitoring)."""
    from datetime import UTC, datetime

    from mfe_deploy.backups.store import staleness
    from mfe_deploy.errors import MfeError

    environment = application().environment(env).env
    remote = _remote(env)
    limit = max_hours or environment.backup.max_staleness_hours
    entries = remote.scan() if remote is not None else store_for(environment).scan()
    problem = staleness(entries, limit, datetime.now(UTC))
    if problem is None and environment.backup.offsite is not None:
        offsite = _offsite(env)
        problem = staleness(_offsite_entries(offsite), limit, datetime.now(UTC))
        problem = f"offsite ({offsite.where()}): {problem}" if problem else None
    if problem:
        from mfe_deploy.notify import Event

        application().notify(env, Event("backup.stale", env, f"{env}: {problem}"))
        if as_json:
            application().console.json({"env": env, "ok": False, "problem": problem, "max_hours": limit})
        raise MfeError(f"{env}: {problem}")
    newest = [e for e in entries if e.manifest][-1]
    assert newest.manifest is not None
    age = (datetime.now(UTC) - newest.manifest.time).total_seconds() / 3600
    if as_json:
        application().console.json(
            {"env": env, "ok": True, "newest": newest.id, "age_hours": round(age, 3), "max_hours": limit}
        )
        return
    application().console.print(
        f"{env}: ok, the newest complete backup {newest.id} is {age:.1f} h old"
        + (", and the offsite store holds it or a newer one" if environment.backup.offsite is not None else "")
    )


@app.command()
def restore(
    env: EnvOption,
    backup_id: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="A complete backup (see `backup list`); not with --to-time.")
    ] = None,
    service: ServiceOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Required to restore production.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the services.")] = 120,
    runtime_name: RuntimeOption = None,
    lock_wait: LockWait = 0,
    force_unlock: ForceUnlock = False,
    maintenance: Annotated[
        bool, typer.Option("--maintenance", help="Clients get 503 (maintenance mode) for the whole restore.")
    ] = False,
    source: Annotated[
        str,
        typer.Option(
            "--from",
            help="local: this machine's (or the remote host's) backups; offsite: the offsite store's, "
            "downloaded and checked first (with --to-time: its full backups and WAL alone).",
        ),
    ] = "local",
    to_time: Annotated[
        str | None,
        typer.Option(
            "--to-time",
            metavar="TIME",
            help="database.pitr: bring every database to this moment (ISO 8601; without a zone, this "
            "machine's), replaying the archived WAL onto the newest full backup before it.",
        ),
    ] = None,
    before_release: Annotated[
        int | None,
        typer.Option(
            "--before-release",
            metavar="N",
            help="database.pitr: bring every database to the moment just before release N (see `releases`) "
            "applied its migrations.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Replace databases with a backup: checksums first, a pre-restore backup, one transaction each."""
    from mfe_deploy.backups import jobs
    from mfe_deploy.errors import MfeError

    application().console.plain = as_json

    if source not in ("local", "offsite"):
        raise typer.BadParameter(f"local or offsite, not {source!r}", param_hint="--from")
    if to_time is not None or before_release is not None:
        hint = "--to-time" if to_time is not None else "--before-release"
        if backup_id is not None or service is not None:
            raise typer.BadParameter(f"{hint} restores every database, from no backup ID", param_hint=hint)
        if to_time is not None and before_release is not None:
            raise typer.BadParameter("one moment: --to-time or --before-release, not both", param_hint=hint)
        if before_release is not None:
            target, why = _before_release(env, before_release)
        else:
            target, why = _parse_time(str(to_time))
        fence = (yes, force, timeout, runtime_name, lock_wait, force_unlock, maintenance)
        _restore_to_time(env, target, why, *fence, as_json=as_json, offsite=source == "offsite")
        return
    if backup_id is None:
        raise typer.BadParameter("a backup ID (see `backup list`), --to-time or --before-release", param_hint="ID")
    backups, rt = _backups(env, runtime_name)
    if backups.env.tier == "production" and not force:
        raise MfeError("refusing to restore production without --force")
    remote = _remote(env)
    if source == "offsite":
        with backups.store.locked():
            entry = _fetch_offsite(_offsite(env), backups.store, backup_id)
    else:
        entry = _fetch(remote, backups.store, backup_id) if remote else backups.store.get(backup_id)
    assert entry.manifest is not None
    wanted = [s for s in entry.manifest.databases if service in (None, s)]
    if not yes:
        if not sys.stdin.isatty():
            raise MfeError("restore replaces data: confirm with --yes when not running interactively")
        typer.confirm(f"Replace the {', '.join(wanted)} data of {env} with backup {entry.id}?", abort=True)
    console = application().console
    with mutating(env, "restore", {"backup": entry.id, "service": service}, wait=lock_wait, force=force_unlock):
        if maintenance:  # the gateway answers 503 before any service stops, and until all are back
            switch_on(env, f"restoring data from backup {entry.id}", 60)
        try:
            done = jobs.restore(backups, entry, service, rt, timeout)
        finally:
            if maintenance:
                switch_off(env)
            if remote is not None:  # the pre-restore backup belongs on the host with the others
                there = {e.id for e in remote.scan()}
                for kept in backups.store.complete():
                    if kept.manifest and kept.manifest.kind == "pre-restore" and kept.id not in there:
                        _upload(remote, kept)
    if as_json:
        console.json(
            {
                "env": env,
                "backup": done.backup,
                "services": list(done.services),
                "seconds": round(done.seconds, 3),
                "pre_restore": done.pre_restore,
            }
        )
        return
    console.print(
        f"{env}: restored {', '.join(done.services)} from {done.backup} in {done.seconds:.1f}s "
        f"(pre-restore backup: {done.pre_restore})"
    )


def _parse_time(when: str) -> tuple[datetime, dict[str, object]]:
    from datetime import datetime

    try:
        target = datetime.fromisoformat(when)
    except ValueError:
        raise typer.BadParameter(
            f"not an ISO 8601 time: {when!r} (e.g. 2026-12-06T14:05:00Z)", param_hint="--to-time"
        ) from None
    target = target.astimezone() if target.tzinfo is None else target
    return target, {"to_time": target.isoformat()}


def _before_release(env: str, number: int) -> tuple[datetime, dict[str, object]]:
    """The moment just before release N applied its migrations, from the ledger."""
    from datetime import datetime

    from mfe_deploy.errors import MfeError
    from mfe_deploy.state.ledger import Ledger

    release = Ledger.of(host(env)).get(number)
    if release is None:
        raise MfeError(f"{env} has no release {number} in its ledger (see `mfe-deploy releases --env {env}`)")
    if not release.migrated_at:
        raise MfeError(
            f"release {number} of {env} applied no migration, so there is no moment before them to go back "
            f"to; `restore --to-time` takes any moment (release {number} was recorded at {release.time})"
        )
    return datetime.fromisoformat(release.migrated_at), {"before_release": number, "to_time": release.migrated_at}


def _restore_to_time(
    env: str,
    target: datetime,
    details: dict[str, object],
    yes: bool,
    force: bool,
    timeout: float,
    runtime_name: str | None,
    lock_wait: float,
    force_unlock: bool,
    maintenance: bool,
    *,
    as_json: bool = False,
    offsite: bool = False,
) -> None:
    from mfe_deploy.errors import MfeError

    rt = runtime(env, runtime_name)
    tool = rt.point_in_time()
    if tool is None:
        raise MfeError(
            f"environments/{env}.yaml: database.pitr is not set: {env} archives no WAL, so it can only be "
            "restored from a backup (`restore ID`)"
        )
    if rt.env.tier == "production" and not force:
        raise MfeError("refusing to restore production without --force")
    if not yes:
        if not sys.stdin.isatty():
            raise MfeError("restore replaces data: confirm with --yes when not running interactively")
        typer.confirm(f"Bring every database of {env} back to {target.isoformat()}?", abort=True)
    with mutating(env, "restore", details, wait=lock_wait, force=force_unlock):
        if maintenance:
            switch_on(env, f"restoring data to {target.isoformat()}", 60)
        try:
            done = tool.restore_to(target, timeout, offsite=offsite)
        finally:
            if maintenance:
                switch_off(env)
    console = application().console
    if as_json:
        console.json(
            {
                "env": env,
                **({"before_release": details["before_release"]} if "before_release" in details else {}),
                "to_time": str(done.target),
                "seconds": round(done.seconds, 3),
                "pre_restore": done.pre_restore,
                "removed": list(done.lost),
            }
        )
        return
    console.print(f"{env}: restored to {done.target} in {done.seconds:.1f}s (pre-restore backup: {done.pre_restore})")
    if done.lost:
        console.print("  removed, written after that moment: " + "; ".join(done.lost))
    else:
        console.print("  no row written after that moment was removed")
    if "before_release" in details:
        console.print(
            f"  release {details['before_release']}'s migrations are no longer applied: the next `up` applies "
            "them again unless they are removed or reverted first"
        )


@app.command()
def recover(
    env: EnvOption,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Required to recover production.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for each stage.")] = 180,
    version: ReleaseOption = None,
    runtime_name: RuntimeOption = None,
    lock_wait: LockWait = 0,
    force_unlock: ForceUnlock = False,
    as_json: JsonOption = False,
) -> None:
    """Bring a lost environment back on this machine from its offsite store, with only the project's
    environment files and the secrets here. With database.pitr: the cluster restored from the offsite copy
    of its WAL (its newest full backup, then every segment archived after it: at most archive_timeout
    behind the loss), then the stack started on it. Without: the newest complete offsite backup chosen
    first, the stack started, every database restored from that backup (downloaded and checked), the
    services healthy. Prints the recovery point and the time taken."""
    from mfe_deploy.backups.offsite import STATE_FILES
    from mfe_deploy.errors import MfeError

    started = time.monotonic()
    application().console.plain = as_json
    offsite = _offsite(env)
    backups, rt = _backups(env, runtime_name)
    from_wal = backups.env.database.pitr is not None
    # Chosen before anything runs: nothing this command does can become the backup it restores.
    wanted = None if from_wal else offsite.get(None)
    if backups.env.tier == "production" and not force:
        raise MfeError("refusing to recover production without --force")
    if not yes:
        if not sys.stdin.isatty():
            raise MfeError("recover replaces the data of this machine's stack: confirm with --yes when not interactive")
        what = "the end of its WAL" if wanted is None else f"backup {wanted.id}"
        typer.confirm(f"Start {env} here and load {what} from {offsite.where()}?", abort=True)
    where = host(env)
    for name in STATE_FILES:  # the history goes on: the ledger and audit log as the store has them
        body = offsite.state(name)
        if body is not None and where.files.read_text(where.state / name) is None:
            where.files.makedirs(where.state, 0o700)
            where.files.write_atomic(where.state / name, body.decode(), 0o600)
    tag = release(version)
    details: dict[str, object] = {"backup": wanted.id if wanted else "the offsite WAL", "version": tag}
    with mutating(env, "recover", details, wait=lock_wait, force=force_unlock):
        if wanted is None:
            _recover_from_wal(env, rt, tag, timeout, started, as_json)
        else:
            _recover_from_dump(env, rt, backups, offsite, wanted, tag, timeout, started, as_json)


def _recover_from_wal(env: str, rt: Runtime, tag: str, timeout: float, started: float, as_json: bool) -> None:
    from mfe_deploy.app import recover

    console = application().console
    point = recover.from_wal(rt, console, version=tag, timeout=timeout)
    seconds = round(time.monotonic() - started, 3)
    if as_json:
        console.json({"env": env, "from": "wal", "seconds": seconds, "recovery_point": point})
        return
    said = f"the last transaction replayed was at {point}" if point else "the end of the offsite WAL"
    console.print(f"{env}: recovered from the offsite WAL in {seconds:.1f}s; recovery point: {said}")


def _recover_from_dump(
    env: str,
    rt: Runtime,
    backups: Backups,
    offsite: OffsiteStore,
    wanted: OffsiteEntry,
    tag: str,
    timeout: float,
    started: float,
    as_json: bool,
) -> None:
    from datetime import UTC, datetime

    from mfe_deploy.app.up import up as app_up
    from mfe_deploy.backups import jobs

    assert wanted.manifest is not None
    console = application().console
    console.info(f"recover {env}: starting the stack ({rt.name} runtime, release {tag})")
    app_up(rt, console, version=tag, wait=True, timeout=timeout)
    with backups.store.locked():
        entry = _fetch_offsite(offsite, backups.store, wanted.id)
    # The pre-restore backup holds what a fresh stack had: it stays here, never the store's newest.
    done = jobs.restore(dataclasses.replace(backups, offsite=None), entry, None, rt, timeout)
    point = wanted.manifest.time
    behind = (datetime.now(UTC) - point).total_seconds()
    if as_json:
        console.json(
            {
                "env": env,
                "backup": entry.id,
                "seconds": round(time.monotonic() - started, 3),
                "recovery_point": point.isoformat(timespec="seconds"),
                "behind_seconds": round(behind),
                "services": list(done.services),
            }
        )
        return
    console.print(
        f"{env}: recovered from {entry.id} in {time.monotonic() - started:.1f}s; recovery point "
        f"{point.isoformat(timespec='seconds')} ({behind:.0f}s before now); restored {', '.join(done.services)}"
    )
