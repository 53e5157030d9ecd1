"""`mfe-service NAME` (or `python -m mfe_services NAME`): run one service under uvicorn, configured
entirely from the environment (PORT, DATABASE_URL, ... as rendered by mfe-deploy)."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from mfe_services import envfile

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


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    options: dict[str, str] = {}
    while len(args) >= 3 and args[-2] in ("--env-file", "--user") and args[-2] not in options:
        options[args[-2]] = args[-1]
        del args[-2:]
    if len(args) != 1 or args[0] not in SERVICES:
        sys.stderr.write(f"usage: mfe-service {{{','.join(SERVICES)}}} [--env-file PATH] [--user UID[:GID]]\n")
        sys.exit(2)
    envfile.load(options.get("--env-file"), options.get("--user"))
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
