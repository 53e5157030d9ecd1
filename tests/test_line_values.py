"""Every value that is rendered into a line-based file (env files, supervisord, nginx, cron, systemd
units, compose) is refused at validation when it holds a control character or a line separator, with
the file and line of the very value; the env-file readers split lines on `\\n` alone (review findings 3, 5
and 9: a `\\r` in an `env:` value set JWT_PUBLIC_KEYS and ROUTES in the gateway; `@reboot` in a backup
schedule; a newline in a `command` element added a supervisord section)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mfe_deploy.config import loader
from mfe_deploy.errors import ConfigError
from mfe_deploy.exec.withenv import read_env_file
from mfe_services import envfile
from tests.conftest import REPO, Project

# Every C0 control character, DEL, every C1 control character, and the Unicode line and paragraph separators.
CHARACTERS = [chr(c) for c in (*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029)]

# (where, the environment file with {v} for a double-quoted YAML scalar's text, the line of the value)
FIELDS = [
    ("services.auth.env.GREETING", 'services:\n  auth:\n    env:\n      GREETING: "{v}"\n', 5),
    ("services.auth.command[1]", 'services:\n  auth:\n    command: [python, "{v}"]\n', 4),
    ("services.auth.build.context", 'services:\n  auth:\n    build: {{context: "{v}"}}\n', 4),
    ("services.auth.migrations.path", 'services:\n  auth:\n    migrations: {{path: "{v}"}}\n', 4),
    ("backup.directory", 'backup:\n  directory: "{v}"\n', 3),
    ("backup.schedule", 'backup:\n  schedule: "0 2 * * {v}"\n', 3),
    ("nginx.tls.certificate", 'nginx:\n  tls: {{mode: files, certificate: "{v}", key: k.pem}}\n', 3),
    ("ssh.identity_file", 'ssh:\n  identity_file: "{v}"\n', 3),
    ("swarm.nodes[0]", 'swarm:\n  nodes: ["{v}"]\n', 3),
]


def _yaml_escape(ch: str) -> str:
    return f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("line-values")
    shutil.copytree(REPO / "environments", folder / "environments")
    return folder


@pytest.mark.parametrize(("where", "text", "line"), FIELDS, ids=[f[0] for f in FIELDS])
def test_every_control_character_is_refused_at_the_line_of_its_value(
    root: Path, where: str, text: str, line: int
) -> None:
    path = root / "environments" / "t.yaml"
    path.write_text("extends: development\n" + text.format(v="a"))
    if where != "backup.schedule":  # a valid value passes (the schedule's "a" is not a cron field)
        loader.load(root, "t")
    missed = []
    for ch in CHARACTERS:
        path.write_text("extends: development\n" + text.format(v=f"a{_yaml_escape(ch)}b"))
        try:
            loader.load(root, "t")
        except ConfigError as exc:
            [problem] = exc.problems
            if (problem.file, problem.line) != ("environments/t.yaml", line) or not problem.path.startswith(
                where.split("[")[0]
            ):
                missed.append(f"{ch!r}: {problem}")
            continue
        missed.append(f"{ch!r}: accepted")
    assert not missed, missed


def test_validate_names_the_file_and_line_and_exits_2(project: Project) -> None:
    """The value of finding 3: it made GET /api/auth/me public and trusted an attacker's key."""
    value = "hi\\rJWT_PUBLIC_KEYS=evil:AAAA,\\rROUTES={}\\r#"
    project.env_file("t").write_text(f'extends: development\nservices:\n  auth:\n    env:\n      GREETING: "{value}"\n')
    result = project.cli("validate", "--env", "t")
    assert result.code == 2 and result.out == ""
    assert result.err == (
        "error: environments/t.yaml:5: services.auth.env.GREETING: holds a control character or line separator "
        "(\\r), which no line-based file can carry\n"
    )


@pytest.mark.parametrize(
    "schedule", ["@reboot root touch /tmp/x #", "@daily", "0 2 * * * root", "0 2 * * mon", "0 2 * * $(id)"]
)
def test_a_backup_schedule_is_five_cron_fields_and_nothing_else(project: Project, schedule: str) -> None:
    project.env_file("t").write_text(f'extends: development\nbackup:\n  schedule: "{schedule}"\n')
    result = project.cli("validate", "--env", "t")
    assert result.code == 2 and "environments/t.yaml:3: backup.schedule: expected 5 cron fields" in result.err


@pytest.mark.parametrize("read", [envfile.read, read_env_file], ids=["services", "withenv"])
def test_the_env_file_readers_end_a_line_at_a_newline_only(tmp_path: Path, read: object) -> None:
    path = tmp_path / "service.env"
    path.write_bytes(b"GREETING='hi\rJWT_PUBLIC_KEYS=evil\xc2\x85ROUTES=x\xe2\x80\xa8Y=z'\nPORT='3001'\n")
    values = read(str(path))  # type: ignore[operator]
    assert values == {"GREETING": "hi\rJWT_PUBLIC_KEYS=evil\x85ROUTES=x\u2028Y=z", "PORT": "3001"}
