"""Which migrations a rollback would leave older code to face (pure: ledger and runner rows in)."""

from __future__ import annotations

from mfe_deploy.ops.schema import Verdict, backup_for, blockers, head_of, without_down
from mfe_deploy.state.ledger import Release


def _release(n: int, version: str, heads: dict[str, str], outcome: str = "succeeded", backup: str = "") -> Release:
    versions = {"auth": version, "api-gateway": version}
    return Release(n, "t", "me", "up", outcome, versions, migrations=heads, backup=backup)


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


def test_the_backup_to_restore_is_the_one_taken_just_before_the_schema_moved_past_the_target() -> None:
    ledger = [
        _release(1, "v1", {"auth": "0002_outbox"}),
        _release(2, "v2", {}),
        _release(3, "v3", {"auth": "0003_scratch"}, outcome="failed", backup="B3"),  # applied, then rolled back
        _release(4, "v2", {}),
        _release(5, "v4", {"auth": "0004_nick"}, backup="B5"),
    ]
    assert backup_for(ledger, "auth", "v1") == ("B3", "0003_scratch")  # not B5: 0003 was applied after B3
    assert backup_for(ledger, "auth", "v2") == ("B5", "0004_nick")  # v2 last ran healthy against 0003
    assert backup_for(ledger, "auth", "v4") == (None, None)  # nothing moved since
    assert backup_for(ledger, "auth", "v3") == (None, None)  # never ran healthy
    no_backup = [
        *ledger[:2],
        _release(3, "v3", {"auth": "0003_scratch"}),
        _release(4, "v4", {"auth": "0004_x"}, backup="B4"),
    ]
    assert backup_for(no_backup, "auth", "v2") == (None, "0003_scratch")  # a later backup holds 0003: never used


def test_each_policy_goes_ahead_or_says_why_not() -> None:
    rows = [{**row, "down": row["id"] == "0003_scratch"} for row in ROWS]
    assert without_down(rows, ["0002_outbox", "0003_scratch"]) == ["0002_outbox"]
    verdict = Verdict("auth", "v2", "0002_outbox", ("0003_scratch",), (), "B5")
    refused = verdict.refusal("check")
    assert refused is not None and "--migrate-down" in refused and "--restore-backup" in refused
    assert [verdict.refusal(p) for p in ("ignore", "down", "restore")] == [None, None, None]
    lacking = Verdict("auth", "v1", None, ("0002_outbox", "0003_scratch"), ("0002_outbox",), None)
    assert "cannot undo 0002_outbox: the running image has no 0002_outbox.down.sql" in str(lacking.refusal("down"))
    assert "no backup was taken just before 0002_outbox was applied" in str(lacking.refusal("restore"))
    clear = Verdict("auth", "v4", "0004_nick", (), (), None)
    assert [clear.refusal(p) for p in ("check", "ignore", "down", "restore")] == [None] * 4
