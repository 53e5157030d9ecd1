"""The services' database check on a real PostgreSQL: a pool whose every connection serves a request is
slow (which /health forgives for a moment: health.SLOW_GRACE), a database that is gone is a failure."""

from __future__ import annotations

import asyncio

import pytest

from mfe_services.common import web
from mfe_services.common.settings import Settings
from tests.pg import temp_cluster


def test_a_busy_pool_is_slow_and_a_stopped_database_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    from psycopg_pool import AsyncConnectionPool

    with temp_cluster() as cluster:
        dsn = f"host={cluster.socket_dir} port={cluster.port} user=postgres dbname=postgres"

        async def scenario() -> list[str]:
            pool: AsyncConnectionPool = AsyncConnectionPool(dsn, min_size=1, max_size=1, open=False)
            await pool.open(wait=True)
            res = web.Resources(settings=Settings(service="auth", port=0), pool=pool, extra={"pool_warm": True})
            check = web._db_check(res)
            seen = []
            await check()
            seen.append("ok")
            async with pool.connection():  # the only connection serves a request
                try:
                    await check()
                except TimeoutError as exc:
                    seen.append(f"slow: {exc}")
            cluster.stop()
            try:
                for _ in range(3):  # the first try may still find the pooled connection before it is checked
                    try:
                        await check()
                    except TimeoutError as exc:
                        seen.append(f"slow: {exc}")
                        break
                    except Exception as exc:  # any other error is a failure: what we want
                        seen.append(f"failed: {type(exc).__name__}")
                        break
            finally:
                cluster.start()
                await pool.close()
            return seen

        seen = asyncio.run(scenario())
    assert seen[:2] == ["ok", "slow: every database connection is serving a request"], seen
    assert len(seen) == 3 and seen[2].startswith("failed: "), seen
