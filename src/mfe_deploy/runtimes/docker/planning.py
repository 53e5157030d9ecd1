"""The docker runtime's side of a plan: what a release wants (compose's hashes of the rendered bundle, the
env files' digests, the migrations its images run) and what runs (its containers' labels)."""

from __future__ import annotations

from mfe_deploy.compose import STORES_PROBE, ContainerState, parse_hashes
from mfe_deploy.ops.migrations import Outcome
from mfe_deploy.ops.migrations import pending as pending_ids
from mfe_deploy.plan import Desired, Have, Observed, Want, digest
from mfe_deploy.render import Bundle
from mfe_deploy.runtimes.docker.site import ComposeSite, EngineSite


def desired(rt: ComposeSite, version: str) -> Desired:
    """What `up --version VERSION` would run, without writing anything: compose's hashes from the
    rendered compose file written beside the bundle (the same folder: the same paths) and removed."""
    result = rt.rendered(version)
    # Nothing deployed here yet: every store starts (its hash does not matter), every service is new.
    hashes = dict.fromkeys(rt.env.stores, "new")
    if rt.files.mode(rt.bundle_dir / "compose.yml") is not None:
        probe = rt.bundle_dir / STORES_PROBE
        rt.files.write_atomic(probe, result.files["compose.yml"].text, 0o600)
        try:
            done = rt.runner.run(rt.compose.config_hashes(STORES_PROBE), timeout=600)
        finally:
            rt.files.unlink(probe)
        # compose cannot hash a service whose env file the bundle in place lacks (one of yours, added since):
        # then the stores alone (as the store guard hashes them), and the services by image and env file.
        hashes = parse_hashes(done.stdout) if done.returncode == 0 else rt.store_hashes(version)
    return wanted(rt, result, hashes, dict.fromkeys(rt.env.services, version))[0]


def wanted(
    rt: ComposeSite, result: Bundle, hashes: dict[str, str], versions: dict[str, str], *, migrations: bool = True
) -> tuple[Desired, list[Outcome]]:
    """Each service's image tag, replicas, env file digest (the label its containers carry) and compose's
    hash of its definition; the stores' hashes; the migrations these images would run (none asked when
    `migrations` is off: a way back). With it, the runner's status when it was asked (the backup before
    migrating reads it instead of asking again)."""
    wants = {
        name: Want(
            rt.images.tag(name, versions[name]),
            svc.replicas,
            (digest(result.files[f"env/{name}.env"].text) or "")[:16],
            # For a service that reads an env_file (yours), `compose config --hash` is not the hash compose
            # labels its container with (seen here for every such service; the bundled ones agree): those are
            # compared by image and env file digest alone, and compose applies the rest when it converges.
            hashes.get(name, "") if svc.bundled else "",
        )
        for name, svc in rt.env.services.items()
    }
    stores = {name: h for name, h in hashes.items() if name in rt.env.stores}
    pending, status = migrations_to_run(rt, versions) if migrations else ({}, [])
    return Desired(wants, pending, stores=stores), status


def observe(rt: ComposeSite) -> Observed:
    """What runs, as its containers' labels say: image, env file digest, compose's hash, health."""
    by_service: dict[str, list[ContainerState]] = {}
    states = rt.containers()
    for c in states:
        if not c.oneoff:
            by_service.setdefault(c.service, []).append(c)
    haves = {}
    for name, found in by_service.items():
        running = [c for c in found if c.state == "running"]
        first = (running or found)[0]
        same = all(c.env_digest == first.env_digest and c.config_hash == first.config_hash for c in found)
        unhealthy = sum(1 for c in running if c.health == "unhealthy")
        config, definition = (first.env_digest, first.config_hash) if same else ("", "mixed")
        haves[name] = Have(first.image, len(running), config, unhealthy, definition)
    return Observed(haves, stores=rt.running_stores(states))


def migrations_to_run(rt: EngineSite, versions: dict[str, str]) -> tuple[dict[str, tuple[str, ...]], list[Outcome]]:
    """The migrations `up` runs: none when these images migrated this database already (the migration
    key); else what the runner says is pending, and everything for a database it cannot read yet (not
    running, or a new service's, made by this up)."""
    services = rt.env.database_services
    if not services or rt.migrated(rt.migration_key(versions)):
        return {}, []
    if not any(c.service == "postgres" and c.state == "running" for c in rt.containers()):
        return dict.fromkeys(services, ("all (PostgreSQL starts with this deploy)",)), []
    found: dict[str, tuple[str, ...]] = {}
    status = rt.migrate(services, ["status"])
    for outcome in status:
        if not outcome.ok:
            found[outcome.service] = ("all (its database is made by this deploy)",)
        elif ids := pending_ids([outcome])[outcome.service]:
            found[outcome.service] = ids
    return found, status
