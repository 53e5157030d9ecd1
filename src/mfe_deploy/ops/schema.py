"""Rollbacks that know the schema: the migrations a rollback would leave the older code to face.

Pure: the release ledger and the migration runner's `status` rows in, the blocking migrations out.
The older code is sent back as it is only when every migration applied since the schema it ran against
declares itself compatible with older code (`-- mfe: compatible`, which `migrate lint` refuses on a
breaking statement). Otherwise the operator picks one of the policies: `down` undoes them first (each
needs its NNNN_name.down.sql), `restore` returns the database to the backup `up` took just before them
(later writes are lost, and counted), `ignore` sends the code back anyway.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Policy = Literal["check", "ignore", "down", "restore"]


class Release(Protocol):
    """What this module reads of a ledger release (mfe_deploy.state.ledger.Release)."""

    @property
    def outcome(self) -> str: ...

    @property
    def versions(self) -> Mapping[str, str]: ...

    @property
    def migrations(self) -> Mapping[str, str]: ...

    @property
    def backup(self) -> str: ...


def head_of(releases: Sequence[Release], service: str, version: str) -> tuple[bool, str | None]:
    """(known, head): the newest migration `service` had applied when `version` last ran healthy. Each
    release records the heads it applied; a release that applied nothing keeps the one before. Not known
    when no release of the ledger ever recorded a head of this service (a ledger older than heads)."""
    known = any(service in r.migrations for r in releases)
    head: str | None = None
    found: tuple[bool, str | None] = (False, None)
    for release in releases:
        head = release.migrations.get(service, head)  # a failed deploy's migrations stayed applied too
        if release.outcome == "succeeded" and release.versions.get(service) == version:
            found = (known, head)
    return found


def backup_for(releases: Sequence[Release], service: str, version: str) -> tuple[str | None, str | None]:
    """(backup, migration): the backup `up` took just before the first release that moved `service`'s
    schema past the one `version` last ran healthy against, and that release's head; (None, head) when
    that release took none (its database was fresh, or `backup.before_migrate` was off)."""
    last = -1
    head: str | None = None
    heads: list[str | None] = []
    for i, release in enumerate(releases):
        head = release.migrations.get(service, head)
        heads.append(head)
        if release.outcome == "succeeded" and release.versions.get(service) == version:
            last = i
    if last < 0:
        return None, None
    base = heads[last]
    for release in releases[last + 1 :]:
        moved = release.migrations.get(service)
        if moved and (not base or moved > base):
            return release.backup or None, moved
    return None, None


def blockers(rows: Sequence[Mapping[str, Any]], head: str | None) -> list[str]:
    """The applied migrations after `head` (all of them when None) that older code may not survive."""
    return [
        str(row["id"])
        for row in rows
        if row.get("state") in ("applied", "changed")
        and (head is None or str(row["id"]) > head)
        and not row.get("compatible", False)
    ]


def without_down(rows: Sequence[Mapping[str, Any]], blocking: Sequence[str]) -> list[str]:
    """The blocking migrations the running image ships no NNNN_name.down.sql for."""
    return [str(row["id"]) for row in rows if row["id"] in blocking and not row.get("down", False)]


@dataclass(frozen=True)
class Verdict:
    """What a rollback of `service` to `target` meets in the schema, and what each policy can do about it."""

    service: str
    target: str
    head: str | None  # the newest migration `target` ran against
    blocking: tuple[str, ...]  # applied since, not compatible with older code
    no_down: tuple[str, ...]  # of those, the ones without a down file
    backup: str | None  # the backup taken just before the first of them (for `restore`)

    def refusal(self, policy: Policy) -> str | None:
        """Why `policy` cannot go ahead (None: it can)."""
        if not self.blocking or policy == "ignore":
            return None
        if policy == "down" and self.no_down:
            return (
                f"{self.service}: cannot undo {', '.join(self.no_down)}: the running image has no "
                f"{self.no_down[0]}.down.sql; nothing was changed. Use --restore-backup or --ignore-schema instead."
            )
        if policy == "restore" and self.backup is None:
            return (
                f"{self.service}: no backup was taken just before {self.blocking[0]} was applied (the database "
                "was fresh, or `backup.before_migrate` was off); nothing was changed. Restore one you choose "
                f"(`mfe-deploy backup list`, `mfe-deploy restore ID --service {self.service}`), then roll back "
                "with --ignore-schema."
            )
        if policy in ("down", "restore"):
            return None
        return refusal(self.service, self.target, self.head, self.blocking)


@dataclass(frozen=True)
class RollbackPlan:
    service: str
    running: str
    target: str
    verdict: Verdict | None  # None: not checked (no database, or no head in the ledger)

    def lines(self) -> list[str]:
        """What `plan --rollback` prints: the move, and what each policy would do about the schema."""
        out = [f"rollback {self.service}: {self.running} -> {self.target}"]
        v = self.verdict
        if v is None:
            return [*out, "schema: not checked (no database, or the ledger recorded no schema head for it)"]
        if not v.blocking:
            return [*out, f"schema: nothing in the way (every migration since {v.head or 'none'} is compatible)"]
        out.append(f"schema: {', '.join(v.blocking)} applied since {v.head or 'none'}, not compatible with older code")
        out.append("  as it is: refused")
        down = f"refused: no {v.no_down[0]}.down.sql" if v.no_down else f"undoes {', '.join(v.blocking)} first"
        out.append(f"  --migrate-down: {down}")
        restore = f"restores backup {v.backup} (later writes lost)" if v.backup else "refused: no backup before them"
        out.append(f"  --restore-backup: {restore}")
        out.append("  --ignore-schema: sends the older code back as it is")
        return out


def refusal(service: str, target: str, head: str | None, blocking: Sequence[str]) -> str:
    since = f"since {head}" if head else "since none at all"
    return (
        f"{service} {target} ran against an older schema: {', '.join(blocking)} applied {since} "
        f"{'is' if len(blocking) == 1 else 'are'} not marked compatible with older code (`-- mfe: compatible`). "
        f"Ways forward: deploy a fixed newer version (`mfe-deploy up --version ...`); undo them with their down "
        f"migrations (--migrate-down); restore the backup taken just before them (--restore-backup: later writes "
        f"are lost, and counted); or roll back anyway with --ignore-schema if you know {target} works with this "
        "schema."
    )
