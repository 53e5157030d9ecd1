"""A canary secret value must never reach a terminal, a log or a non-private file."""

from __future__ import annotations

import stat

import pytest

from tests.conftest import Project, strong_secrets

CANARY = strong_secrets("CANARYxq")


@pytest.fixture
def canary_project(project: Project) -> Project:
    project.environ.update(CANARY)
    return project


@pytest.mark.parametrize("env", ["staging", "production"])
def test_canary_never_printed_or_inlined(canary_project: Project, env: str) -> None:
    p = canary_project
    runs = [
        p.cli("envs"),
        p.cli("envs", "--json"),
        p.cli("validate", "--env", env),
        p.cli("config", "--env", env),
        p.cli("config", "--env", env, "--json"),
        p.cli("render", "--env", env),
        p.cli("render", "--env", env, "--check"),
        p.cli("--debug", "render", "--env", env),
    ]
    # Drift in a secret-bearing file: reported, never shown.
    rotated = {f"{env.upper()}_JWT_KEY": "k2:CANARYxq-rotated-jwt-key-0123456789abcdefAA"}
    drift = p.cli("render", "--env", env, "--check", extra_env=rotated)
    assert drift.code == 1
    auth_drift = "(holds secrets: values not shown)\n  changed: JWT_PUBLIC_KEYS\n  changed: JWT_SIGNING_KEY\n"
    assert f"changed: .mfe/{env}/env/auth.env {auth_drift}" in drift.out
    runs.append(drift)
    # A weak secret is refused without echoing it.
    weak = p.cli("validate", "--env", env, extra_env={f"{env.upper()}_JWT_KEY": "k1:CANARYxq-short"})
    assert weak.code == 2
    runs.append(weak)
    for result in runs:
        assert "CANARYxq" not in result.out + result.err
    bundle = p.root / ".mfe" / env
    for path in bundle.rglob("*"):
        if not path.is_file():
            continue
        text = path.read_text()
        mode = stat.S_IMODE(path.stat().st_mode)
        if path.parent.name == "env":
            assert mode == 0o600, path
        else:
            assert "CANARYxq" not in text, f"secret inlined in {path}"
    # The secrets were written somewhere: the private env files hold them.
    assert CANARY[f"{env.upper()}_JWT_KEY"] in (bundle / "env" / "auth.env").read_text()
    assert CANARY[f"{env.upper()}_RABBITMQ_PASSWORD"] in (bundle / "env" / "rabbitmq.env").read_text()


def test_console_masks_known_secrets_in_any_message() -> None:
    import io

    from mfe_deploy.console import Console

    out, err = io.StringIO(), io.StringIO()
    console = Console(out, err)
    console.add_secrets(["hunter2-long", "hunter2"])
    console.print("password=hunter2-long other=hunter2")
    console.error(["failed with hunter2"])
    assert out.getvalue() == "password=*** other=***\n"
    assert err.getvalue() == "error: failed with ***\n"
