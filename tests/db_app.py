"""A service built with the bundled services' create_app that holds a database pool and nothing else, to see
when its /health lets traffic in: `uvicorn tests.db_app:app` with DATABASE_URL set."""

from __future__ import annotations

from mfe_services.common.settings import Settings
from mfe_services.common.web import create_app

app = create_app(Settings.from_env("probe"), [], database=True)
