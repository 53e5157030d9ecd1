"""A service built with the bundled services' create_app whose one route fails, to see how a real 500
leaves the process: `uvicorn tests.boom_app:app`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mfe_services.common.settings import Settings
from mfe_services.common.web import create_app


async def boom(request: Request) -> Response:
    raise RuntimeError("secret internals of the failure")


# Configured from the environment as a service is (JWT_PUBLIC_KEYS, SENTRY_DSN, APP_ENV, SERVICE_VERSION, ...).
app = create_app(Settings.from_env("boom"), [Route("/api/boom/fail", boom, methods=["GET", "POST"])], database=False)
