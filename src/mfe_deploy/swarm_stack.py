"""The Swarm stack: the environment's compose bundle turned into a `docker stack deploy` file. Pure.

What changes from compose, and why:
- secrets are Swarm secrets (files under /run/secrets, mode 0400), never the service's environment: the
  env files compose mounts become secrets owned by the task's user (a bundled service runs as 10001 from
  the start, postgres and rabbitmq source theirs before their entrypoint); nginx's certificate and key
  are secrets, its configuration and the initdb script configs;
- every secret and config is named after its content: a changed value is a new name, which is how Swarm
  rotates them (they are immutable), and an unchanged one is left alone;
- replicas, `update_config` (start-first, failure_action: rollback, a monitor window) and
  `rollback_config` from the environment; stores and nginx are stop-first (one volume, one host port);
- endpoint_mode dnsrr and host-mode ports by default: the routing mesh and VIPs need IPVS;
- stores on one node (a label, or the manager) with their volumes; overlay networks, the data one internal;
  each store carries a digest of its definition in a label (`up` restarts a store only when asked);
- nginx resolves the gateway per request (its tasks change addresses on every update).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import yaml

from mfe_deploy.config.models import Environment
from mfe_deploy.config.urls import DB_TLS_DIR

STORES = ("postgres", "redis", "rabbitmq")
STORE_LABEL = "mfe.store-config"
SERVICE_UID = "10001"


def object_name(stack: str, key: str, content: bytes) -> str:
    """A Swarm secret or config name: the stack, what it is, and its content's digest (<= 64 chars)."""
    return f"{stack}_{key}_{hashlib.sha256(content).hexdigest()[:12]}"[-64:]


def stack(env: Environment, compose: Mapping[str, Any], contents: Mapping[str, bytes]) -> dict[str, Any]:
    """compose: the parsed compose.yml of the same bundle. contents: the bytes of every file the stack
    turns into a secret or config, by its path in the bundle (env/auth.env, nginx/ssl/key.pem, ...)."""
    name = f"{env.project}-{env.name}"
    secrets: dict[str, dict[str, str]] = {}
    configs: dict[str, dict[str, str]] = {}

    def secret(key: str, path: str) -> str:
        secrets[key] = {"name": object_name(name, key, contents[path]), "file": f"./{path}"}
        return key

    def config(key: str, path: str) -> str:
        configs[key] = {"name": object_name(name, key, contents[path]), "file": f"./{path}"}
        return key

    services = {}
    for unit, spec in compose["services"].items():
        services[unit] = _service(env, unit, copy.deepcopy(dict(spec)), secret, config)
    networks = {
        key: {"driver": "overlay", "attachable": True, **({"internal": True} if value.get("internal") else {})}
        for key, value in compose["networks"].items()
    }
    doc = {
        "services": services,
        "networks": networks,
        "volumes": dict(compose.get("volumes") or {}),
        "secrets": secrets,
        "configs": configs,
    }
    for unit in (u for u in STORES if u in services):
        services[unit]["deploy"]["labels"] = {STORE_LABEL: store_fingerprint(doc, unit)}
    return doc


def store_fingerprint(doc: Mapping[str, Any], unit: str) -> str:
    """A digest of a store's whole service definition, with the names (content digests) of the secrets
    and configs it uses: any change that makes Swarm update the store (a restart) changes it. Kept in
    a service label, so the running store says which configuration it was deployed with."""
    svc = copy.deepcopy(dict(doc["services"][unit]))
    svc.get("deploy", {}).pop("labels", None)
    used = {kind: sorted(doc[kind][x["source"]]["name"] for x in svc.get(kind, [])) for kind in ("secrets", "configs")}
    return hashlib.sha256(json.dumps([svc, used], sort_keys=True, default=str).encode()).hexdigest()[:16]


def _service(env: Environment, unit: str, svc: dict[str, Any], secret: Any, config: Any) -> dict[str, Any]:
    for key in ("restart", "depends_on", "container_name", "security_opt", "shm_size"):
        svc.pop(key, None)  # not Swarm settings: deploy.restart_policy, healthy tasks, no-new-privileges
    volumes: list[Any] = []
    for tmp in svc.pop("tmpfs", []):
        # compose's "PATH[:mode=OCTAL]": a stack file's tmpfs takes no mode (the docker CLI drops it), and
        # Swarm's tmpfs mounts are 1777 already.
        volumes.append({"type": "tmpfs", "target": str(tmp).partition(":")[0]})
    service = env.services.get(unit)
    task_secrets: list[dict[str, Any]] = []
    task_configs: list[dict[str, Any]] = []
    for volume in svc.pop("volumes", []):
        source, _, rest = str(volume).partition(":")
        target = rest.split(":")[0]
        if not source.startswith((".", "/")):
            volumes.append(volume)  # a named volume
        elif source == "./initdb":
            task_configs.append(
                {"source": config("initdb", "initdb/10-databases.sql"), "target": f"{target}/10-databases.sql"}
            )
        elif source == "./nginx":
            task_configs.append({"source": config("nginx_conf", "nginx/nginx.conf"), "target": f"{target}/nginx.conf"})
        elif source == "./prometheus/prometheus.yml":
            task_configs.append({"source": config("prometheus", "prometheus/prometheus.yml"), "target": target})
        elif source == f"./{DB_TLS_DIR}":
            # database.tls on postgres: the certificate and the rules as configs, the key as a secret (root's:
            # the start copies it for the server's user, as on docker)
            for file in ("server.crt", "pg_hba.conf"):
                key = "db_" + file.replace(".", "_")
                task_configs.append({"source": config(key, f"{DB_TLS_DIR}/{file}"), "target": f"{target}/{file}"})
            task_secrets.append(
                {
                    "source": secret("db_key", f"{DB_TLS_DIR}/server.key"),
                    "target": f"{target}/server.key",
                    "mode": 0o400,
                }
            )
        elif source == f"./{DB_TLS_DIR}/ca.pem":
            task_configs.append({"source": config("db_ca", f"{DB_TLS_DIR}/ca.pem"), "target": target, "mode": 0o444})
        elif target.startswith("/etc/nginx/ssl"):
            # self-signed: the bundle's ssl folder; files: the certificate and key you named
            for file in ("cert.pem", "key.pem"):
                path = f"nginx/ssl/{file}"
                key = "tls_" + file.removesuffix(".pem")
                task_secrets.append({"source": secret(key, path), "target": f"/etc/nginx/ssl/{file}", "mode": 0o400})
        elif source.startswith("./env/"):
            # The unit's env file (a bundled service, postgres, rabbitmq), which compose mounts: a secret
            # here, owned by the user the task runs as. A service needs no root start to read it.
            uid = SERVICE_UID if service is not None else "0"
            task_secrets.append(
                {"source": secret(f"{unit}_env", source[2:]), "target": "env", "uid": uid, "gid": uid, "mode": 0o400}
            )
            if service is not None:
                svc["user"] = f"{uid}:{uid}"
                svc.pop("cap_add", None)
        # ./maintenance is a folder on one machine: maintenance mode is not offered on a swarm.
        # A service image of yours keeps its env_file: its entrypoint is unknown.
    if volumes:
        svc["volumes"] = volumes
    if task_secrets:
        svc["secrets"] = task_secrets
    if task_configs:
        svc["configs"] = task_configs
    ports = []
    for port in svc.pop("ports", []):
        parts = str(port).split(":")
        if len(parts) == 2:  # HOST:CONTAINER; 127.0.0.1:H:C has no meaning on a swarm (host mode binds all)
            ports.append({"target": int(parts[1]), "published": int(parts[0]), "protocol": "tcp", "mode": "host"})
    if ports:
        svc["ports"] = ports
    singleton = service is not None and service.singleton
    svc["deploy"] = _deploy(env, unit, svc.get("deploy") or {}, stop_first=unit in STORES or bool(ports) or singleton)
    return svc


def _deploy(env: Environment, unit: str, deploy: Mapping[str, Any], *, stop_first: bool) -> dict[str, Any]:
    swarm = env.swarm
    service = env.services.get(unit)
    order = "stop-first" if stop_first else "start-first"
    result: dict[str, Any] = {
        "endpoint_mode": swarm.endpoint_mode,
        "replicas": service.replicas if service is not None else 1,
        "restart_policy": {"condition": "any", "delay": "2s"},
        "update_config": {
            "parallelism": 1,
            "delay": swarm.update_delay,
            "order": order,
            "failure_action": "rollback",
            "monitor": swarm.monitor,
        },
        "rollback_config": {"parallelism": 1, "order": order, "monitor": swarm.monitor, "failure_action": "pause"},
    }
    if "resources" in deploy:
        result["resources"] = deploy["resources"]
    if unit in STORES or unit == "nginx":
        label = swarm.stores_label if unit in STORES else None
        result["placement"] = {"constraints": [f"node.labels.{label} == true" if label else "node.role == manager"]}
    return result


def only(doc: Mapping[str, Any], units: list[str]) -> dict[str, Any]:
    """The same stack with these services only, and the networks, volumes, secrets and configs they use."""
    services = {u: doc["services"][u] for u in units if u in doc["services"]}

    def used(kind: str, names: set[str]) -> dict[str, Any]:
        return {k: v for k, v in doc[kind].items() if k in names}

    nets = {n for s in services.values() for n in s.get("networks", [])}
    vols = {str(v).split(":")[0] for s in services.values() for v in s.get("volumes", []) if isinstance(v, str)}
    secs = {x["source"] for s in services.values() for x in s.get("secrets", [])}
    cfgs = {x["source"] for s in services.values() for x in s.get("configs", [])}
    return {
        "services": services,
        "networks": used("networks", nets),
        "volumes": used("volumes", vols),
        "secrets": used("secrets", secs),
        "configs": used("configs", cfgs),
    }


def dump(doc: Mapping[str, Any], env_name: str) -> str:
    head = (
        f"# Rendered by mfe-deploy for the {env_name!r} environment (runtime: swarm). Do not edit: change\n"
        f"# environments/{env_name}.yaml. Secrets are Swarm secrets named after their content, never here.\n"
    )
    return head + yaml.safe_dump(dict(doc), sort_keys=False, default_flow_style=False, width=120)
