"""The rendered init script on a real PostgreSQL: every service role reaches only its own data."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mfe_deploy.config import loader
from mfe_deploy.render import render
from tests.conftest import REPO, strong_secrets
from tests.pg import Cluster, temp_cluster

DATABASE_SERVICES = ("auth", "payments", "admin", "profile")  # the bundled services that own a database


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with temp_cluster() as c:
        yield c


def _apply(cluster: Cluster, env_name: str, tag: str) -> tuple[dict[str, str], dict[str, str]]:
    """Run the init script the way docker-entrypoint-initdb.d does; returns passwords and databases."""
    environ = strong_secrets(tag)
    loaded, secrets = loader.load_with_secrets(REPO, env_name, environ=environ)
    bundle = render(loaded.env, secrets)
    script = bundle.files["initdb/10-databases.sql"].text
    variables = dict(line.split("=", 1) for line in bundle.files["env/postgres.env"].text.splitlines()[1:])
    variables = {k: v.strip("'") for k, v in variables.items()}
    target = variables["POSTGRES_DB"]
    if target != "postgres":
        assert cluster.psql("-c", f"CREATE DATABASE {target}").returncode == 0
    proc = cluster.psql("-q", "-f", "-", dbname=target, env=variables, stdin=script)
    assert proc.returncode == 0, proc.stderr
    passwords = {s: secrets.databases[s].reveal() for s in DATABASE_SERVICES}
    return passwords, {s: loaded.env.database_name(s) for s in DATABASE_SERVICES}


def test_per_service_roles_reach_only_their_database(cluster: Cluster) -> None:
    passwords, dbs = _apply(cluster, "staging", "perservice")
    for service in DATABASE_SERVICES:
        own = cluster.psql(
            "-c",
            "CREATE TABLE t (id int); INSERT INTO t VALUES (1)",
            user=f"{service}_app",
            dbname=dbs[service],
            password=passwords[service],
        )
        assert own.returncode == 0, own.stderr
        for other in DATABASE_SERVICES:
            if other == service:
                continue
            denied = cluster.psql(
                "-c", "SELECT 1", user=f"{service}_app", dbname=dbs[other], password=passwords[service]
            )
            assert denied.returncode != 0
            assert f'permission denied for database "{dbs[other]}"' in denied.stderr
        _denied_the_system_databases(cluster, f"{service}_app", passwords[service])
    wrong = cluster.psql("-c", "SELECT 1", user="auth_app", dbname="auth_db", password="not-the-password")
    assert "password authentication failed" in wrong.stderr


def test_shared_layout_confines_each_role_to_its_schema(cluster: Cluster) -> None:
    passwords, dbs = _apply(cluster, "development", "shared")
    db = dbs["auth"]
    assert set(dbs.values()) == {"universal_mfe_dev"}
    for service in DATABASE_SERVICES:
        own = cluster.psql(
            "-c",
            "CREATE TABLE t (id int); SELECT current_schema()",
            user=f"{service}_app",
            dbname=db,
            password=passwords[service],
        )
        assert own.returncode == 0, own.stderr
        assert service in own.stdout.split()
        _denied_the_system_databases(cluster, f"{service}_app", passwords[service])
    denied = cluster.psql("-c", "SELECT * FROM payments.t", user="auth_app", dbname=db, password=passwords["auth"])
    assert "permission denied for schema payments" in denied.stderr
    public = cluster.psql(
        "-c", "CREATE TABLE public.x (id int)", user="auth_app", dbname=db, password=passwords["auth"]
    )
    assert "permission denied for schema public" in public.stderr


def _denied_the_system_databases(cluster: Cluster, role: str, password: str) -> None:
    """postgres and template1 are the superuser's: a service role cannot list roles or sessions there."""
    for system in ("postgres", "template1"):
        denied = cluster.psql("-c", "SELECT usename FROM pg_stat_activity", user=role, dbname=system, password=password)
        assert f'permission denied for database "{system}"' in denied.stderr, (role, system, denied.stdout)
