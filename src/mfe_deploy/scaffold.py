"""`mfe-deploy init`: the files of a new project, as values (pure). A gateway and the JWT issuer (both
bundled) in front of one service of the user's own, development and production environments."""

from __future__ import annotations

import re

from mfe_deploy.config import jwtkeys
from mfe_deploy.errors import UsageError
from mfe_deploy.render import _jinja

SERVICE = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$")
RESERVED = ("api-gateway", "auth", "payments", "admin", "profile")
FILES = {
    "environments/_base.yaml": "_base.yaml.j2",
    "environments/development.yaml": "development.yaml.j2",
    "environments/production.yaml": "production.yaml.j2",
    "{service}/app.py": "app.py.j2",
    "{service}/Dockerfile": "Dockerfile.j2",
    ".gitignore": "gitignore.j2",
}


def project_name(folder_name: str) -> str:
    """A project name from a folder's: lower case, dashes, starting with a letter (what `project:` takes)."""
    name = re.sub(r"[^a-z0-9-]+", "-", folder_name.lower()).strip("-")
    name = re.sub(r"^[^a-z]+", "", name)[:41].rstrip("-")
    return name or "my-project"


def files(project: str, service: str, port: int, dev_key: str | None = None) -> dict[str, str]:
    """Every file of the new project, by its path in the project folder."""
    if not SERVICE.match(service) or service in RESERVED:
        raise UsageError(
            f"--service {service!r}: a service name is 2 to 32 lower-case letters, digits and dashes, starting "
            f"with a letter, and not one of the bundled ones ({', '.join(RESERVED)})"
        )
    if not 1024 <= port <= 65535 or port in (3000, 3001):
        raise UsageError(f"--port {port}: a port from 1024 to 65535, other than the gateway's 3000 and auth's 3001")
    values = {
        "project": project,
        "service": service,
        "port": port,
        "database": project.replace("-", "_") + "_dev",
        "dev_key": dev_key or jwtkeys.new("development").private.reveal(),
    }
    jinja = _jinja()
    return {
        path.format(service=service): jinja.get_template(f"init/{template}").render(**values)
        for path, template in FILES.items()
    }
