"""app.rollback, the one rollback flow of docker and swarm, over recorded primitives (a unit test of the
use case; tests/test_docker_runtime.py, test_schema_rollback.py and test_swarm.py run it on real engines)."""

from __future__ import annotations

import pytest

from mfe_deploy.app import rollback as app
from mfe_deploy.errors import MfeError
from mfe_deploy.ops import schema
from mfe_deploy.runtimes.contract import Rollbacks, StartFailed
from mfe_deploy.state.ledger import Release

CURRENT = {"auth": "v2", "api-gateway": "v2"}
RELEASE = Release(7, "t", "ci", "rollback", "succeeded", {"auth": "v1", "api-gateway": "v2"})


class Recording:
    def __init__(self, verdict: schema.Verdict | None = None, *, fails: bool = False, refuse: str = "") -> None:
        self.verdict, self.fails, self.refuse = verdict, fails, refuse
        self.calls: list[tuple[object, ...]] = []

    def rollback_target(self, service: str, to: str | None) -> tuple[dict[str, str], str]:
        self.calls.append(("target", service, to))
        return dict(CURRENT), to or "v1"

    def rollback_verdict(self, service: str, target: str) -> schema.Verdict | None:
        self.calls.append(("verdict", service, target))
        return self.verdict

    def undo_migrations(self, verdict: schema.Verdict | None, policy: schema.Policy) -> dict[str, str]:
        self.calls.append(("undo", policy))
        if self.refuse:
            raise MfeError(self.refuse)
        return {"auth": "0001"} if verdict else {}

    def restore_for_rollback(
        self, verdict: schema.Verdict, current: dict[str, str], versions: dict[str, str], timeout: float
    ) -> Release:
        self.calls.append(("restore", verdict.service, versions["auth"]))
        return RELEASE

    def write_bundle(self, versions: dict[str, str]) -> str:
        self.calls.append(("write", versions["auth"]))
        return "digest-" + versions["auth"]

    def roll_back(self, service: str, target: str, timeout: float) -> None:
        self.calls.append(("roll", service, target))
        if self.fails:
            raise StartFailed(f"{service} is unhealthy")

    def revert(self, current: dict[str, str], service: str, timeout: float) -> None:
        self.calls.append(("revert", current[service]))

    def record(
        self,
        kind: str,
        outcome: str,
        versions: dict[str, str],
        digest: str,
        heads: dict[str, str],
        note: str = "",
        backup: str = "",
    ) -> None:
        self.calls.append(("record", kind, outcome, digest, tuple(heads), note))

    def released(self) -> Release:
        self.calls.append(("released",))
        return RELEASE


BLOCKING = schema.Verdict("auth", "v1", "0001", ("0002_drop",), (), "b-1")


def test_a_rollback_writes_replaces_records_in_that_order() -> None:
    rt = Recording()
    assert isinstance(rt, Rollbacks)
    assert app.rollback(rt, "auth", None, 30) is RELEASE
    assert rt.calls == [
        ("target", "auth", None),
        ("verdict", "auth", "v1"),
        ("undo", "check"),
        ("write", "v1"),
        ("roll", "auth", "v1"),
        ("record", "rollback", "succeeded", "digest-v1", (), "auth: v2 -> v1"),
        ("released",),
    ]


def test_a_failed_replacement_is_recorded_its_files_reverted_and_raised() -> None:
    rt = Recording(fails=True)
    with pytest.raises(StartFailed, match="auth is unhealthy"):
        app.rollback(rt, "auth", "v1", 30)
    assert rt.calls[-3:] == [
        ("roll", "auth", "v1"),
        ("record", "rollback", "failed", "digest-v1", (), ""),
        ("revert", "v2"),
    ]


def test_ignore_asks_nothing_of_the_schema_and_restore_restores_instead_of_replacing() -> None:
    rt = Recording()
    app.rollback(rt, "auth", "v1", 30, schema_policy="ignore")
    assert ("verdict", "auth", "v1") not in rt.calls
    rt = Recording(BLOCKING)
    assert app.rollback(rt, "auth", "v1", 30, schema_policy="restore") is RELEASE
    assert rt.calls == [("target", "auth", "v1"), ("verdict", "auth", "v1"), ("restore", "auth", "v1")]


def test_a_refusal_changes_nothing() -> None:
    rt = Recording(BLOCKING, refuse="auth: 0002_drop has no down migration")
    with pytest.raises(MfeError, match="no down migration"):
        app.rollback(rt, "auth", "v1", 30)
    assert [c[0] for c in rt.calls] == ["target", "verdict", "undo"]


def test_the_plan_changes_nothing_and_names_the_versions() -> None:
    rt = Recording(BLOCKING)
    found = app.plan(rt, "auth", None)
    assert (found.service, found.running, found.target, found.verdict) == ("auth", "v2", "v1", BLOCKING)
    assert [c[0] for c in rt.calls] == ["target", "verdict"]
