"""`mfe-service NAME` (or `python -m mfe_services NAME`): run one service under uvicorn, configured
entirely from the environment (PORT, DATABASE_URL, ... as rendered by mfe-deploy)."""

from __future__ import annotations

import importlib
import os
import signal
import sys
from types import FrameType
from typing import Any

import uvicorn

from mfe_services import envfile
from mfe_services.common import drain

SERVICES = {
    "api-gateway": "mfe_services.gateway.app",
    "auth": "mfe_services.auth.app",
    "payments": "mfe_services.payments.app",
    "admin": "mfe_services.admin.app",
    "profile": "mfe_services.profile.app",
    "activity": "mfe_services.activity.app",  # a worker: no HTTP (common/worker.py)
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
    name = args[0]
    worker = getattr(importlib.import_module(SERVICES[name]), "WORKER", None)
    if worker is not None:
        run_worker(name, worker)
        return
    try:
        app = build(name)
    except (RuntimeError, ValueError) as exc:
        sys.stderr.write(f"{name}: configuration error: {exc}\n")
        sys.exit(78)  # EX_CONFIG: supervisors should not restart-loop on this
    config = uvicorn.Config(
        app,
        host=os.environ.get("HOST", "0.0.0.0"),  # noqa: S104 - a container's service listens on its interface
        port=int(os.environ["PORT"]),
        loop="uvloop" if sys.platform != "win32" else "asyncio",
        http="httptools",
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=graceful_seconds(os.environ.get("STOP_TIMEOUT")),
    )
    Server(config).run()


def run_worker(name: str, worker: Any) -> None:
    import asyncio

    from mfe_services.common import worker as workers
    from mfe_services.common.settings import Settings

    try:
        settings = Settings.from_env(name)
        if not os.environ.get("HEARTBEAT_FILE"):
            raise RuntimeError("HEARTBEAT_FILE is not set: a worker proves it is alive by touching it")
    except (RuntimeError, ValueError) as exc:
        sys.stderr.write(f"{name}: configuration error: {exc}\n")
        sys.exit(78)
    stop = os.environ.get("STOP_TIMEOUT", "")
    if sys.platform != "win32":
        import uvloop

        uvloop.install()
    asyncio.run(workers.run(settings, worker, float(stop) if stop.isdigit() else 20.0))


def graceful_seconds(stop_timeout: str | None) -> int:
    """How long in-flight requests may take once the listener closed: what the supervisor's stop timeout
    (SIGTERM to SIGKILL, `STOP_TIMEOUT` seconds, rendered from the service's stop_timeout) leaves after
    the drain (`DRAIN_SECONDS`) and a second for the lifespan shutdown."""
    total = int(stop_timeout) if stop_timeout and stop_timeout.isdigit() else 20
    return max(int(total - drain.length() - 1), 1)


class Server(uvicorn.Server):
    """uvicorn's, with a drain before its shutdown (common/drain.py): the first SIGTERM starts the drain,
    and the shutdown begins when it is over; SIGINT (Ctrl-C) or a second SIGTERM starts it at once, as before."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and not drain.active():
            drain.begin()
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if drain.over():
            self.should_exit = True
        return await super().on_tick(counter)


if __name__ == "__main__":
    main()
