"""A rollback's parts that every engine runtime shares: which version a service goes back to, what the
schema holds in the way (read by the running image's migration runner), undoing it, or restoring the
backup taken before it and starting the older code on that."""

from __future__ import annotations

from mfe_deploy.backups import jobs
from mfe_deploy.errors import MfeError
from mfe_deploy.ops import schema
from mfe_deploy.runtimes.contract import StartFailed
from mfe_deploy.runtimes.docker.site import EngineSite
from mfe_deploy.state.ledger import Release


def target(rt: EngineSite, service: str, to: str | None) -> tuple[dict[str, str], str]:
    """The versions running now and the one `service` goes back to (refused with a reason)."""
    current = rt.current_versions()
    if service not in rt.env.services:
        raise MfeError(f"unknown service {service!r}; one of: {', '.join(rt.env.services)}")
    prebuilt = rt.env.services[service].image
    if prebuilt is not None:
        raise MfeError(f"{service} runs the prebuilt image {prebuilt}: to go back, change it in the environment")
    if not current:
        raise MfeError(f"no successful release of {rt.env.name} yet: nothing to roll back")
    back_to = to or rt.ledger.previous_version(service, current[service])
    if back_to is None:
        raise MfeError(f"{service} has no previous version in the release ledger (it runs {current[service]})")
    if not rt.images.exists(service, back_to):
        where = "this engine" if not rt.host.remote else f"the engine of {rt.host.name}"
        raise MfeError(f"image {rt.images.tag(service, back_to)} does not exist on {where}")
    return current, back_to


def verdict(rt: EngineSite, service: str, target: str) -> schema.Verdict | None:
    """What rolling `service` back to `target` meets in the schema: the migrations applied since it ran
    that are not compatible with older code (read by the running image's runner). None: not checked
    (no database, or a ledger that never recorded a head)."""
    if service not in rt.env.database_services:
        return None
    releases = rt.ledger.all()
    known, head = schema.head_of(releases, service, target)
    if not known:
        rt.console.warn(f"{service}: the ledger has no schema head for {target}: the schema is not checked")
        return None
    with rt.console.status(f"{service}: checking the migrations applied since {target} ran"):
        outcome = rt.schema_status(service)
    if not outcome.ok:
        raise MfeError(f"{service}: cannot read its migrations to check the rollback: {outcome.error}")
    rows = outcome.data.get("migrations", [])
    blocking = schema.blockers(rows, head)
    backup, _ = schema.backup_for(releases, service, target)
    return schema.Verdict(service, target, head, tuple(blocking), tuple(schema.without_down(rows, blocking)), backup)


def schema_first(rt: EngineSite, verdict: schema.Verdict | None, policy: schema.Policy) -> dict[str, str]:
    """Refuse, or undo the migrations in the way (policy down) before any code moves; the heads the
    rollback leaves (for the ledger)."""
    if verdict is None or policy == "ignore":
        return {}
    why = verdict.refusal(policy)
    if why is not None:
        raise MfeError(why)
    if not verdict.blocking or policy != "down":
        return {}
    rt.forget_migrations()
    with rt.console.status(f"{verdict.service}: undoing the migrations applied since {verdict.head}"):
        (outcome,) = rt.migrate([verdict.service], ["down", "--to", verdict.head or "none"])
    if not outcome.ok:
        undone = [u["id"] for u in (outcome.data.get("error") or {}).get("undone", [])]
        done = f" ({', '.join(undone)} undone before it)" if undone else ""
        why = f"{verdict.service}: a down migration failed{done}; the code was not rolled back"
        raise MfeError(f"{why}: {outcome.error}")
    for item in outcome.data.get("undone", []):
        rt.console.info(f"{verdict.service}: undid {item['id']} ({item['duration_ms']} ms)")
    return {verdict.service: verdict.head or ""}


def restoring(
    rt: EngineSite, verdict: schema.Verdict, current: dict[str, str], versions: dict[str, str], timeout: float
) -> Release:
    """Stop the service (no write is acknowledged from here on), take a pre-restore backup, restore the
    backup `up` took just before the migrations in the way, then start the older code on it."""
    assert verdict.backup is not None
    service, target = verdict.service, verdict.target
    backups = rt.backups()
    entry = backups.store.get(verdict.backup)
    assert entry.manifest is not None
    digest = ""

    def start_older(names: list[str]) -> None:
        nonlocal digest
        digest = rt.write_bundle(versions)
        with rt.console.status(f"starting {service} {target} on the restored database"):
            rt.start_older(names, timeout)

    try:
        done = jobs.restore(backups, entry, service, rt, timeout, then=start_older)
    except StartFailed as exc:
        rt.record("rollback", "failed", versions, digest, {service: verdict.head or ""})
        why = f"{service}: its database is restored from {entry.id}, but {target} did not start"
        raise StartFailed(f"{why}: {exc}") from None
    pre = backups.store.get(done.pre_restore).manifest
    assert pre is not None
    gone = jobs.lost(entry.manifest.databases[service], pre.databases[service])
    rt.console.info(
        f"{service}: restored backup {entry.id} (taken {entry.manifest.finished_at}, before "
        f"{', '.join(verdict.blocking)}); lost since then: {'; '.join(gone) if gone else 'no rows'}; "
        f"the data as it was before this rollback is in backup {done.pre_restore}"
    )
    note = f"{service}: {current[service]} -> {target}, restored {entry.id}, lost: {'; '.join(gone) or 'none'}"
    rt.record("rollback", "succeeded", versions, digest, {service: verdict.head or ""}, note=note)
    return rt.ledger.all()[-1]
