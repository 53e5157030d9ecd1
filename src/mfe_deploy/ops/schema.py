"""Rollbacks that know the schema: the migrations a rollback would leave the older code to face.

Pure: the release ledger and the migration runner's `status` rows in, the blocking migrations out.
Migrations are never undone by a rollback; the older code is sent back only when every migration applied
since the schema it ran against declares itself compatible with older code (`-- mfe: compatible`, which
`migrate lint` refuses on a breaking statement).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol


class Release(Protocol):
    """What this module reads of a ledger release (mfe_deploy.state.ledger.Release)."""

    @property
    def outcome(self) -> str: ...

    @property
    def versions(self) -> Mapping[str, str]: ...

    @property
    def migrations(self) -> Mapping[str, str]: ...


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


def blockers(rows: Sequence[Mapping[str, Any]], head: str | None) -> list[str]:
    """The applied migrations after `head` (all of them when None) that older code may not survive."""
    return [
        str(row["id"])
        for row in rows
        if row.get("state") in ("applied", "changed")
        and (head is None or str(row["id"]) > head)
        and not row.get("compatible", False)
    ]


def refusal(service: str, target: str, head: str | None, blocking: Sequence[str]) -> str:
    since = f"since {head}" if head else "since none at all"
    return (
        f"{service} {target} ran against an older schema: {', '.join(blocking)} applied {since} "
        f"{'is' if len(blocking) == 1 else 'are'} not marked compatible with older code (`-- mfe: compatible`). "
        f"Ways forward: deploy a fixed newer version (`mfe-deploy up --version ...`); restore the backup taken "
        f"before the migration (`mfe-deploy restore --service {service}`: later writes are lost); or roll back "
        f"anyway with --ignore-schema if you know {target} works with this schema."
    )
