"""A service built with the bundled services' create_app whose one store is Redis, to see what its /health
says when Redis goes away and comes back: `uvicorn tests.redis_app:app` with REDIS_URL set."""

from __future__ import annotations

from mfe_services.common.settings import Settings
from mfe_services.common.web import create_app

app = create_app(Settings.from_env("probe"), [], database=False)
