"""The event hub's users: one RabbitMQ user per service, confined to its own queues and the shared
exchanges, as a definitions document (`rabbitmqctl import_definitions` reads it on its standard input)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections.abc import Callable

from mfe_deploy.config.secrets import Secrets
from mfe_deploy.exec.secret import Secret

# The exchanges every service publishes to or binds from (mfe_services.common.events).
SHARED = (r"mfe\.events", r"mfe\.events\.dead")


def permissions(service: str) -> str:
    """Configure, write and read, all three: the shared exchanges, and the service's own queue and its
    dead-letter queue (`<service>.events`, `<service>.events.dead`), nothing else."""
    own = re.escape(service)
    return f"^({'|'.join(SHARED)}|{own}\\.events|{own}\\.events\\.dead)$"


def password_hash(password: str, salt: bytes) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))."""
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def definitions(secrets: Secrets, salt: Callable[[int], bytes] = os.urandom) -> Secret:
    """Every service's user and permissions on the default vhost. Importing it again updates them (a
    new salt each time); users it does not name are left alone (the administrator among them)."""
    users, grants = [], []
    for name, password in sorted(secrets.hub_users.items()):
        users.append(
            {
                "name": name,
                "password_hash": password_hash(password.reveal(), salt(4)),
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": [],
            }
        )
        allowed = permissions(name)
        grants.append({"user": name, "vhost": "/", "configure": allowed, "write": allowed, "read": allowed})
    return Secret(json.dumps({"users": users, "permissions": grants}))
