"""`rollback SERVICE`: one flow for every runtime with versioned releases (docker, swarm). Which version,
what the schema holds in the way (refused, undone first, or the backup before it restored), the bundle
written, the service replaced health-gated, the ledger told either way."""

from __future__ import annotations

from mfe_deploy.ops import schema
from mfe_deploy.runtimes.contract import Rollbacks, StartFailed
from mfe_deploy.state.ledger import Release


def plan(rt: Rollbacks, service: str, to: str | None) -> schema.RollbackPlan:
    """What `rollback` would do, changing nothing: the versions, and what the schema holds in the way."""
    current, target = rt.rollback_target(service, to)
    return schema.RollbackPlan(service, current[service], target, rt.rollback_verdict(service, target))


def rollback(
    rt: Rollbacks, service: str, to: str | None, timeout: float, *, schema_policy: schema.Policy = "check"
) -> Release:
    current, target = rt.rollback_target(service, to)
    verdict = None if schema_policy == "ignore" else rt.rollback_verdict(service, target)
    versions = {**current, service: target}
    if verdict is not None and verdict.blocking and schema_policy == "restore":
        return rt.restore_for_rollback(verdict, current, versions, timeout)
    heads = rt.undo_migrations(verdict, schema_policy)
    digest = rt.write_bundle(versions)
    try:
        rt.roll_back(service, target, timeout)
    except StartFailed:
        rt.record("rollback", "failed", versions, digest, heads)
        rt.revert(current, service, timeout)
        raise
    rt.record("rollback", "succeeded", versions, digest, heads, note=f"{service}: {current[service]} -> {target}")
    return rt.released()
