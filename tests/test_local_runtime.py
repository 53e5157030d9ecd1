"""`mfe-deploy up` on the local runtime (supervisord, no Docker), driven through the real CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import backup_suite
from tests.conftest import SECRET_VARS
from tests.local_project import LocalProject, make_local_project
from tests.pg import free_port
from tests.receiver import receiver
from tests.stack import ADMIN, SERVICES, admin_headers, maintenance_round_trip, poll
from tests.test_services_e2e import _profile, _user

ENV = "localtest"


Project = LocalProject


# Set in the CLI's environment only: no supervised process may inherit it.
CANARY = "mfe-canary-7f3c9a1e5b"
# development's default signing key (its private half): auth reads it from its env file, nobody else has it
DEV_JWT_SECRET = "s--PI040JSlDeR47WkVqM794oXAQH6eLFDSrSGrMOVQ"


def make_project(root: Path) -> Project:
    return make_local_project(root, ENV, extra_environ={"MFE_TEST_CANARY": CANARY})


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    p = make_project(tmp_path_factory.mktemp("local") / "project")
    started = p.cli("up", "--env", ENV)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield p
    finally:
        p.cli("down", "--env", ENV, "--volumes", "--yes")


def test_up_reports_every_unit_running_and_healthy(project: Project) -> None:
    rows = project.status()
    assert list(rows) == ["postgres", "redis", *SERVICES[-1:], *SERVICES[:-1]]
    assert {r["state"] for r in rows.values()} == {"RUNNING"}
    assert {r["health"] for r in rows.values()} == {"healthy"}
    assert all(isinstance(r["pid"], int) for r in rows.values())
    checked = project.cli("health", "--env", ENV)
    assert checked.returncode == 0
    assert checked.stdout.splitlines()[0].split() == ["SERVICE", "HTTP", "STATUS", "CHECKS"]


def test_user_flow_through_the_gateway(project: Project) -> None:
    with project.gateway() as gw:
        user_id, auth = _user(gw)
        assert poll(lambda: _profile(gw, auth)) is not None
        paid = gw.post(
            "/api/payments", json={"amount": 700, "currency": "EUR"}, headers={**auth, "Idempotency-Key": "k"}
        )
        assert paid.status_code == 201
        # Registering with any address gives no admin role; an operator grants it.
        gw.post("/api/auth/register", json={"email": ADMIN, "password": "admin password"})
        first = gw.post("/api/auth/login", json={"email": ADMIN, "password": "admin password"}).json()
        assert (
            gw.get("/api/admin/stats", headers={"Authorization": f"Bearer {first['access_token']}"}).status_code == 403
        )
        admin = admin_headers(gw, project.cli, ENV)
        unknown = project.cli("admin", "grant", "nobody@example.com", "--env", ENV)
        assert (unknown.returncode, unknown.stderr.strip()) == (
            1,
            f"error: no user nobody@example.com in {ENV}: the user registers first (POST /api/auth/register)",
        )
        assert project.cli("admin", "grant", "not-an-address", "--env", ENV).returncode == 2
        assert "admin grant" in project.cli("history", "--env", ENV).stdout

        def both() -> bool:
            events = gw.get("/api/admin/events", params={"limit": 500}, headers=admin).json()["events"]
            return {"user.registered", "payment.created"} <= {
                e["type"] for e in events if e["data"].get("user_id") == user_id
            }

        assert poll(both)


def test_logs_of_one_request_across_units(project: Project) -> None:
    rid = f"req-logs-{time.time_ns()}"
    with project.gateway() as gw:
        assert gw.get("/api/auth/version", headers={"X-Request-ID": rid}).status_code == 200
    time.sleep(0.5)
    shown = project.cli("logs", "--env", ENV, "--request-id", rid)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert sorted(line.split(" | ")[0] for line in lines) == ["api-gateway", "auth"]
    assert all(json.loads(line.split(" | ", 1)[1])["request_id"] == rid for line in lines)
    assert project.cli("logs", "--env", ENV, "--request-id", "bad id!").returncode == 2


def test_maintenance_mode_at_the_gateway(project: Project) -> None:
    with project.gateway() as gw:
        maintenance_round_trip(gw, project.cli, ENV)


def test_second_up_restarts_nothing(project: Project, tmp_path: Path) -> None:
    """Not even once another redis-server comes first on PATH (one installed after the first `up`): the
    stores keep the binaries they started with (local/binaries.json)."""
    pinned = json.loads((project.root / ".mfe" / ENV / "local" / "binaries.json").read_text())
    newer = tmp_path / "bin" / "redis-server"
    newer.parent.mkdir()
    shutil.copy(pinned["redis_server"], newer)
    before = {n: r["pid"] for n, r in project.status().items()}
    path = f"{newer.parent}:{os.environ.get('PATH', '')}"
    again = project.cli("up", "--env", ENV, extra={"PATH": path, "MFE_REDIS_SERVER": ""})
    assert again.returncode == 0, again.stderr
    assert {n: r["pid"] for n, r in project.status().items()} == before
    assert str(newer) not in (project.root / ".mfe" / ENV / "local" / "supervisord.conf").read_text()


def test_up_runs_its_plan_and_replaces_only_the_service_whose_env_file_changed(project: Project) -> None:
    """payments gets a variable (its env file changes): `plan` says `replace payments` and nothing else,
    `up` prints that plan and runs it, and supervisord restarts payments alone (it used to run on with
    its old env file: `up` only started what did not run)."""
    env_file = project.root / "environments" / f"{ENV}.yaml"
    text = env_file.read_text()
    changed = re.sub(r"(  payments:\n    port: \d+\n)", r'\1    env: {MFE_TEST_FLAG: "1"}\n', text, count=1)
    assert changed != text
    env_file.write_text(changed)
    try:
        planned = project.cli("plan", "--env", ENV, "--json")
        steps = [(s["action"], s["target"]) for s in json.loads(planned.stdout)["steps"]]
        assert (planned.returncode, steps) == (1, [("replace", "payments")]), planned.stdout + planned.stderr
        before = {n: r["pid"] for n, r in project.status().items()}
        up = project.cli("up", "--env", ENV)
        assert up.returncode == 0, up.stdout + up.stderr
        said = up.stderr.splitlines()
        assert "plan for dev: 1 step" in said and "  replace payments: env file changed" in said, up.stderr
        assert "start: replace payments" in said and any(line.startswith("done: replace payments") for line in said)
        after = {n: r["pid"] for n, r in project.status().items()}
        assert {n for n in before if after.get(n) != before[n]} == {"payments"}, (before, after)
        assert project.cli("health", "--env", ENV).returncode == 0
    finally:
        env_file.write_text(text)
        assert project.cli("up", "--env", ENV).returncode == 0


def test_diff_json_says_in_sync_after_up_and_names_every_service(project: Project) -> None:
    done = project.cli("diff", "--env", ENV, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    shown = json.loads(done.stdout)
    assert shown["in_sync"] is True and shown["files"] == [] and shown["steps"] == 0
    assert set(shown["services"]) == set(SERVICES)
    assert all(s["running"] is not None and s["wanted"] is not None for s in shown["services"].values())


def test_a_store_whose_configuration_changed_restarts_only_with_restart_stores(project: Project) -> None:
    """redis gets a memory limit: `up` refuses to restart it and changes nothing; with --restart-stores,
    supervisord restarts redis alone (its program changed) and every service is healthy on it."""
    env_file = project.root / "environments" / f"{ENV}.yaml"
    env_file.write_text(env_file.read_text().replace("redis:\n", "redis:\n  maxmemory: 64m\n", 1))
    before = {n: r["pid"] for n, r in project.status().items()}
    refused = project.cli("up", "--env", ENV)
    said = " ".join(refused.stderr.split())
    assert refused.returncode == 1 and "configuration of redis changed" in said and "--restart-stores" in said, said
    assert {n: r["pid"] for n, r in project.status().items()} == before
    applied = project.cli("up", "--env", ENV, "--restart-stores")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    after = {n: r["pid"] for n, r in project.status().items()}
    assert {n for n in before if after.get(n) != before[n]} == {"redis"}, (before, after)
    assert project.cli("health", "--env", ENV).returncode == 0


def test_a_killed_service_is_reported_and_restarted(project: Project) -> None:
    pid = project.status()["auth"]["pid"]
    os.kill(pid, signal.SIGKILL)
    seen_unhealthy = poll(lambda: project.cli("health", "--env", ENV).returncode == 1, timeout=5, interval=0.05)
    assert seen_unhealthy, "health never reported the killed service"

    def restarted() -> bool:
        row = project.status()["auth"]
        return row["pid"] not in (None, pid) and row["health"] == "healthy"

    assert poll(restarted, timeout=30)


def _supervisorctl(project: Project, *args: str) -> None:
    conf = project.root / ".mfe" / ENV / "local" / "supervisord.conf"
    subprocess.run(
        [str(Path(sys.executable).parent / "supervisorctl"), "-c", str(conf), *args], check=True, capture_output=True
    )


def test_while_postgres_is_down_every_health_is_503_and_recovers(project: Project) -> None:
    urls = [f"http://127.0.0.1:{project.ports[n]}/health" for n in ("auth", "payments", "admin", "profile")]
    _supervisorctl(project, "stop", "postgres")  # held down: supervisord would restart a killed one at once
    try:
        # a verdict is shared for 1 s, and a check gives up after 1 s: 503 within 3 s
        assert poll(lambda: all(_status(u) == 503 for u in urls), timeout=3, interval=0.05)
        failing = project.cli("health", "--env", ENV)
        assert failing.returncode == 1
        assert "database=unhealthy" in failing.stdout
    finally:
        _supervisorctl(project, "start", "postgres")
    assert poll(lambda: all(_status(u) == 200 for u in urls), timeout=60)


def test_a_killed_postgres_is_restarted_and_the_services_recover(project: Project) -> None:
    urls = [f"http://127.0.0.1:{project.ports[n]}/health" for n in ("auth", "payments", "admin", "profile")]
    pid = project.status()["postgres"]["pid"]
    os.kill(pid, signal.SIGKILL)
    assert poll(lambda: project.status()["postgres"]["pid"] not in (None, pid), timeout=60)
    assert poll(lambda: all(_status(u) == 200 for u in urls), timeout=60)


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=3).status_code
    except httpx.HTTPError:
        return 0


def test_logs_of_one_unit(project: Project) -> None:
    shown = project.cli("logs", "--env", ENV, "auth", "--tail", "3")
    assert shown.returncode == 0
    assert 0 < len(shown.stdout.splitlines()) <= 3
    unknown = project.cli("logs", "--env", ENV, "billing")
    assert unknown.returncode == 2  # bad input (issue 34: it was 1)
    assert "unknown unit 'billing'" in unknown.stderr


def test_backup_round_trip_in_the_shared_layout(project: Project) -> None:
    backup_suite.round_trip(project)
    manifest = next((project.root / "backups" / ENV).glob("*/manifest.json")).read_text()
    assert '"schema": "payments"' in manifest and '"database": "universal_mfe_dev"' in manifest


def test_no_supervised_process_holds_a_secret_or_the_clis_environment(project: Project) -> None:
    """Each program gets its own variables (a service from its env file, read after start), never the
    CLI's whole environment: /proc/PID/environ of supervisord and of every process under it."""
    units = [row["pid"] for row in project.status().values() if row.get("pid")]
    supervisord = int(Path(f"/proc/{units[0]}/stat").read_text().rsplit(")", 1)[1].split()[1])
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    tree, queue = [], [supervisord]
    while queue:
        pid = queue.pop()
        tree.append(pid)
        queue += children.get(pid, [])
    assert set(units) <= set(tree) and len(tree) > len(units)
    leaks = []
    for pid in tree:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue  # gone meanwhile
        for value in (CANARY, DEV_JWT_SECRET):
            if value.encode() in environ:
                leaks.append(f"{pid} {Path(f'/proc/{pid}/comm').read_text().strip()}: {value[:8]}...")
    assert leaks == []


def test_run_and_exec_pass_the_exit_code_and_give_the_service_its_variables_only(project: Project) -> None:
    code = (
        "import os, sys; print(os.environ['DATABASE_URL'].rsplit('@', 1)[1]); "
        "print('canary' if 'MFE_TEST_CANARY' in os.environ else 'clean'); sys.exit(3)"
    )
    for verb in ("run", "exec"):
        done = project.cli(verb, "auth", "--env", ENV, "--", sys.executable, "-c", code)
        assert done.returncode == 3, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0].startswith("127.0.0.1:") and lines[1] == "clean", lines  # not the CLI's own variables
        assert CANARY not in done.stdout + done.stderr
    history = [
        json.loads(line) for line in (project.root / ".mfe" / ENV / "state" / "audit.jsonl").read_text().splitlines()
    ]
    ran = [h for h in history if h["action"] in ("run", "exec") and h["result"] != "started"]
    assert [(h["action"], h["exit_code"], h["program"]) for h in ran[-2:]] == [
        ("run", 3, sys.executable),
        ("exec", 3, sys.executable),
    ]
    missing = project.cli("run", "auth", "--env", ENV)
    assert missing.returncode == 2 and "the command to run goes after --" in missing.stderr
    unknown = project.cli("run", "nosuch", "--env", ENV, "--", "true")
    assert unknown.returncode == 1 and "unknown service 'nosuch'" in unknown.stderr


def test_db_shell_is_psql_as_the_services_own_role(project: Project) -> None:
    done = project.cli("db", "shell", "auth", "--env", ENV, "--", "-At", "-c", "SELECT current_user")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "auth_app"
    failed = project.cli("db", "shell", "auth", "--env", ENV, "--", "-c", "SELECT * FROM no_such_table")
    assert failed.returncode == 1 and "no_such_table" in failed.stderr
    run_dir = [p for p in Path("/tmp").glob(f"mfe-{os.getuid()}-*") if (p / "supervisor.sock").exists()]
    assert not [f for d in run_dir for f in d.glob("pgpass*")]  # the password file went with the command
    gateway = project.cli("db", "shell", "api-gateway", "--env", ENV)
    assert gateway.returncode == 1 and "owns no database" in gateway.stderr


JOBS = """
notify:
  timeout: 2
  attempts: 1
  webhooks:
    - url: ${JOB_HOOK}
      events: [job.failed]
jobs:
  tick:
    service: profile
    command: sh -c 'echo "$SERVICE_NAME $PORT" > "$0"' TICKFILE
    schedule: "* * * * *"
    timeout: 30s
  boom:
    service: auth
    command: [python3, -c, "raise SystemExit(3)"]
    schedule: "0 0 1 1 *"
  slow:
    service: auth
    command: sleep 30
    schedule: "0 0 1 1 *"
    timeout: 2s
"""


def test_scheduled_jobs_run_on_a_real_cron_and_failures_and_timeouts_each_notify_once(
    project: Project, tmp_path: Path
) -> None:
    """jobs: under a real cron daemon (busybox crond, reading the crontab `jobs schedule --crontab` prints):
    the every-minute job runs within 70 s with the service's variables and its outcome is in the history;
    a job exiting 3 and one past its timeout each send exactly one job.failed; a run while the last one still
    goes is skipped (overlap: skip) and sends nothing."""
    busybox = shutil.which("busybox")
    assert busybox and "crond" in subprocess.run([busybox, "--list"], capture_output=True, text=True).stdout, (
        "busybox with crond not found: run scripts/setup-system"
    )
    env_file = project.root / "environments" / f"{ENV}.yaml"
    before = env_file.read_text()
    tick = tmp_path / "tick"
    env_file.write_text(before + JOBS.replace("TICKFILE", str(tick)))
    crontabs = tmp_path / "crontabs"
    crontabs.mkdir()
    with receiver() as hooks:
        extra = {"JOB_HOOK": hooks.url("/jobs")}
        crond = None
        try:
            printed = project.cli("jobs", "schedule", "--env", ENV, "--crontab", extra=extra)
            assert printed.returncode == 0, printed.stderr
            assert "* * * * * /bin/sh -c" in printed.stdout and "jobs run tick" in printed.stdout, printed.stdout
            (crontabs / "root").write_text(printed.stdout)
            installed = time.monotonic()
            crond = subprocess.Popen(
                [busybox, "crond", "-f", "-c", str(crontabs), "-l", "8"],
                env={**project.environ, **extra},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            listed = project.cli("jobs", "list", "--env", ENV, "--json", extra=extra)
            assert [(j["name"], j["last"]) for j in json.loads(listed.stdout)] == [
                ("tick", None),
                ("boom", None),
                ("slow", None),
            ]
            boom = project.cli("jobs", "run", "boom", "--env", ENV, extra=extra)
            assert boom.returncode == 3, boom.stderr
            slow = subprocess.Popen(
                [sys.executable, "-m", "mfe_deploy", "-C", str(project.root), "jobs", "run", "slow", "--env", ENV],
                env={**project.environ, **extra},
            )
            time.sleep(1)  # the first run of slow holds its lock
            skipped = project.cli("jobs", "run", "slow", "--env", ENV, extra=extra)
            assert skipped.returncode == 0 and "skipped" in skipped.stderr, skipped.stderr
            started = time.monotonic()
            slow.communicate(timeout=60)
            assert slow.returncode == 124 and time.monotonic() - started < 15, slow.returncode
            posts = hooks.wait(2)
            time.sleep(1)  # and no third
            events = [json.loads(p.body) for p in hooks.posts]
            assert sorted((e["event"], e["details"]["job"], e["details"]["outcome"]) for e in events) == [
                ("job.failed", "boom", "failed"),
                ("job.failed", "slow", "timed out"),
            ], events
            assert len(posts) == 2
            deadline = installed + 70
            while time.monotonic() < deadline and not tick.exists():
                time.sleep(0.5)
            assert tick.exists(), "the every-minute job did not run within 70 s of its installation"
            said = tick.read_text().split()
            assert said == ["profile", str(project.ports["profile"])], said  # the service's variables
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                history = json.loads(project.cli("jobs", "history", "--env", ENV, "--json").stdout)
                if any(h["job"] == "tick" for h in history):
                    break
                time.sleep(0.5)
            outcomes = [(h["job"], h["outcome"], h["exit_code"], h["scheduled"]) for h in history]
            assert ("tick", "succeeded", 0, True) in outcomes, outcomes
            assert ("boom", "failed", 3, False) in outcomes and ("slow", "timed out", 124, False) in outcomes
            assert ("slow", "skipped", None, False) in outcomes, outcomes
            log = project.root / ".mfe" / ENV / "state" / "jobs" / "tick.log"
            assert log.stat().st_mode & 0o777 == 0o600, oct(log.stat().st_mode)  # the run's output: private
            assert len(hooks.posts) == 2  # the scheduled success and the skip sent nothing
        finally:
            if crond is not None:
                crond.terminate()
                crond.wait(timeout=10)
            env_file.write_text(before)


def test_zz_down_leaves_nothing_behind(project: Project) -> None:
    pids = [r["pid"] for r in project.status().values()]
    done = project.cli("down", "--env", ENV)
    assert (done.returncode, done.stdout) == (0, f"{ENV}: stopped\n")
    time.sleep(0.3)
    assert project.listening() == []
    alive = [pid for pid in pids if _alive(pid)]
    assert alive == []
    again = project.cli("down", "--env", ENV, "--volumes", "--yes", "--json")
    assert json.loads(again.stdout) == {"env": ENV, "stopped": False, "data_deleted": True}, again.stdout
    assert not (project.root / ".mfe" / ENV / "local" / "data").exists()
    # With the data go its keys: no env file, no private key of the environment is left on disk.
    left = [p for p in (project.root / ".mfe" / ENV).rglob("*") if p.suffix in (".env", ".pem")]
    assert left == []
    assert (project.root / ".mfe" / ENV / "state" / "audit.jsonl").exists()  # history stays


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # A zombie is dead for our purpose.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


# --- failures: each its own project, nothing may be left running --------------------------------------


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Project]:
    p = make_project(tmp_path / "project")
    yield p
    p.cli("down", "--env", ENV, "--volumes", "--yes")


def test_port_conflict_is_reported_before_anything_starts(fresh: Project) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", fresh.ports["payments"]))
        holder.listen()
        result = fresh.cli("up", "--env", ENV)
    assert result.returncode == 1
    assert f"error: port {fresh.ports['payments']} (payments) is already in use" in result.stderr
    assert not (fresh.root / ".mfe" / ENV / "local" / "data").exists()


def test_a_link_planted_at_the_run_folders_name_is_refused_not_followed(fresh: Project, tmp_path: Path) -> None:
    """Review finding 7: /tmp/mfe-<uid>-<sha> is a name anyone can compute; another user's link there to a
    root-owned folder passed the owner check (stat follows links) and root chmod-ed the target 0711."""
    from mfe_deploy.local_bundle import LocalLayout

    run = LocalLayout((fresh.root / ".mfe" / ENV).resolve()).run
    target = tmp_path / "roots-own"
    target.mkdir(mode=0o750)
    run.symlink_to(target)
    os.lchown(run, 65534, 65534)  # nobody's link, as another user would leave it
    try:
        result = fresh.cli("up", "--env", ENV)
        assert result.returncode == 1, result.stdout + result.stderr
        assert f"error: {run} is a link: refused" in result.stderr
        assert target.stat().st_mode & 0o777 == 0o750 and run.is_symlink()
    finally:
        run.unlink()


@pytest.mark.parametrize(
    ("owner", "mode", "why"),
    [(65534, 0o700, "not a folder of this user's"), (None, 0o777, "not a folder of this user's")],
)
def test_own_folder_takes_only_a_real_folder_of_ours(tmp_path: Path, owner: int | None, mode: int, why: str) -> None:
    from mfe_deploy.errors import MfeError
    from mfe_deploy.exec.host import own_folder

    folder = tmp_path / "run"
    folder.mkdir()
    folder.chmod(mode)
    if owner is not None:
        os.chown(folder, owner, owner)
    with pytest.raises(MfeError, match=why):
        own_folder(folder)
    fresh_folder = tmp_path / "new"
    own_folder(fresh_folder)
    assert fresh_folder.stat().st_mode & 0o777 == 0o700
    own_folder(fresh_folder)  # ours: taken as it is


def test_missing_binary_is_a_clear_error(fresh: Project) -> None:
    result = fresh.cli("up", "--env", ENV, extra={"MFE_PG_BIN": "/nonexistent/pg/bin"})
    assert result.returncode == 1
    assert "error: PostgreSQL binaries not found in the configured folder /nonexistent/pg/bin" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_service_that_crashes_at_start_fails_up_and_leaves_nothing(fresh: Project, tmp_path: Path) -> None:
    hook = tmp_path / "crash"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import sys\n"
        "argv = open('/proc/self/cmdline', 'rb').read().split(b'\\0')\n"
        "if b'mfe_services' in argv and b'profile' in argv:\n"
        "    sys.exit('profile: simulated crash at start (sitecustomize)')\n"
    )
    result = fresh.cli("up", "--env", ENV, "--timeout", "60", extra={"PYTHONPATH": str(hook)})
    assert result.returncode == 1
    assert "error: profile crashed at start; its last log lines:" in result.stderr
    assert "simulated crash at start" in result.stderr
    time.sleep(0.3)
    assert fresh.listening() == []


def test_down_volumes_needs_confirmation_and_force_in_production(fresh: Project) -> None:
    refused = fresh.cli("down", "--env", ENV, "--volumes")
    assert refused.returncode == 1
    assert "confirm with --yes" in refused.stderr
    production = {f"PRODUCTION_{k}": "x" * 40 + k for k in SECRET_VARS if k != "SENTRY_DSN"}
    prod = fresh.cli("down", "--env", "production", "--volumes", "--yes", extra=production)
    assert prod.returncode == 1
    assert "refusing to delete production data without --force" in prod.stderr


def test_nginx_fronts_the_local_stack_with_tls(fresh: Project) -> None:
    http, https = free_port(), free_port()
    env_file = fresh.root / "environments" / f"{ENV}.yaml"
    env_file.write_text(
        env_file.read_text() + f"nginx:\n  enabled: true\n  domain: localhost\n"
        f"  http_port: {http}\n  https_port: {https}\n"
    )
    fresh.ports.update(nginx_http=http, nginx_https=https)
    up = fresh.cli("up", "--env", ENV)
    assert up.returncode == 0, up.stdout + up.stderr
    rows = fresh.status()
    assert (rows["nginx"]["state"], rows["nginx"]["health"]) == ("RUNNING", "healthy")
    through = httpx.get(f"https://localhost:{https}/health", verify=False, timeout=10)
    assert through.status_code == 200
    assert through.headers["strict-transport-security"] == "max-age=63072000"
    redirect = httpx.get(f"http://localhost:{http}/api/x", follow_redirects=False, timeout=10)
    assert (redirect.status_code, redirect.headers["location"]) == (308, f"https://localhost:{https}/api/x")
    if os.geteuid() == 0:
        # Started by root, nginx runs as its own user, master and workers, and reads its own key copy.
        pids = [rows["nginx"]["pid"], *_children(rows["nginx"]["pid"])]
        users = {Path(f"/proc/{pid}").owner() for pid in pids}
        assert len(pids) >= 2 and users == {"mfe-nginx"}, (pids, users)
        # Its configuration, certificate and key are root's copies, readable by its group, in a folder it
        # cannot write to (root never writes where nginx's user could leave a link).
        # (nginx rewrites its command line as its title: "nginx: master process ... -c PATH ...")
        argv = Path(f"/proc/{rows['nginx']['pid']}/cmdline").read_text().replace("\0", " ").split()
        conf = Path(argv[argv.index("-c") + 1])
        for path, mode in ((conf.parent, 0o750), (conf, 0o640), (conf.parent / "key.pem", 0o640)):
            info = path.lstat()
            assert (info.st_uid, path.group(), info.st_mode & 0o777) == (0, "mfe-nginx", mode), path
        log = fresh.cli("logs", "nginx", "--env", ENV, "--tail", "200").stdout
        assert "GET /api/x" in log and "Permission denied" not in log, log  # its access log reaches us
    assert fresh.cli("down", "--env", ENV).returncode == 0
    time.sleep(0.3)
    assert fresh.listening() == []


def _children(pid: int) -> list[int]:
    found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(p) for p in found]


def test_on_the_rabbitmq_hub_each_service_connects_as_its_own_user(fresh: Project) -> None:
    """`up` creates a RabbitMQ user per service (a second `up` again, harmlessly); the services' env files
    carry their own user, never the administrator's password; an event crosses from auth to profile."""
    admin_password = "local-rabbitmq-admin-0123456789"
    env_file = fresh.root / "environments" / f"{ENV}.yaml"
    env_file.write_text(
        env_file.read_text() + f"event_hub: rabbitmq\nrabbitmq:\n  port: {free_port()}\n"
        f"  management_port: {free_port()}\nsecrets:\n  rabbitmq_password: ${{LOCALTEST_RABBITMQ:-{admin_password}}}\n"
    )
    for _ in range(2):
        up = fresh.cli("up", "--env", ENV)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "creating the services' RabbitMQ users" in up.stderr
    env_files = {p.stem: p.read_text() for p in fresh.root.rglob("local/env/*.env")}
    assert set(env_files) == set(SERVICES)
    assert not [name for name, text in env_files.items() if admin_password in text]
    for name in SERVICES[:-1]:  # the gateway does not reach the hub
        assert f"RABBITMQ_URL='amqp://{name}:" in env_files[name]
    with fresh.gateway() as gw:
        for name in SERVICES[:-1]:
            own = httpx.get(f"http://127.0.0.1:{fresh.ports[name]}/health", timeout=10).json()
            assert own["services"]["rabbitmq"] == "healthy", (name, own)
        _, auth = _user(gw)
        assert poll(lambda: _profile(gw, auth)) is not None  # user.registered, published by auth, consumed by profile


def test_a_project_in_a_traversable_folder_keeps_its_cluster_in_the_bundle() -> None:
    """The pytest folders are private (0700), so the other tests' clusters live under /var/lib/mfe-deploy;
    a project where every folder above is traversable (the README's quick start in a clone under /tmp or
    /home) keeps its cluster in its bundle, run by the cluster's user through folders opened for it."""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="mfe-open-", dir="/tmp"))
    base.chmod(0o755)
    try:
        p = make_local_project(base / "project", "openfolder")
        (base / "project").chmod(0o755)
        up = p.cli("up", "--env", "openfolder")
        try:
            assert up.returncode == 0, up.stderr
            cluster = base / "project" / ".mfe" / "openfolder" / "local" / "data" / "postgres"
            assert cluster.is_dir() and not cluster.is_symlink() and (cluster / "PG_VERSION").exists()
            assert p.cli("health", "--env", "openfolder").returncode == 0
        finally:
            p.cli("down", "--env", "openfolder", "--volumes", "--yes")
    finally:
        shutil.rmtree(base, ignore_errors=True)
