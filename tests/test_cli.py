from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Project


def test_module_and_console_script_share_the_entry_point() -> None:
    proc = subprocess.run([sys.executable, "-m", "mfe_deploy", "--help"], capture_output=True, text=True, check=True)
    assert "Usage: mfe-deploy" in proc.stdout
    for command in ("envs", "validate", "config", "render"):
        assert command in proc.stdout


def test_envs_table(project: Project) -> None:
    result = project.cli("envs")
    assert (result.code, result.err) == (0, "")
    assert result.out.splitlines() == [
        "ENVIRONMENT  TIER         RUNTIME  TARGET  CONFIG",
        "development  development  auto     local   ok",
        "production   production   docker   local   ok",
        "staging      staging      docker   local   ok",
    ]


def test_envs_marks_a_broken_file_and_still_lists_the_rest(project: Project) -> None:
    project.edit("staging", "event_hub: rabbitmq", "event_hub: kafka")
    result = project.cli("envs", "--json")
    assert result.code == 0
    rows = {row["name"]: row["valid"] for row in json.loads(result.out)}
    assert rows == {"development": True, "production": True, "staging": False}


def test_validate_summarises(project: Project) -> None:
    result = project.cli("validate", "--env", "production")
    assert (result.code, result.err) == (0, "")
    assert result.out == (
        "environments/production.yaml: valid (production, per-service databases, rabbitmq event hub, "
        "nginx on, 9 secrets resolved)\n"
    )


def test_config_shows_merged_values_and_masks_secrets(project: Project) -> None:
    result = project.cli("config", "--env", "production", "--json")
    assert result.code == 0
    data = json.loads(result.out)
    gateway = data["services"]["api-gateway"]
    assert gateway["port"] == 3000 and gateway["replicas"] == 2  # base, then production
    assert gateway["resources"] == {"memory": "256m", "cpus": 1.0, "pids": 256}
    assert (gateway["role"], gateway["bundled"], gateway["database"]) == ("gateway", True, False)  # bundled defaults
    assert data["services"]["auth"]["routes"]["public"][1] == "POST /api/auth/login"
    assert data["services"]["auth"]["resources"]["memory"] == "384m"  # override
    assert data["services"]["payments"]["resources"]["memory"] == "256m"  # model default
    assert data["nginx"]["rate_limit"] == {"rate": "100r/m", "burst": 20, "zone_size": "10m"}
    assert data["jwt"] == {"expires_in": "15m", "refresh_expires_in": "7d", "issuer": "auth", "signing_key": None}
    assert data["secrets"]["jwt_keys"] == ["*** (env:PRODUCTION_JWT_KEY)"]


def test_config_never_shows_development_defaults(project: Project) -> None:
    result = project.cli("config", "--env", "development")
    assert result.code == 0
    assert "s--PI040JSlDeR47WkVqM794oXAQH6eLFDSrSGrMOVQ" not in result.out  # the development key's private half
    assert "jwt_keys:\n  - '*** (env:JWT_SIGNING_KEY)'" in result.out


def test_keys_new_writes_a_private_file_and_prints_only_the_public_half(project: Project) -> None:
    from mfe_deploy.config import jwtkeys

    path = project.root / "keys" / "next.key"
    made = project.cli("keys", "new", "--out", str(path), "--kid", "2026-11")
    assert made.code == 0, made.err
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = jwtkeys.parse(path.read_text())
    assert not isinstance(key, str) and key.kid == "2026-11"
    assert made.out.splitlines()[-1] == f"public key: {key.public}"
    assert key.private.reveal().split(":")[1] not in made.out + made.err
    again = project.cli("keys", "new", "--out", str(path))
    assert again.code == 2 and "never overwritten" in again.err  # bad input (issue 34: it was 1)
    assert jwtkeys.parse(path.read_text()) == key  # untouched
    as_json = project.cli("keys", "new", "--out", str(path.with_name("json.key")), "--kid", "2026-12", "--json")
    said = json.loads(as_json.out)
    written = jwtkeys.parse(path.with_name("json.key").read_text())
    assert not isinstance(written, str)
    assert said == {"file": str(path.with_name("json.key")), "kid": "2026-12", "public": written.public}
    assert written.private.reveal().split(":")[1] not in as_json.out + as_json.err
    bad = project.cli("keys", "new", "--out", str(path.with_name("x.key")), "--kid", "a b")
    assert bad.code != 0 and "--kid" in bad.err and not path.with_name("x.key").exists()
    # Listed second, then made the signer: `keys list` says which signs; no private half is shown.
    project.edit(
        "staging", '  jwt_keys: ["${STAGING_JWT_KEY}"]', f'  jwt_keys: ["${{STAGING_JWT_KEY}}", "file:{path}"]'
    )
    listed = project.cli("keys", "list", "--env", "staging")
    assert listed.code == 0, listed.err
    first = jwtkeys.parse(project.environ["STAGING_JWT_KEY"])
    assert not isinstance(first, str)
    assert listed.out.splitlines() == [
        f"k1: signs (held by auth only); public key {first.public}",
        f"2026-11: verifies only; public key {key.public}",
    ]
    assert key.private.reveal().split(":")[1] not in listed.out + listed.err


def test_render_writes_once_then_changes_nothing(project: Project) -> None:
    first = project.cli("render", "--env", "staging")
    assert (first.code, first.out) == (0, "rendered 11 files to .mfe/staging (11 changed)\n")
    bundle = project.root / ".mfe" / "staging"
    before = {p: p.read_bytes() for p in bundle.rglob("*") if p.is_file()}
    second = project.cli("render", "--env", "staging")
    assert (second.code, second.out) == (0, "rendered 11 files to .mfe/staging (0 changed)\n")
    assert {p: p.read_bytes() for p in bundle.rglob("*") if p.is_file()} == before
    check = project.cli("render", "--env", "staging", "--check")
    assert (check.code, check.out) == (0, ".mfe/staging: up to date (11 files)\n")
    checked = project.cli("render", "--env", "staging", "--check", "--json")
    assert checked.code == 0 and json.loads(checked.out) == {
        "env": "staging",
        "bundle": ".mfe/staging",
        "files": 11,
        "drift": [],
    }
    (bundle / "compose.yml").unlink()
    again = project.cli("render", "--env", "staging", "--json")
    assert again.code == 0 and json.loads(again.out) == {
        "env": "staging",
        "bundle": ".mfe/staging",
        "files": 11,
        "changed": ["compose.yml"],
    }


def test_render_check_shows_a_diff_and_writes_nothing(project: Project) -> None:
    assert project.cli("render", "--env", "staging").code == 0
    compose = project.root / ".mfe" / "staging" / "compose.yml"
    project.edit("staging", "restart: unless-stopped", "restart: always")
    before = compose.read_text()
    as_json = project.cli("render", "--env", "staging", "--check", "--json")
    assert as_json.code == 1 and json.loads(as_json.out)["drift"] == [
        {"kind": "changed", "path": "compose.yml", "secret": False}
    ]
    result = project.cli("render", "--env", "staging", "--check")
    assert result.code == 1
    assert result.out.splitlines()[:3] == [
        "changed: .mfe/staging/compose.yml",
        "--- a/compose.yml",
        "+++ b/compose.yml",
    ]
    assert '-    restart: "unless-stopped"' in result.out
    assert '+    restart: "always"' in result.out
    assert result.err == "error: 1 file(s) in .mfe/staging differ from the rendered bundle\n"
    assert compose.read_text() == before


def test_render_check_on_an_empty_directory_lists_missing_files(project: Project) -> None:
    result = project.cli("render", "--env", "development", "--check")
    assert result.code == 1
    assert "missing: .mfe/development/compose.yml" in result.out
    assert not (project.root / ".mfe").exists()


def test_render_removes_files_it_no_longer_renders(project: Project) -> None:
    out = project.root / "out"
    assert project.cli("render", "--env", "staging", "--out", str(out)).code == 0
    assert (out / "nginx" / "nginx.conf").exists()
    project.edit("staging", "  enabled: true", "  enabled: false")
    result = project.cli("render", "--env", "staging", "--out", str(out))
    assert result.code == 0
    assert not (out / "nginx" / "nginx.conf").exists()


def test_engine_version_decides_start_interval(project: Project) -> None:
    out = project.root / "out"
    assert project.cli("render", "--env", "staging", "--out", str(out), "--engine-version", "20.10.24").code == 0
    assert "start_interval" not in (out / "compose.yml").read_text()
    assert project.cli("render", "--env", "staging", "--out", str(out), "--engine-version", "27.1.0").code == 0
    assert "start_interval: 1s" in (out / "compose.yml").read_text()


def test_env_files_are_private(project: Project) -> None:
    assert project.cli("render", "--env", "production").code == 0
    env_dir = project.root / ".mfe" / "production" / "env"
    assert stat.S_IMODE(env_dir.stat().st_mode) == 0o700
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in env_dir.iterdir()}
    assert modes and set(modes.values()) == {0o600}, modes
    leftovers = [p for p in Path(project.root / ".mfe").rglob("*.tmp")]
    assert leftovers == []


def test_read_only_commands_need_no_secret(project: Project) -> None:
    """Monitoring and an on-call person look without holding the keys; changing something needs them."""
    bare = {k: v for k, v in project.environ.items() if not k.startswith(("STAGING_", "PRODUCTION_"))}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "mfe_deploy", "-C", str(project.root), *args]
        return subprocess.run(argv, capture_output=True, text=True, env=bare, timeout=60, check=False)

    local = ("--env", "production", "--runtime", "local")
    looks = [
        ("status", "--env", "production"),  # production's own runtime: docker
        ("status", *local),
        ("health", *local),
        ("logs", *local, "auth"),
        ("releases", "--env", "production"),
        ("history", "--env", "production"),
        ("lock", "status", "--env", "production"),
        ("down", *local),
    ]
    for args in looks:
        proc = run(*args)
        assert proc.returncode in (0, 1), (args, proc.stderr)
        assert "PRODUCTION_" not in proc.stderr, (args, proc.stderr)
    rows = json.loads(run("status", *local, "--json").stdout)
    assert {row["name"] for row in rows} >= {"api-gateway", "auth", "postgres"}
    # `down` is a change: it is in the audit log, with or without anything to stop.
    history = json.loads(run("history", "--env", "production", "--json").stdout)
    assert [(h["action"], h["result"]) for h in history] == [("down", "ok")]
    up = run("up", *local)
    assert up.returncode == 2 and "PRODUCTION_JWT_KEY" in up.stderr


@pytest.mark.parametrize(
    ("runtime", "message"),
    [
        ("dokcer", "error: unknown runtime 'dokcer' (did you mean 'docker'?): one of auto, docker, local, swarm\n"),
        ("eventhub", "error: unknown runtime 'eventhub': one of auto, docker, local, swarm\n"),
        ("premigration", "error: unknown runtime 'premigration': one of auto, docker, local, swarm\n"),
    ],
)
def test_a_runtime_that_is_none_is_a_usage_error(project: Project, runtime: str, message: str) -> None:
    """`--runtime dokcer` exited 1 and `--runtime eventhub` 70 (an AttributeError): both are bad input."""
    result = project.cli("status", "--env", "development", "--runtime", runtime)
    assert (result.code, result.err, result.out) == (2, message, "")


def test_every_runtime_the_registry_lists_is_one() -> None:
    import importlib

    from mfe_deploy.runtimes import registry

    assert registry.available() == ["docker", "local", "swarm"]
    for name in registry.available():
        assert callable(importlib.import_module(f"mfe_deploy.runtimes.{name}").RUNTIME)


@pytest.mark.parametrize(("no_color", "coloured"), [(None, True), ("1", False)])
def test_no_color_turns_colour_off_on_a_terminal(project: Project, no_color: str | None, coloured: bool) -> None:
    """On a pseudo-terminal, as a person sees it: NO_COLOR=1 still printed red escape codes."""
    import os
    import pty

    environ = {k: v for k, v in project.environ.items() if k != "NO_COLOR"}
    if no_color is not None:
        environ["NO_COLOR"] = no_color
    primary, secondary = pty.openpty()
    argv = [sys.executable, "-m", "mfe_deploy", "-C", str(project.root), "validate", "--env", "nosuch"]
    proc = subprocess.Popen(argv, stdin=secondary, stdout=secondary, stderr=secondary, env=environ)
    os.close(secondary)
    seen = b""
    try:
        while chunk := os.read(primary, 4096):
            seen += chunk
    except OSError:  # EIO: the terminal's other end closed
        pass
    finally:
        os.close(primary)
    assert proc.wait(timeout=60) == 2
    assert b"unknown environment 'nosuch'" in seen
    assert (b"\x1b[" in seen) is coloured, seen


def test_version_on_the_root_and_as_a_command(project: Project) -> None:
    from mfe_deploy import __version__

    assert project.cli("--version").out == f"mfe-deploy {__version__}\n"
    assert project.cli("version").out == f"mfe-deploy {__version__}\n"
    assert json.loads(project.cli("version", "--json").out) == {"name": "mfe-deploy", "version": __version__}


def test_envs_finds_the_project_above_and_refuses_a_folder_without_one(project: Project, tmp_path: Path) -> None:
    """Issue 34: from a folder with no environments/ (or -C /nonexistent) `envs` printed an empty table,
    exit 0; and it said `ok` for environments whose secrets are not set, where validate exits 2."""
    env = {k: v for k, v in project.environ.items() if not k.startswith("STAGING_")}

    def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "mfe_deploy", *args]
        return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False)

    below = project.root / "services" / "mine"
    below.mkdir(parents=True)
    found = run(below, "envs")
    assert found.returncode == 0, found.stderr
    assert "staging      staging      docker   local   secrets missing" in found.stdout.splitlines()
    assert "production   production   docker   local   ok" in found.stdout.splitlines()
    empty = tmp_path / "empty"
    empty.mkdir()
    for cwd, args in ((empty, ("envs",)), (empty, ("-C", "/nonexistent", "envs"))):
        refused = run(cwd, *args)
        where = "/nonexistent" if "-C" in args else str(empty)
        assert (refused.returncode, refused.stdout) == (2, "")
        assert refused.stderr == (
            f"error: no environments/ folder in {where}: run mfe-deploy in a project (the folder that holds "
            "environments/, or one below it), or give it with -C DIR\n"
        )


def test_a_plan_with_changes_exits_1_without_calling_itself_an_error(project: Project) -> None:
    """Issue 34: pending changes were printed in red as `error:`; they are the plan's answer (exit 1: a CI gate)."""
    result = project.cli("plan", "--env", "development", "--runtime", "local")
    assert result.code == 1, result.err
    assert result.out.splitlines()[0].split() == ["STEP", "TARGET", "WHY"]
    assert "error" not in result.err and result.err.splitlines()[-1] == "development: 11 step(s) to reach dev"
    # Nothing runs yet: PostgreSQL starts with this deploy, so every database service's migrations are planned.
    migrating = [line.split()[1] for line in result.out.splitlines() if line.split()[0] == "migrate"]
    assert migrating == ["auth", "payments", "admin", "profile"], result.out


@pytest.mark.parametrize(
    ("argv", "code", "out", "err"),
    [
        # Issue 34: the group's options did not reach its verbs (`Missing option '--env'`).
        (("migrate", "--env", "nosuch", "status"), 2, "", "unknown environment 'nosuch'"),
        (("backup", "--env", "development", "--json", "list"), 0, "[]", ""),
        (("backup", "--env", "development", "list", "--json"), 0, "[]", ""),
        (("backup", "list", "--env", "development"), 0, "no backups of development", ""),
        # Issue 34: an empty history, ledger or backups folder printed a bare header.
        (("releases", "--env", "development"), 0, "no release of development recorded yet", ""),
        (("history", "--env", "development"), 0, "no action on development recorded yet", ""),
        # ... and each group's bare form has its explicit verb.
        (("migrate", "apply", "--help"), 0, "what `migrate --env E` does", ""),
        (("backup", "create", "--help"), 0, "what `backup --env E` does", ""),
        (("migrate", "--help"), 0, "Without a verb, `migrate --env E` applies them", ""),
        (("backup", "--help"), 0, "Without a verb, `backup --env E` takes one", ""),
        # Issue 34: `help` answered "Did you mean 'health'?"; a bad unit or an existing key file exited 1.
        (("help",), 0, "Usage: mfe-deploy [OPTIONS] COMMAND", ""),
        (("help", "migrate", "status"), 0, "Usage: mfe-deploy migrate status [OPTIONS]", ""),
        (("help", "nosuch"), 2, "", "error: no command 'nosuch': see mfe-deploy help"),
        (
            ("logs", "--env", "development", "--runtime", "local", "auht"),
            2,
            "",
            "unknown unit 'auht' (did you mean 'auth'?)",
        ),
        (("backup", "prune", "--env", "development", "--keep", "3"), 0, "(dry run: add --yes)", ""),
        # watch: the bare form watches (it needs --env), its verb schedules a look every minute.
        (("watch",), 2, "", "error: mfe-deploy watch needs --env NAME"),
        (("watch", "schedule", "--env", "development"), 0, "* * * * * root /bin/sh -c", ""),
        (("watch", "--env", "development", "schedule"), 0, "watch --env development --once", ""),
        (("watch", "schedule", "--env", "development", "--systemd"), 0, "OnCalendar=*-*-* *:*:00", ""),
        (("tls", "schedule", "--env", "development"), 1, "", "nginx.tls.mode is not acme: there is nothing to renew"),
        # nodes: the group's --env reaches drain and activate; without one, a usage error (2) that says so.
        (("nodes", "drain", "n1"), 2, "", "error: mfe-deploy nodes drain needs --env NAME"),
        (("nodes", "--json", "activate", "n1"), 2, "", "error: mfe-deploy nodes activate needs --env NAME"),
        (("nodes",), 2, "", "error: mfe-deploy nodes needs --env NAME"),
        (("nodes", "--env", "nosuch", "drain", "n1"), 2, "", "unknown environment 'nosuch'"),
    ],
)
def test_a_groups_options_reach_its_verbs(
    project: Project, argv: tuple[str, ...], code: int, out: str, err: str
) -> None:
    result = project.cli(*argv)
    assert result.code == code, result.err
    assert out in " ".join(result.out.split()) and err in result.err


def test_one_release_option_and_one_default_for_render_and_up(project: Project) -> None:
    """Issue 34: render defaulted the image tag to latest while up used git describe, so `render --check`
    against what up wrote reported every image line; --version named the tag and the tool's version."""
    out = project.root / ".mfe" / "development"
    assert project.cli("render", "--env", "development").code == 0
    compose = (out / "compose.yml").read_text()
    assert 'image: "universal-mfe/auth:dev"' in compose and ":latest" not in compose  # no git here: dev
    assert project.cli("render", "--env", "development", "--check").code == 0
    for spelling in ("--release", "--version"):
        drift = project.cli("render", "--env", "development", "--check", spelling, "v9")
        assert drift.code == 1 and '+    image: "universal-mfe/auth:v9"' in drift.out, (spelling, drift.out)


def test_the_root_help_groups_every_command_with_its_whole_summary(project: Project) -> None:
    """Issue 34: 25 commands flat in registration order (restore first), summaries cut mid-sentence."""
    shown = project.cli("--help").out
    titles = [line[:-1] for line in shown.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert titles[-5:] == ["Start and deploy", "Inspect", "Data", "Operate", "This tool"]  # no "Other"
    commands = shown.split("Start and deploy:", 1)[1]
    assert "..." not in commands
    first = [line.split()[0] for line in commands.splitlines() if line.startswith("  ") and line[2] != " "]
    assert first[:3] == ["init", "up", "plan"] and {"restore", "backup", "migrate", "help", "version"} <= set(first)


@pytest.mark.parametrize(
    "group",
    [
        "admin",
        "backup",
        "db",
        "hosts",
        "images",
        "jobs",
        "keys",
        "lock",
        "maintenance",
        "migrate",
        "nodes",
        "notify",
        "tls",
    ],
)
def test_every_groups_help_gives_each_verb_its_whole_first_sentence(project: Project, group: str) -> None:
    """Issue 34: click cut a verb's summary at the terminal's width, mid-sentence (`tls --help`: "...")."""
    shown = project.cli(group, "--help")
    assert shown.code == 0, shown.err
    verbs = shown.out.split("Commands:", 1)[1]
    assert "..." not in verbs and verbs.strip(), shown.out
    entries = " ".join(verbs.split())
    assert entries.count(".") >= len([line for line in verbs.splitlines() if line.startswith("  ") and line[2] != " "])


def test_shell_completion_completes_commands_and_group_verbs(project: Project) -> None:
    for words, cword, expected in (("mfe-deploy mig", "1", "migrate"), ("mfe-deploy backup cr", "2", "create")):
        extra = {"_MFE_DEPLOY_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": cword}
        argv = [sys.executable, "-c", "from mfe_deploy.cli.main import main; main()"]
        done = subprocess.run(argv, env={**project.environ, **extra}, capture_output=True, text=True, timeout=60)
        assert done.stdout.split() == [expected], done.stdout + done.stderr
    script = project.cli("--show-completion", "bash")
    assert script.code == 0 and "_MFE_DEPLOY_COMPLETE=complete_bash" in script.out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (("validate", "--env", "staging"), {"file": "environments/staging.yaml", "valid": True, "tier": "staging"}),
        (("lock", "status", "--env", "staging"), {"env": "staging", "state": "unlocked", "holder": None}),
        (("lock", "release", "--env", "staging"), {"env": "staging", "released": False, "holder": None}),
        (("maintenance", "status", "--env", "staging"), {"env": "staging", "on": False, "notice": None}),
        (("keys", "list", "--env", "staging"), {"issuer": "auth"}),
        (("envs",), None),
        (("version",), {"name": "mfe-deploy"}),
    ],
)
def test_every_command_that_prints_data_takes_json(
    project: Project, argv: tuple[str, ...], expected: dict[str, object] | None
) -> None:
    """Issue 34: validate, lock status, maintenance status and keys list had no --json."""
    result = project.cli(*argv, "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    if expected is not None:
        assert {key: data[key] for key in expected} == expected
    assert "canary" not in result.out  # no secret value: keys list shows public halves only


@pytest.mark.parametrize(
    ("args", "moved"),
    [
        (["validate", "--env", "x", "--debug"], ["--debug", "validate", "--env", "x"]),
        (["--debug", "up"], ["--debug", "up"]),
        (["run", "auth", "--", "tool", "--debug"], ["run", "auth", "--", "tool", "--debug"]),  # the command's own
    ],
)
def test_debug_is_taken_at_any_position(project: Project, args: list[str], moved: list[str]) -> None:
    """Issue 34: --debug worked only before the command (`No such option: --debug` after it)."""
    from mfe_deploy.cli.main import _global_flags_first

    assert _global_flags_first(args) == moved
    result = project.cli("validate", "--env", "development", "--debug")
    assert result.code == 0 and "valid" in result.out, result.err


@pytest.mark.parametrize(
    "args",
    [
        ["rollback", "auth", "--env", "production", "--restore-backup", "--yes"],
        ["rollback", "auth", "--env", "production", "--migrate-down", "--yes"],
        ["migrate", "down", "--env", "production", "--service", "auth", "--to", "none", "--yes"],
    ],
)
def test_what_can_lose_data_needs_force_in_production(project: Project, args: list[str]) -> None:
    """Refused before anything is reached (no runtime, no database): --yes answers the question, --force
    is the production guard."""
    done = project.cli(*args)
    assert done.code == 1, done.err
    assert "refused in production without --force" in done.err
    assert "Traceback" not in done.err


def test_a_stale_lock_is_released_and_said_as_data(project: Project) -> None:
    """`lock release --json`: what was released, and the lock file gone (its holder's process is not alive)."""
    lock = project.root / ".mfe" / "development" / "state" / "deploy.lock"
    lock.parent.mkdir(parents=True)
    holder = {"user": "ops", "host": "elsewhere", "pid": 2**22 + 7, "command": "mfe-deploy up", "since": "2026-12-01"}
    lock.write_text(json.dumps(holder))
    done = project.cli("lock", "release", "--env", "development", "--json")
    assert done.code == 0, done.err
    assert json.loads(done.out) == {
        "env": "development",
        "released": True,
        "holder": "ops@elsewhere pid 4194311 running `mfe-deploy up` since 2026-12-01",
    }
    assert not lock.exists()
