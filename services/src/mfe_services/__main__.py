"""`mfe-service NAME` (or `python -m mfe_services NAME`): run one service under uvicorn, configured
entirely from the environment (PORT, DATABASE_URL, ... as rendered by mfe-deploy)."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

SERVICES = {
    "api-gateway": "mfe_services.gateway.app",
    "auth": "mfe_services.auth.app",
    "payments": "mfe_services.payments.app",
    "admin": "mfe_services.admin.app",
    "profile": "mfe_services.profile.app",
}


def build(name: str) -> Any:
    from mfe_services.common.settings import Settings

    module = importlib.import_module(SERVICES[name])
    return module.build(Settings.from_env(name))


def read_env_file(path: str) -> dict[str, str]:
    """KEY='value' lines as mfe-deploy writes them (single quotes: taken literally); # comments."""
    values = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, _, value = line.partition("=")
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            values[key.strip()] = value
    return values


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 3 and args[1] == "--env-file":
        os.environ.update(read_env_file(args[2]))
        args = args[:1]
    if len(args) != 1 or args[0] not in SERVICES:
        sys.stderr.write(f"usage: mfe-service {{{','.join(SERVICES)}}} [--env-file PATH]\n")
        sys.exit(2)
    import uvicorn

    name = args[0]
    try:
        app = build(name)
    except (RuntimeError, ValueError) as exc:
        sys.stderr.write(f"{name}: configuration error: {exc}\n")
        sys.exit(78)  # EX_CONFIG: supervisors should not restart-loop on this
    uvicorn.run(
        app,
        host=os.environ.get("HOST", "0.0.0.0"),  # noqa: S104 - a container's service listens on its interface
        port=int(os.environ["PORT"]),
        loop="uvloop" if sys.platform != "win32" else "asyncio",
        http="httptools",
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=15,
    )


if __name__ == "__main__":
    main()
