"""Command lines as values: the builders tested as strings, and the docker runtime driven by a recording
Runner (a fake that answers like an engine would: no monkeypatching, no engine needed)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path, PurePosixPath
from typing import IO

import pytest
import yaml

from mfe_deploy.backups.pg import ComposePostgres
from mfe_deploy.binaries import pin, pinned
from mfe_deploy.compose import Compose, stores_only
from mfe_deploy.config import loader
from mfe_deploy.console import Console
from mfe_deploy.errors import MfeError
from mfe_deploy.exec.command import Command
from mfe_deploy.exec.host import Host, LocalFiles
from mfe_deploy.exec.runner import Completed, Process
from mfe_deploy.exec.secret import Secret
from mfe_deploy.ops import migrations
from mfe_deploy.render import ENV_IN_CONTAINER, SERVICE_UID
from mfe_deploy.runtimes import registry
from mfe_deploy.runtimes.contract import Deployment, Runtime
from mfe_deploy.runtimes.docker.runtime import DockerRuntime
from mfe_deploy.runtimes.local.runtime import LocalRuntime
from mfe_deploy.supervisor import program_fingerprints
from tests.conftest import REPO, strong_secrets

C = Compose(("docker", "compose"), PurePosixPath("/srv/app"))
F = "docker compose -f /srv/app/compose.yml"


@pytest.mark.parametrize(
    ("command", "line"),
    [
        (C.check(), f"{F} config -q"),
        (C.up("postgres", "redis", timeout=90), f"{F} up -d --wait --wait-timeout 90 postgres redis"),
        (C.up(timeout=None, remove_orphans=True), f"{F} up -d --remove-orphans"),
        (C.up("auth", timeout=30.7, no_deps=True), f"{F} up -d --no-deps --wait --wait-timeout 30 auth"),
        (C.run_once("auth", "python3", "-m", "x"), f"{F} run --rm --no-deps -T --entrypoint python3 auth -m x"),
        (
            C.run_once("auth", "python3", "-m", "x", mounts=["/m:/in:ro"], env=["A=1", "URL"]),
            f"{F} run --rm --no-deps -T --entrypoint python3 -v /m:/in:ro -e A=1 -e URL auth -m x",
        ),
        (C.logs("auth", 15), f"{F} logs --no-color --tail 15 auth"),
        (C.logs(None, None, follow=True), f"{F} logs --no-color --tail all --follow"),
        (C.ps(), f"{F} ps --all --format json"),
        (C.stop("auth", "admin"), f"{F} stop auth admin"),
        (C.start("auth"), f"{F} start auth"),
        (C.down(volumes=False), f"{F} down --remove-orphans"),
        (C.down(volumes=True), f"{F} down --remove-orphans --volumes"),
        (C.config_hashes(), f"{F} config --hash '*'"),
        (C.config_hashes(".stores.compose.yml"), "docker compose -f /srv/app/.stores.compose.yml config --hash '*'"),
    ],
)
def test_compose_command_lines(command: Command, line: str) -> None:
    assert str(command) == line
    assert command.cwd == PurePosixPath("/srv/app")


def test_postgres_tools_take_the_password_from_the_environment_never_argv() -> None:
    tool = ComposePostgres(lambda: "app-postgres-1", "postgres", Secret("pg-password-1")).tool("pg_dump", "auth_db")
    expected = "docker exec -i -e PGPASSWORD app-postgres-1 pg_dump -h 127.0.0.1 -U postgres auth_db"
    assert str(tool) == f"PGPASSWORD='***' {expected}"
    assert "pg-password-1" not in " ".join(tool.argv) and tool.environ() == {"PGPASSWORD": "pg-password-1"}


class RecordingRunner:
    """Records every command; answers `compose version`, `docker version` and `ps` as an engine would,
    a migration runner with an empty JSON result, anything else with success."""

    def __init__(self) -> None:
        self.commands: list[Command] = []
        self.ps = ""  # what `compose ps --format json` answers

    def run(self, command: Command, *, timeout: float | None = None) -> Completed:
        self.commands.append(command)
        argv = command.argv
        if argv[-4:] == ("ps", "--all", "--format", "json"):
            return Completed(0, self.ps, "")
        if argv[-1] == "version" and argv[:2] == ("docker", "compose"):
            return Completed(0, "Docker Compose version v2.29.1\n", "")
        if argv[:2] == ("docker", "version"):
            return Completed(0, "26.1.5\n", "")
        if "mfe_services.migrate" in argv:
            return Completed(0, json.dumps({"applied": [], "migrations": [], "pending": []}) + "\n", "")
        return Completed(0, "", "")

    def spawn(self, command: Command, *, stdin: bool = False, stderr: IO[bytes] | None = None) -> Process:
        raise AssertionError(f"not expected here: {command}")

    def lines(self) -> list[str]:
        return [str(c) for c in self.commands if c.argv[-1] != "version"]


@pytest.fixture
def docker(tmp_path: Path) -> tuple[Runtime, RecordingRunner, Path]:
    project = tmp_path / "project"
    shutil.copytree(REPO / "environments", project / "environments")
    shutil.copytree(REPO / "tests" / "fixtures" / "notifications", project / "notifications")
    (project / "environments" / "fake.yaml").write_text(
        "extends: development\nruntime: docker\nservices:\n  notifications:\n    port: 3005\n"
        "    build: {context: notifications}\n    database: true\n    migrations: {path: notifications/migrations}\n"
        "secrets:\n  databases:\n    notifications: ${FAKE_N_DB:-notifications-db-password}\n"
    )
    loaded = loader.load(project, "fake")
    runner = RecordingRunner()
    root = tmp_path / "remote" / "fake"
    host = Host("deploy@example", runner, LocalFiles(), root, remote=True)
    deployment = Deployment(project, loaded, Console(), host, lambda: loader.load_with_secrets(project, "fake", {})[1])
    return registry.create("docker", deployment), runner, root


def test_down_with_volumes_is_one_compose_down(docker: tuple[Runtime, RecordingRunner, Path]) -> None:
    runtime, runner, root = docker
    root.mkdir(parents=True)
    (root / "compose.yml").write_text("name: x\n")
    assert runtime.down(volumes=True) is False  # nothing was running (ps said so)
    compose = f"docker compose -f {root}/compose.yml"
    assert runner.lines() == [f"{compose} ps --all --format json", f"{compose} down --remove-orphans --volumes"]


def test_nothing_is_stopped_when_nothing_was_rendered(docker: tuple[Runtime, RecordingRunner, Path]) -> None:
    runtime, runner, _ = docker
    assert runtime.down(volumes=False) is False
    assert runner.lines() == []


def test_migrations_of_your_own_service_run_in_a_bundled_image_with_the_url_in_the_environment(
    docker: tuple[Runtime, RecordingRunner, Path],
) -> None:
    runtime, runner, root = docker
    (outcome,) = runtime.migrate(["notifications"], ["apply"])
    assert outcome.ok
    (command,) = [c for c in runner.commands if "mfe_services.migrate" in c.argv]
    compose = f"docker compose -f {root}/compose.yml"
    assert str(command).endswith(
        f"{compose} run --rm --no-deps -T --entrypoint python3 -v {root}/migrations/notifications:/run/mfe/migrations:ro"
        " -e MFE_MIGRATIONS_FOLDER=/run/mfe/migrations -e DATABASE_URL auth -m mfe_services.migrate"
        " --service notifications --env-name fake apply"
    )
    assert "notifications-db-password" not in " ".join(command.argv)
    assert "notifications-db-password" in command.environ()["DATABASE_URL"]
    assert (root / "migrations" / "notifications" / "0001_notifications.sql").is_file()  # sent to the host


def test_a_rollbacks_schema_check_asks_the_running_container_and_a_one_off_only_when_none_runs(
    docker: tuple[Runtime, RecordingRunner, Path],
) -> None:
    runtime, runner, root = docker
    assert isinstance(runtime, DockerRuntime)
    runner_args = "python3 -m mfe_services.migrate --service auth --env-name fake"
    runner_args += f" --env-file {ENV_IN_CONTAINER} --user {SERVICE_UID} status"
    assert runtime.schema_status("auth").ok
    (one_off,) = [str(c) for c in runner.commands if "mfe_services.migrate" in c.argv]
    assert "run --rm --no-deps -T --entrypoint python3 auth -m mfe_services.migrate" in one_off, one_off
    runner.commands.clear()
    root.mkdir(parents=True)
    (root / "compose.yml").write_text("name: x\n")  # a deployed bundle, whose containers compose lists
    runner.ps = json.dumps({"Service": "auth", "Name": "fake-auth-1", "State": "running"}) + "\n"
    assert runtime.schema_status("auth").ok
    (in_running,) = [str(c) for c in runner.commands if "mfe_services.migrate" in c.argv]
    assert in_running == f"docker exec --user 0 fake-auth-1 {runner_args}"


def test_rollback_without_a_release_runs_nothing(docker: tuple[Runtime, RecordingRunner, Path]) -> None:
    from mfe_deploy.app.rollback import rollback
    from mfe_deploy.runtimes.contract import Rollbacks, able

    runtime, runner, _ = docker
    with pytest.raises(MfeError, match="no successful release of fake yet"):
        rollback(able(runtime, Rollbacks), "auth", None, 30)
    assert runner.lines() == []


def test_the_local_migration_runner_reads_your_folder(tmp_path: Path) -> None:
    project = tmp_path / "p"
    shutil.copytree(REPO / "environments", project / "environments")
    (project / "environments" / "own.yaml").write_text(
        "extends: development\nservices:\n  notes:\n    port: 3009\n    image: x/notes:1\n    database: true\n"
        "    migrations: {path: db/notes}\nsecrets:\n  databases:\n    notes: ${N:-notes-db-password}\n"
    )
    loaded, secrets = loader.load_with_secrets(project, "own", {})
    own = migrations.command(loaded.env, secrets, "notes", ["status"], python="py", project_dir=project)
    assert own.argv == ("py", "-m", "mfe_services.migrate", "--service", "notes", "--env-name", "own", "status")
    assert own.environ()["MFE_MIGRATIONS_FOLDER"] == str(project / "db" / "notes")
    bundled = migrations.command(loaded.env, secrets, "auth", ["apply"], python="py", project_dir=project)
    assert "MFE_MIGRATIONS_FOLDER" not in bundled.environ()


def test_image_build_command_lines() -> None:
    from mfe_deploy.images import build_command, build_own_command

    bundled = build_command(
        Path("/r/services"), Path("/c"), base="py:3.11", service="auth", version="v2", tag="p/auth:v2"
    )
    assert " ".join(bundled.argv) == (
        "docker build -q -f /r/services/Dockerfile --build-arg BASE_IMAGE=py:3.11 --build-arg SERVICE=auth"
        " --build-arg VERSION=v2 -t p/auth:v2 /c"
    )
    own = build_own_command(Path("/p/notes"), Path("/p/notes/Dockerfile"), version="v2", tag="p/notes:v2")
    assert " ".join(own.argv) == "docker build -q -f /p/notes/Dockerfile --build-arg VERSION=v2 -t p/notes:v2 /p/notes"


def test_supervisor_programs_of_the_local_runtime(tmp_path: Path) -> None:
    """The local runtime's command lines, as supervisord.conf says them: the stores bound to loopback,
    a bundled service by name, a service of yours through the env-file launcher (no secret in argv)."""
    from mfe_deploy.binaries import Binaries
    from mfe_deploy.local_bundle import LocalLayout, render_local

    project = tmp_path / "p"
    shutil.copytree(REPO / "environments", project / "environments")
    (project / "environments" / "loc.yaml").write_text(
        "extends: development\nservices:\n  notes:\n    port: 3009\n    image: x/notes:1\n"
        "    command: [python3, notes/server.py, --quiet]\n    stop_timeout: 1m\n"
    )
    loaded, secrets = loader.load_with_secrets(project, "loc", {})
    tools = Path("/bin")
    bins = Binaries(Path("/pg/bin"), tools / "redis-server", None, None, tools / "supervisord", None, tools / "svctl")
    layout = LocalLayout(project / ".mfe" / "loc")
    bundle = render_local(
        loaded.env, secrets, layout, bins, python="/venv/python", run_as_root=False, project_dir=project
    )
    conf = bundle.files["supervisord.conf"].text
    data = layout.data
    assert f"command=/pg/bin/postgres -D {data}/postgres -p 5432 -c listen_addresses=127.0.0.1" in conf
    assert f"command=/bin/redis-server --port 6379 --bind 127.0.0.1 --dir {data}/redis --appendonly no" in conf
    env_files = layout.root / "env"
    assert f"command=/venv/python -m mfe_services auth --env-file {env_files}/auth.env" in conf
    assert (
        f"command=/venv/python -m mfe_deploy.exec.withenv {env_files}/notes.env {project} -- python3 notes/server.py"
        " --quiet" in conf
    )
    assert "dev-auth-password" not in conf and "dev-secret-key" not in conf
    programs = {part.split("]", 1)[0]: part for part in conf.split("[program:")[1:]}
    assert "stopwaitsecs=60\n" in programs["notes"] and "stopwaitsecs=20\n" in programs["auth"]
    assert "STOP_TIMEOUT='60'\n" in bundle.files["env/notes.env"].text
    # One bound on every program's output (logs:, default 10m x 3 files: the file and two rotated ones).
    assert all("stdout_logfile_maxbytes=10MB\nstdout_logfile_backups=2\n" in part for part in programs.values())


def test_one_log_bound_for_the_three_runtimes(tmp_path: Path) -> None:
    """Issue 32: compose and the stack file set no `logging`; the local runtime's bound was fixed text."""
    from mfe_deploy import swarm_stack
    from mfe_deploy.binaries import Binaries
    from mfe_deploy.local_bundle import LocalLayout, render_local
    from mfe_deploy.render import render

    project = tmp_path / "p"
    shutil.copytree(REPO / "environments", project / "environments")
    (project / "environments" / "lg.yaml").write_text("extends: production\nlogs: {max_size: 512k, max_files: 4}\n")
    loaded, secrets = loader.load_with_secrets(project, "lg", strong_secrets())
    bundle = render(loaded.env, secrets, versions=dict.fromkeys(loaded.env.services, "v1"))
    compose = yaml.safe_load(bundle.files["compose.yml"].text)
    bound = {"driver": "json-file", "options": {"max-size": "512k", "max-file": "4"}}
    assert {unit: svc.get("logging") for unit, svc in compose["services"].items()} == dict.fromkeys(
        compose["services"], bound
    )
    contents = {path: f.text.encode() for path, f in bundle.files.items()}
    contents |= {"nginx/ssl/cert.pem": b"cert", "nginx/ssl/key.pem": b"key"}
    stack = swarm_stack.stack(loaded.env, compose, contents)
    assert all(svc["logging"] == bound for svc in stack["services"].values())
    tools = Path("/bin")
    bins = Binaries(Path("/pg/bin"), tools / "redis-server", None, None, tools / "supervisord", None, tools / "svctl")
    local = render_local(
        loaded.env, secrets, LocalLayout(project / ".mfe" / "lg"), bins, python="/p", run_as_root=False
    )
    programs = local.files["supervisord.conf"].text.split("[program:")[1:]
    assert programs and all("stdout_logfile_maxbytes=512KB\nstdout_logfile_backups=3\n" in p for p in programs)


class EngineRunner(RecordingRunner):
    """As RecordingRunner, and `compose ps` answers these containers."""

    def __init__(self, rows: list[dict[str, str]]) -> None:
        super().__init__()
        self.rows = rows

    def run(self, command: Command, *, timeout: float | None = None) -> Completed:
        if command.argv[-4:] == ("ps", "--all", "--format", "json"):
            self.commands.append(command)
            return Completed(0, "".join(json.dumps(r) + "\n" for r in self.rows), "")
        return super().run(command, timeout=timeout)


def _gateway(n: int, health: str, networks: str) -> dict[str, str]:
    name = f"universal-mfe-fake-api-gateway-{n}"
    return {"Service": "api-gateway", "Name": name, "State": "running", "Health": health, "Networks": networks}


def test_a_gateway_switch_gives_the_new_containers_the_other_colour_then_flips_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import strong_secrets

    monkeypatch.setattr("mfe_deploy.runtimes.docker.rollout.time.sleep", lambda _: None)
    project = tmp_path / "project"
    shutil.copytree(REPO / "environments", project / "environments")
    (project / "environments" / "fake.yaml").write_text("extends: staging\nruntime: docker\n")
    secrets = {k.replace("STAGING_", "FAKE_"): v for k, v in strong_secrets().items()}
    live, edge = "universal-mfe-fake_live", "universal-mfe-fake_edge"
    runner = EngineRunner(
        [
            _gateway(1, "healthy", edge),
            _gateway(2, "starting", edge),
            _gateway(3, "healthy", f"{edge},{live}"),
        ]
    )
    root = tmp_path / "remote" / "fake"
    root.mkdir(parents=True)
    (root / "compose.yml").write_text("name: universal-mfe-fake\n")  # rendered once: compose ps is asked
    host = Host("local", runner, LocalFiles(), root)
    deployment = Deployment(
        project,
        loader.load(project, "fake"),
        Console(),
        host,
        lambda: loader.load_with_secrets(project, "fake", secrets)[1],
    )
    rt = registry.create("docker", deployment)
    flag = root / "nginx" / "live" / "green"

    def connects() -> list[str]:
        lines = [str(c) for c in runner.commands if c.argv[:3] == ("docker", "network", "connect")]
        runner.commands.clear()
        return lines

    # Made by compose (a first start): the healthy one joins the live colour (blue), not the starting one.
    rt.rollout.publish_gateways(rt.containers(), healthy_only=True)  # type: ignore[attr-defined]
    assert connects() == [f"docker network connect --alias api-gateway-blue {live} universal-mfe-fake-api-gateway-1"]
    # A replacement: the new containers get green, then the file says green.
    rt.rollout.switch_gateways(["g-4", "g-5"], lambda _: None)  # type: ignore[attr-defined]
    assert connects() == [f"docker network connect --alias api-gateway-green {live} g-{n}" for n in (4, 5)]
    assert flag.exists()
    rt.rollout.switch_gateways(["g-6"], lambda _: None)  # type: ignore[attr-defined]
    assert connects() == [f"docker network connect --alias api-gateway-blue {live} g-6"]
    assert not flag.exists()


def test_an_nginx_reload_copies_the_certificate_as_root_then_tests_and_reloads_as_nginxs_user() -> None:
    from mfe_deploy.compose import nginx_reload
    from mfe_deploy.render import NGINX_CONF, NGINX_UID

    handover, test, reload = (step.argv for step in nginx_reload("p-nginx-1"))
    assert handover[:4] == ("docker", "exec", "p-nginx-1", "sh") and "cp /etc/nginx/ssl/cert.pem" in handover[-1]
    as_nginx = ("docker", "exec", "--user", NGINX_UID, "p-nginx-1", "nginx", "-e", "stderr", "-c", NGINX_CONF)
    assert (test, reload) == ((*as_nginx, "-t", "-q"), (*as_nginx, "-s", "reload"))


def test_the_stores_compose_file_keeps_the_stores_alone_and_everything_they_refer_to() -> None:
    text = (
        "name: p\nservices:\n  postgres: {image: pg, networks: [data], secrets: [pw]}\n"
        "  auth: {image: a, env_file: [env/auth.env]}\n  redis: {image: r}\n"
        "networks: {data: {}}\nvolumes: {postgres_data: {}}\nsecrets: {pw: {file: ./pw}}\n"
    )
    doc = yaml.safe_load(stores_only(text, ["postgres", "redis", "rabbitmq"]))
    assert list(doc["services"]) == ["postgres", "redis"]
    assert doc["services"]["postgres"] == {"image": "pg", "networks": ["data"], "secrets": ["pw"]}
    assert (doc["name"], doc["networks"], doc["volumes"], doc["secrets"]) == (
        "p",
        {"data": {}},
        {"postgres_data": {}},
        {"pw": {"file": "./pw"}},
    )


def test_a_program_fingerprint_changes_with_its_own_section_only() -> None:
    conf = (
        "[supervisord]\nx=1\n\n[program:redis]\ncommand=redis-server --maxmemory {m}\n\n[program:auth]\ncommand={a}\n"
    )
    first = program_fingerprints(conf.format(m="64mb", a="one"), ["postgres", "redis"])
    assert list(first) == ["redis"]  # postgres has no program here
    assert program_fingerprints(conf.format(m="64mb", a="two"), ["redis"]) == first
    assert program_fingerprints(conf.format(m="128mb", a="one"), ["redis"]) != first


def test_the_local_runtime_keeps_the_binaries_its_stores_started_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Redis or PostgreSQL installed after the first `up` does not take over: the pinned binaries come
    first while they are there; an explicit MFE_* variable still wins; a pinned binary that went is found anew."""
    project = tmp_path / "project"
    shutil.copytree(REPO / "environments", project / "environments")
    loaded = loader.load(project, "development")
    host = Host("local", RecordingRunner(), LocalFiles(), project / ".mfe" / "development", remote=False)
    deployment = Deployment(
        project, loaded, Console(), host, lambda: loader.load_with_secrets(project, "development", {})[1]
    )
    runtime = registry.create("local", deployment)
    assert isinstance(runtime, LocalRuntime)
    found = runtime.bins()
    kept = tmp_path / "old" / "redis-server"
    kept.parent.mkdir()
    shutil.copy(found.redis_server, kept)
    layout = runtime.layout
    layout.binaries.parent.mkdir(parents=True)
    layout.binaries.write_text(pin(dataclasses.replace(found, redis_server=kept)))
    monkeypatch.delenv("MFE_REDIS_SERVER", raising=False)
    assert runtime.bins().redis_server == kept
    assert runtime.bins().pg_bin == found.pg_bin
    monkeypatch.setenv("MFE_REDIS_SERVER", str(found.redis_server))
    assert runtime.bins().redis_server == found.redis_server
    monkeypatch.delenv("MFE_REDIS_SERVER")
    kept.unlink()
    assert runtime.bins().redis_server == found.redis_server
    assert pinned("not json") == pinned("[1]") == pinned(None) == {}
