"""The stack file the swarm runtime deploys, from the staging and production environments (pure)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mfe_deploy import swarm_stack
from mfe_deploy.config import loader
from mfe_deploy.render import NginxPaths, nginx_conf, render
from tests.conftest import REPO, strong_secrets


def _stack(name: str, **overrides: Any) -> tuple[dict[str, Any], dict[str, bytes]]:
    loaded, secrets = loader.load_with_secrets(REPO, name, environ=strong_secrets())
    env = loaded.env.model_copy(update=overrides)
    bundle = render(env, secrets, versions=dict.fromkeys(env.services, "v1"))
    contents = {path: f.text.encode() for path, f in bundle.files.items()}
    contents |= {"nginx/ssl/cert.pem": b"cert", "nginx/ssl/key.pem": b"key"}
    return swarm_stack.stack(env, yaml.safe_load(bundle.files["compose.yml"].text), contents), contents


@pytest.mark.parametrize("name", ["staging", "production"])
def test_no_service_holds_a_secret_in_its_environment(name: str) -> None:
    doc, _ = _stack(name)
    text = swarm_stack.dump(doc, name)
    for value in strong_secrets().values():
        assert value not in text
    for unit, svc in doc["services"].items():
        assert "env_file" not in svc, unit
        if unit in ("postgres", "rabbitmq", "api-gateway", "auth", "payments", "admin", "profile"):
            (secret,) = [s for s in svc["secrets"] if s["target"] == "env"]
            assert secret["mode"] == 0o400 and doc["secrets"][secret["source"]]["file"] == f"./env/{unit}.env"
    auth = doc["services"]["auth"]
    assert auth["entrypoint"][:4] == ["mfe-service", "auth", "--env-file", "/run/secrets/env"]
    # The secret is the task user's own: no root start and no capability to switch users is needed.
    assert auth["user"] == "10001:10001" and "cap_add" not in auth
    assert [s["uid"] for s in auth["secrets"] if s["target"] == "env"] == ["10001"]
    assert not any(str(v).startswith("./") for v in auth.get("volumes", [])), auth.get("volumes")
    assert doc["services"]["postgres"]["entrypoint"][:2] == ["sh", "-c"]


def test_updates_are_start_first_except_where_two_tasks_cannot_share_a_volume_or_a_port() -> None:
    doc, _ = _stack("staging")
    orders = {unit: svc["deploy"]["update_config"]["order"] for unit, svc in doc["services"].items()}
    assert (
        orders.pop("postgres") == orders.pop("redis") == orders.pop("rabbitmq") == orders.pop("nginx") == "stop-first"
    )
    assert set(orders.values()) == {"start-first"}
    gateway = doc["services"]["api-gateway"]["deploy"]
    assert gateway["update_config"]["failure_action"] == "rollback"
    assert gateway["endpoint_mode"] == "dnsrr"  # no IPVS on this kind of kernel
    ports = doc["services"]["nginx"]["ports"]
    assert {(p["target"], p["mode"]) for p in ports} == {(80, "host"), (443, "host")}
    assert doc["services"]["postgres"]["deploy"]["placement"] == {"constraints": ["node.role == manager"]}
    assert doc["networks"]["data"] == {"driver": "overlay", "attachable": True, "internal": True}


def test_stores_follow_their_node_label() -> None:
    loaded = loader.load(REPO, "staging")
    swarm = loaded.env.swarm.model_copy(update={"stores_label": "mfe.stores"})
    doc, _ = _stack("staging", swarm=swarm)
    assert doc["services"]["redis"]["deploy"]["placement"] == {"constraints": ["node.labels.mfe.stores == true"]}


def test_a_secret_or_config_is_renamed_when_its_content_changes_and_only_then() -> None:
    doc, contents = _stack("staging")
    same = swarm_stack.stack(*_inputs("staging", contents))
    assert same["secrets"] == doc["secrets"] and same["configs"] == doc["configs"]
    changed = swarm_stack.stack(*_inputs("staging", {**contents, "env/auth.env": b"JWT_SECRET='new'\n"}))
    renamed = {k for k in doc["secrets"] if doc["secrets"][k]["name"] != changed["secrets"][k]["name"]}
    assert renamed == {"auth_env"}


def _inputs(name: str, contents: dict[str, bytes]) -> tuple[Any, dict[str, Any], dict[str, bytes]]:
    loaded, secrets = loader.load_with_secrets(REPO, name, environ=strong_secrets())
    bundle = render(loaded.env, secrets, versions=dict.fromkeys(loaded.env.services, "v1"))
    return loaded.env, yaml.safe_load(bundle.files["compose.yml"].text), contents


def test_stores_only_stack_keeps_what_the_stores_use() -> None:
    doc, _ = _stack("staging")
    stores = swarm_stack.only(doc, ["postgres", "redis", "rabbitmq"])
    assert set(stores["services"]) == {"postgres", "redis", "rabbitmq"}
    assert set(stores["networks"]) == {"data"}
    assert set(stores["secrets"]) == {"postgres_env", "rabbitmq_env", "redis_env"}
    assert set(stores["configs"]) == {"initdb"}


def test_nginx_resolves_the_gateway_per_request_on_a_swarm() -> None:
    loaded = loader.load(REPO, "staging")
    conf = nginx_conf(loaded.env, NginxPaths(resolver="127.0.0.11"))
    assert "resolver 127.0.0.11 valid=2s ipv6=off;" in conf
    assert "upstream api_gateway" not in conf and "proxy_pass http://$mfe_gateway;" in conf
    assert 'set $mfe_gateway "api-gateway:3000";' in conf


def test_read_only_roots_keep_their_in_memory_folders_on_a_swarm() -> None:
    doc, _ = _stack("staging")
    postgres = doc["services"]["postgres"]
    assert postgres["read_only"] is True
    mounts = {v["target"]: v for v in postgres["volumes"] if isinstance(v, dict) and v["type"] == "tmpfs"}
    assert mounts == {
        "/var/run/postgresql": {"type": "tmpfs", "target": "/var/run/postgresql"},
        "/tmp": {"type": "tmpfs", "target": "/tmp"},
    }


def test_each_store_carries_a_digest_of_its_definition_that_changes_with_it_alone() -> None:
    doc, _ = _stack("staging")
    labels = {u: s["deploy"].get("labels", {}).get(swarm_stack.STORE_LABEL) for u, s in doc["services"].items()}
    assert all(labels[u] for u in ("postgres", "redis", "rabbitmq"))
    assert labels["auth"] is None and labels["nginx"] is None
    assert swarm_stack.store_fingerprint(doc, "redis") == labels["redis"]  # the label is not in its own digest
    loaded, _ = loader.load_with_secrets(REPO, "staging", environ=strong_secrets())
    bigger, _ = _stack("staging", redis=loaded.env.redis.model_copy(update={"maxmemory": "512mb"}))
    after = {u: bigger["services"][u]["deploy"]["labels"][swarm_stack.STORE_LABEL] for u in ("postgres", "redis")}
    assert after["postgres"] == labels["postgres"] and after["redis"] != labels["redis"]


def test_render_of_a_swarm_environment_writes_the_stack_files_up_deploys(tmp_path: Path) -> None:
    """`render` writes what `up` deploys on every runtime: on Swarm the stack files (the same function
    builds them for both), with the digests of the certificates `up` made once beside the bundle."""
    shutil.copytree(REPO / "environments", tmp_path / "environments")
    (tmp_path / "environments" / "sw.yaml").write_text("extends: staging\nruntime: swarm\n")
    out = tmp_path / "bundle"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "mfe_deploy", "-C", str(tmp_path), "render", "--env", "sw", *args]
        argv += ["--out", str(out), "--engine-version", "24.0", "--version", "v1"]
        return subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **strong_secrets()}, check=False)

    first = cli()
    assert first.returncode == 0, first.stderr
    assert (out / "stack.yml").is_file() and (out / "stores.yml").is_file() and not (out / "compose.yml").exists()
    doc = yaml.safe_load((out / "stack.yml").read_text())
    assert set(doc["services"]) >= {"api-gateway", "auth", "payments", "admin", "profile", "postgres", "nginx"}
    assert doc["services"]["auth"]["image"].endswith(":v1")
    assert set(yaml.safe_load((out / "stores.yml").read_text())["services"]) == {"postgres", "redis", "rabbitmq"}
    assert cli("--check").returncode == 0
    # a certificate `up` made beside the bundle is a secret named by its digest: a new one is drift
    before = doc["secrets"]
    (out / "nginx" / "ssl").mkdir(parents=True, exist_ok=True)
    (out / "nginx" / "ssl" / "cert.pem").write_text("a certificate up made\n")
    drift = cli("--check")
    assert drift.returncode == 1 and "stack.yml" in drift.stdout, drift.stdout + drift.stderr
    assert cli().returncode == 0
    after = yaml.safe_load((out / "stack.yml").read_text())["secrets"]
    assert [k for k in after if after[k] != before[k]] == ["tls_cert"], (before, after)


def test_a_task_drains_for_the_swarms_drain_and_two_seconds_on_one_host() -> None:
    """DRAIN_SECONDS (common/drain.py): a stopping task keeps its listener open this long. On a Swarm the
    other nodes' DNS names a task for seconds after Swarm took it out; on one host the DNS is at once."""
    from mfe_deploy.config.checks import check

    loaded, secrets = loader.load_with_secrets(REPO, "staging", environ=strong_secrets())
    assert loaded.env.runtime != "swarm"
    on_swarm = loaded.env.model_copy(update={"runtime": "swarm"})
    shorter = on_swarm.model_copy(update={"swarm": on_swarm.swarm.model_copy(update={"drain": "4s"})})
    for env, drain in ((loaded.env, "2"), (on_swarm, "10"), (shorter, "4")):
        files = render(env, secrets).files
        for name in env.web_services:
            assert f"DRAIN_SECONDS='{drain}'\n" in files[f"env/{name}.env"].text, (env.runtime, name)
    assert not [f for f in check(on_swarm) if f[0][-1:] == ("stop_timeout",)]
    # A stop timeout the drain would eat up is refused, naming the service's field and the fix.
    auth = on_swarm.services["auth"].model_copy(update={"stop_timeout": "12s"})
    tight = on_swarm.model_copy(update={"services": {**on_swarm.services, "auth": auth}})
    found = [f for f in check(tight) if f[0][-1:] == ("stop_timeout",)]
    assert found and found[0][0] == ("services", "auth", "stop_timeout"), found
    assert "at least 15s" in found[0][1] and "swarm.drain" in found[0][1], found
