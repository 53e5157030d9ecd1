"""The swarm runtime on a real single-node Docker Swarm: an engine of its own in network namespaces
(tests/swarm.sh), reached at its unix socket, with nginx published in host mode on its namespace's
address and a fixed-rate load sent from a client namespace. Images are built on this machine's engine
and shipped by mfe-deploy to the swarm's (no registry)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.engines import migrations_folder, require_engine_with_standins
from tests.swarms import SERVICES, Project, Swarm, build, deployed_on, request, skip_without_namespaces, under_load

PREFIX = "mfe-test-sw"
STACK = "universal-mfe-swt"
SWARM = Swarm("/tmp/mfe-swarm-1", 1)
RATE = 40

require_engine_with_standins()
skip_without_namespaces()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    with deployed_on(SWARM, tmp_path_factory.mktemp("swarm") / "project", "swt", PREFIX) as p:
        yield p


def test_up_runs_the_stack_with_secrets_only_as_swarm_secrets(project: Project) -> None:
    up = project.cli("up", "--version", "v1")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "shipping" in up.stdout + up.stderr  # the swarm's engine had none of the images
    assert project.versions() == {name: {"v1"} for name in SERVICES}
    assert project.cli("status").stdout.count("_api-gateway.") == 2  # two replicas
    # Through nginx from another namespace: register, log in, an authenticated read across the gateway.
    project.log_in()
    assert request("GET", "/api/auth/me", token=project.token)[0] == 200
    # No secret value in any service's spec (what `docker service inspect` shows anyone with API access).
    names = SWARM.docker("service", "ls", "--format", "{{.Name}}").split()
    assert len(names) == 9, names
    spec = SWARM.docker("service", "inspect", *names)
    leaked = [k for k, v in project.secrets.items() if v in spec or v.split("@")[0].split("//")[-1] in spec]
    assert leaked == [], leaked
    assert f"{STACK}_auth_env_" in SWARM.docker("secret", "ls", "--format", "{{.Name}}")


def test_up_of_the_same_release_does_nothing(project: Project) -> None:
    again = project.cli("up", "--version", "v1")
    assert again.returncode == 0 and "nothing to do" in again.stdout + again.stderr, again.stdout + again.stderr
    plan = project.cli("plan", "--version", "v1")  # what runs is what the environment asks for
    assert plan.returncode == 0, plan.stdout + plan.stderr
    plan = project.cli("plan", "--version", "v2")
    assert plan.returncode == 1 and plan.stdout.count("replace") == len(SERVICES), plan.stdout + plan.stderr


def test_a_store_whose_configuration_changed_is_updated_only_with_restart_stores(project: Project) -> None:
    """redis gets a memory limit: `plan` names the restart, `up` refuses it before deploying anything, and
    `up --restart-stores` updates the redis service alone (its definition's digest is its new label)."""
    env_file = project.root / "environments" / "swt.yaml"
    env_file.write_text(env_file.read_text() + "redis: {maxmemory: 64m}\n")

    def tasks() -> dict[str, set[str]]:
        argv = ("service", "ps", "-q", "--filter", "desired-state=running")
        return {u: set(SWARM.docker(*argv, f"{STACK}_{u}").split()) for u in ("redis", "postgres", "auth")}

    before = tasks()
    planned = project.cli("plan", "--version", "v1")
    assert planned.returncode == 1 and "redis" in planned.stdout and "--restart-stores" in planned.stdout, (
        planned.stdout
    )
    refused = project.cli("up", "--version", "v1")
    said = " ".join(refused.stderr.split())
    assert refused.returncode == 1 and "configuration of redis changed" in said, said
    assert tasks() == before
    applied = project.cli("up", "--version", "v1", "--restart-stores")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    after = tasks()
    assert [u for u in after if after[u] != before[u]] == ["redis"], (before, after)
    spec = json.loads(SWARM.docker("service", "inspect", f"{STACK}_redis"))[0]["Spec"]
    assert "64m" in spec["TaskTemplate"]["ContainerSpec"]["Args"], spec["TaskTemplate"]["ContainerSpec"]
    code, text = request("POST", "/api/auth/login", {"email": "sw@example.com", "password": "correct horse"})
    assert code == 200, text


def test_rolling_update_and_rollback_under_load(project: Project) -> None:
    for name in SERVICES:  # v2: the same code in a new image, as a CI build would have made it
        build(f"{PREFIX}/{name}:v2", f"FROM {PREFIX}/{name}:v1\nLABEL test.version=v2\n")
    tally, done = under_load(project.token, RATE, lambda: project.cli("up", "--version", "v2"))
    assert done.returncode == 0, done.stdout + done.stderr
    project.within(tally, 0.01)
    assert project.versions() == {name: {"v2"} for name in SERVICES}
    tally, done = under_load(project.token, RATE, lambda: project.cli("rollback", "api-gateway"))
    assert "api-gateway: now v1" in done.stdout + done.stderr, done.stdout + done.stderr
    project.within(tally, 0.01)
    assert project.versions()["api-gateway"] == {"v1"}


def test_a_release_whose_gateway_exits_is_rolled_back_by_swarm_and_the_cli_exits_1(project: Project) -> None:
    broken = 'RUN printf "#!/bin/sh\\necho broken release >&2\\nexit 3\\n" > /opt/mfe/bin/mfe-service'
    build(f"{PREFIX}/api-gateway:v3", f"FROM {PREFIX}/api-gateway:v2\nUSER 0\n{broken}\nUSER 10001:10001\n")
    for name in SERVICES[1:]:
        build(f"{PREFIX}/{name}:v3", f"FROM {PREFIX}/{name}:v2\nLABEL test.version=v3\n")
    done = project.cli("up", "--version", "v3")
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "Swarm rolled api-gateway back" in out and "non-zero exit (3)" in out, out
    found = project.versions()  # every service went back to the last good release
    assert found == {**{name: {"v2"} for name in SERVICES}, "api-gateway": {"v1"}}, found
    assert request("GET", "/api/auth/me", token=project.token)[0] == 200
    releases = project.cli("releases").stdout
    assert "auto-rollback" in releases, releases
    # What the failed tasks printed is in `logs`, with their task names, and the command returns.
    logs = project.cli("logs", "api-gateway", "--tail", "300")
    assert logs.returncode == 0, logs.stderr
    assert "| broken release" in logs.stdout and "api-gateway.1 | " in logs.stdout, logs.stdout[-3000:]


def test_a_rotated_secret_is_a_new_swarm_secret_and_the_old_one_goes(project: Project) -> None:
    before = set(SWARM.docker("secret", "ls", "--format", "{{.Name}}").split())
    project.secrets["STAGING_JWT_KEY"] = "k2:rotated-jwt-key-5d1e9a7c3b-0a8f6e2d4c1b9a7e"
    done = project.cli("up", "--version", "v2")
    assert done.returncode == 0, done.stdout + done.stderr
    after = set(SWARM.docker("secret", "ls", "--format", "{{.Name}}").split())
    kinds = {n.rsplit("_", 1)[0].removeprefix(f"{STACK}_") for n in after - before}
    assert kinds == {f"{name}_env" for name in SERVICES}, (before, after)
    assert len(after) == len(before), (before, after)  # the old versions were removed once converged
    assert request("GET", "/api/auth/me", token=project.token)[0] == 401  # signed with the old key
    code, text = request("POST", "/api/auth/login", {"email": "sw@example.com", "password": "correct horse"})
    assert code == 200, text
    assert request("GET", "/api/auth/me", token=json.loads(text)["access_token"])[0] == 200


def test_backup_and_restore_through_the_postgres_task(project: Project) -> None:
    made = project.cli("backup", "--verify")
    assert made.returncode == 0, made.stdout + made.stderr
    backup_id = made.stdout.split()[1].rstrip(":")
    after = {"email": "after@example.com", "password": "correct horse"}
    assert request("POST", "/api/auth/register", after)[0] in (200, 201)
    restored = project.cli("restore", backup_id, "--yes")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    code, text = request("POST", "/api/auth/login", after)
    assert code == 401, text  # registered after the backup: gone
    code, text = request("POST", "/api/auth/login", {"email": "sw@example.com", "password": "correct horse"})
    assert code == 200, text


def test_a_rollback_across_a_rename_restores_the_backup_taken_just_before_it(project: Project) -> None:
    """v4 renames the column v2's auth logs in with; `up` backs auth's database up just before. Rolling
    auth back to v2 with --restore-backup restores that backup, starts v2 on it (logins work again) and
    counts what is lost: the 2 rows written after the migration."""
    folder = migrations_folder(f"{PREFIX}/auth:v2")
    up_sql = "CREATE TABLE rename_probe (id int); ALTER TABLE users RENAME COLUMN email TO email_address;"
    down_sql = "DROP TABLE rename_probe; ALTER TABLE users RENAME COLUMN email_address TO email;"
    steps = f"RUN printf '%s\\n' '{up_sql}' > {folder}/0003_rename.sql && "
    steps += f"printf '%s\\n' '{down_sql}' > {folder}/0003_rename.down.sql\n"
    for name in SERVICES:
        build(
            f"{PREFIX}/{name}:v4",
            f"FROM {PREFIX}/{name}:v2\nUSER 0\n{steps if name == 'auth' else ''}USER 10001:10001\n",
        )
    up = project.cli("up", "--version", "v4")
    assert up.returncode == 0 and "auth: applied 0003_rename" in up.stdout + up.stderr, up.stdout + up.stderr
    task = SWARM.docker("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={STACK}_postgres").split()[0]
    SWARM.docker(
        "exec", task, "psql", "-U", "postgres", "-d", "auth_db", "-c", "INSERT INTO rename_probe VALUES (1), (2)"
    )
    planned = project.cli("plan", "--rollback", "auth", "--to", "v2")
    assert planned.returncode == 1 and "--restore-backup: restores backup " in planned.stdout, planned.stdout

    restored = project.cli("rollback", "auth", "--to", "v2", "--restore-backup", "--yes")
    out = " ".join((restored.stdout + restored.stderr).split())
    assert restored.returncode == 0, out
    assert "lost since then: public.rename_probe: 2 rows" in out and "auth: now v2" in out, out
    code, text = request("POST", "/api/auth/login", {"email": "sw@example.com", "password": "correct horse"})
    assert code == 200, text


def test_down_with_volumes_leaves_nothing_on_the_swarm(project: Project) -> None:
    done = project.cli("down", "--volumes", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    label = f"label=com.docker.stack.namespace={STACK}"
    for kind in ("service", "network", "volume", "secret", "config"):
        left = SWARM.docker(kind, "ls", "-q", "--filter", label).split()
        assert left == [], (kind, left)
