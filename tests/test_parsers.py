"""Parsers of what the engines answer, on captured output; and command lines as values."""

from __future__ import annotations

import json

import pytest
import yaml

from mfe_deploy.compose import parse_health_log, parse_ps, parse_version
from mfe_deploy.exec.command import Command
from mfe_deploy.exec.runner import Completed
from mfe_deploy.exec.secret import Secret
from mfe_deploy.ops import migrations
from mfe_deploy.render import render
from mfe_deploy.supervisor import parse_status

SUPERVISORCTL_STATUS = """\
admin                            RUNNING   pid 2244, uptime 0:00:41
api-gateway                      STARTING
auth                             FATAL     Exited too quickly (process log may have details)
postgres                         RUNNING   pid 2201, uptime 0:00:45
profile                          BACKOFF   Exited too quickly (process log may have details)
redis                            STOPPED   Nov 24 02:54 AM
"""

COMPOSE_PS_LINES = """\
{"Service":"auth","Name":"p-auth-1","State":"running","Health":"healthy","Image":"mfe/auth:v1","ExitCode":0}
{"Service":"api-gateway","Name":"p-api-gateway-1","State":"restarting","Health":"","Image":"mfe/api-gateway:v3","ExitCode":3}
"""


def test_supervisorctl_status() -> None:
    states = parse_status(SUPERVISORCTL_STATUS)
    assert {n: (s.state, s.pid) for n, s in states.items()} == {
        "admin": ("RUNNING", 2244),
        "api-gateway": ("STARTING", None),
        "auth": ("FATAL", None),
        "postgres": ("RUNNING", 2201),
        "profile": ("BACKOFF", None),
        "redis": ("STOPPED", None),
    }
    assert states["auth"].detail == "Exited too quickly (process log may have details)"


@pytest.mark.parametrize("text", [COMPOSE_PS_LINES, "[" + ",".join(COMPOSE_PS_LINES.splitlines()) + "]"])
def test_compose_ps_lines_or_array(text: str) -> None:
    rows = parse_ps(text)
    assert [(r.service, r.state, r.health, r.exit_code) for r in rows] == [
        ("auth", "running", "healthy", 0),
        ("api-gateway", "restarting", "", 3),
    ]
    assert parse_ps("") == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Docker Compose version v2.40.3", (2, 40)),
        ("docker-compose version 1.29.2, build unknown", (1, 29)),
        ("nonsense", None),
    ],
)
def test_compose_version(text: str, expected: tuple[int, int] | None) -> None:
    assert parse_version(text) == expected


@pytest.mark.parametrize(
    ("done", "ok", "error"),
    [
        (
            Completed(
                0, '{"service": "auth", "applied": [{"id": "0001_users", "duration_ms": 5}], "pending": []}\n', ""
            ),
            True,
            "unknown error",
        ),
        (
            Completed(3, '{"service": "auth", "error": {"kind": "blocked", "message": "migration 0003 failed"}}', ""),
            False,
            "migration 0003 failed",
        ),
        (
            Completed(1, "", "Traceback...\nModuleNotFoundError: No module named 'mfe_services'"),
            False,
            "migration runner failed: ModuleNotFoundError: No module named 'mfe_services'",
        ),
    ],
)
def test_migration_runner_answers(done: Completed, ok: bool, error: str) -> None:
    outcome = migrations.parse("auth", done)
    assert (outcome.ok, outcome.error) == (ok, error)


def test_applied_collects_heads_or_failures() -> None:
    good = migrations.Outcome("auth", True, {"applied": [{"id": "0001_a"}, {"id": "0002_b"}]})
    quiet = migrations.Outcome("payments", True, {"applied": []})
    bad = migrations.Outcome("admin", False, {"error": {"message": "boom"}})
    assert migrations.applied([good, quiet]) == ([], {"auth": "0002_b"})
    assert migrations.applied([good, bad]) == (["admin: boom"], {})
    adopted = migrations.Outcome("profile", True, {"applied": [], "head": "0001_profiles"})
    assert migrations.applied([good, adopted]) == ([], {"auth": "0002_b", "profile": "0001_profiles"})
    assert migrations.describe([good, quiet]) == ["auth: applied 0001_a", "auth: applied 0002_b"]


def test_commands_print_masked() -> None:
    cmd = Command(
        ("python3", "-m", "mfe_services.migrate", "--service", "auth", "apply"),
        env={"DATABASE_URL": Secret("postgresql://auth_app:hunter2@postgres:5432/auth_db")},
    )
    assert str(cmd) == "DATABASE_URL='***' python3 -m mfe_services.migrate --service auth apply"
    assert cmd.environ()["DATABASE_URL"].endswith("hunter2@postgres:5432/auth_db")


@pytest.mark.parametrize(
    ("tags", "keep", "protected", "expected"),
    [
        (["v7", "v6", "v5", "v4", "v3", "v2", "v1"], 5, set(), ["v2", "v1"]),
        (["v7", "v6", "v5", "v4", "v3", "v2", "v1"], 5, {"v1"}, ["v2"]),
        (["v2", "v1"], 5, set(), []),
        (["v3", "v2", "v1"], 1, {"v3", "v2"}, ["v1"]),
    ],
)
def test_prune_plan(tags: list[str], keep: int, protected: set[str], expected: list[str]) -> None:
    from mfe_deploy.images import plan_prune

    assert plan_prune(tags, keep, protected) == expected


def test_ps_rows_carry_the_networks_a_container_is_attached_to() -> None:
    row = {"Service": "api-gateway", "Name": "p-api-gateway-1", "State": "running", "Networks": "p_edge,p_live"}
    (state,) = parse_ps(json.dumps(row))
    assert state.networks == ("p_edge", "p_live")
    (bare,) = parse_ps(json.dumps({"Service": "auth", "Name": "p-auth-1", "State": "running"}))
    assert bare.networks == ()


def test_nginx_sends_the_gateway_requests_to_the_live_colour_by_a_file_not_a_reload() -> None:
    from mfe_deploy.config import loader
    from tests.conftest import REPO, strong_secrets

    loaded, secrets = loader.load_with_secrets(REPO, "staging", environ=strong_secrets())
    files = render(loaded.env, secrets, versions=dict.fromkeys(loaded.env.services, "v1")).files
    conf = files["nginx/nginx.conf"].text
    assert 'set $mfe_gateway "api-gateway-blue:3000";' in conf
    assert "if (-f /etc/nginx/mfe/live/green) {" in conf and 'set $mfe_gateway "api-gateway-green:3000";' in conf
    assert "resolver 127.0.0.11 valid=1s" in conf and "upstream api_gateway" not in conf
    # /api/ and /health, and the second send of a request whose colour stopped under it (@live_now,
    # @live_green: tests/test_nginx_behaviour.py)
    assert conf.count("proxy_pass http://$mfe_gateway;") == 4
    assert "location @live_now {" in conf and "error_page 502 = @live_now;" in conf
    compose = yaml.safe_load(files["compose.yml"].text)
    assert compose["services"]["nginx"]["networks"] == ["edge", "live"]
    assert compose["networks"]["live"] == {"internal": True}
    assert "live" not in compose["services"]["api-gateway"]["networks"]  # joined once healthy, by the runtime


def test_the_engines_health_log_reads_as_what_each_check_said() -> None:
    log = [
        {"Start": "2026-12-07T13:08:40.1Z", "End": "2026-12-07T13:08:40.3Z", "ExitCode": 0, "Output": ""},
        {
            "Start": "2026-12-07T13:08:42.000000001Z",
            "End": "2026-12-07T13:08:42.250000001Z",
            "ExitCode": 1,
            "Output": 'HTTP/1.1 503 Service Unavailable {"services": {"database": "unhealthy"}}\n',
        },
        {
            "Start": "2026-12-07T23:59:59.500+00:00",
            "End": "2026-12-08T00:00:02.500+00:00",
            "ExitCode": -1,
            "Output": "Health check exceeded timeout (3s)",
        },
        {
            "Start": "2026-12-08T00:00:04Z",
            "End": "2026-12-08T00:00:04.5Z",
            "ExitCode": 1,
            "Output": "Traceback (most recent call last):\n  ...\nConnectionRefusedError: [Errno 111] refused\n",
        },
    ]
    assert parse_health_log(json.dumps({"Status": "unhealthy", "FailingStreak": 3, "Log": log})) == [
        'exit 1 after 0.2s: HTTP/1.1 503 Service Unavailable {"services": {"database": "unhealthy"}}',
        "exit -1 after 3.0s: Health check exceeded timeout (3s)",
        "exit 1 after 0.5s: ConnectionRefusedError: [Errno 111] refused",
    ]
    assert parse_health_log("null") == []  # no healthcheck
    assert parse_health_log("") == parse_health_log("not json") == []
