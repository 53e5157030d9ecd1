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


app = create_app(Settings(service="boom", port=0, jwt_secret="x" * 32), [Route("/api/boom/fail", boom)], database=False)
