"""Which migrations a rollback would leave older code to face (pure: ledger and runner rows in)."""

from __future__ import annotations

from mfe_deploy.ops.schema import blockers, head_of
from mfe_deploy.state.ledger import Release


def _release(n: int, version: str, heads: dict[str, str], outcome: str = "succeeded") -> Release:
    return Release(n, "t", "me", "up", outcome, {"auth": version, "api-gateway": version}, migrations=heads)


LEDGER = [
    _release(1, "v1", {"auth": "0002_outbox"}),
    _release(2, "v2", {}),  # applied nothing: v2 ran against 0002 too
    _release(3, "v3", {"auth": "0003_scratch"}, outcome="failed"),  # its migration stayed applied
    _release(4, "v2", {}),  # the automatic rollback: v2 ran healthy against 0003
    _release(5, "v4", {"auth": "0004_nick"}),
]


def test_the_head_a_version_last_ran_against_carries_over_releases_that_applied_nothing() -> None:
    assert head_of(LEDGER, "auth", "v1") == (True, "0002_outbox")
    assert head_of(LEDGER, "auth", "v2") == (True, "0003_scratch")
    assert head_of(LEDGER, "auth", "v4") == (True, "0004_nick")
    assert head_of(LEDGER, "auth", "v3") == (False, None)  # never ran healthy: no target
    assert head_of(LEDGER, "payments", "v1") == (False, None)  # no head ever recorded: not checked


ROWS = [
    {"id": "0001_users", "state": "applied", "compatible": False},
    {"id": "0002_outbox", "state": "applied", "compatible": False},
    {"id": "0003_scratch", "state": "applied", "compatible": False},
    {"id": "0004_nick", "state": "applied", "compatible": True},
    {"id": "0005_later", "state": "pending", "compatible": False},
]


def test_blockers_are_the_applied_migrations_after_the_head_not_marked_compatible() -> None:
    assert blockers(ROWS, "0002_outbox") == ["0003_scratch"]
    assert blockers(ROWS, "0003_scratch") == []  # only 0004, which is compatible
    assert blockers(ROWS, "0004_nick") == []
    assert blockers(ROWS, None) == ["0001_users", "0002_outbox", "0003_scratch"]
    assert blockers([{"id": "0003_scratch", "state": "changed"}], "0002_outbox") == ["0003_scratch"]
