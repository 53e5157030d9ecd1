"""Errors to Sentry (the guide, 7.2) when SENTRY_DSN is set; nothing is loaded or sent otherwise.

Events carry the environment's name, the service and its version as the release, and the request id as
a tag. They carry no request body, no cookies, no query string and no header but a few harmless ones,
and no local variables: what a service holds (passwords in a login body, tokens, connection strings)
stays in the service."""

from __future__ import annotations

from typing import Any

from mfe_services.common import logs
from mfe_services.common.settings import Settings

SAFE_HEADERS = frozenset({"content-type", "content-length", "user-agent", "x-request-id", "accept", "host"})


def scrub(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
    rid = logs.request_id.get()
    if rid:
        event.setdefault("tags", {})["request_id"] = rid
    request = event.get("request")
    if isinstance(request, dict):
        headers = request.get("headers") or {}
        request["headers"] = {k: v for k, v in headers.items() if k.lower() in SAFE_HEADERS}
        for key in ("data", "cookies", "query_string", "env"):
            request.pop(key, None)
    return event


def init(settings: Settings) -> None:
    if not settings.sentry_dsn:
        return
    from sentry_sdk.utils import BadDsn

    try:
        _start(settings)
    except BadDsn as exc:
        raise ValueError(f"SENTRY_DSN is not a Sentry DSN ({exc})") from None


def _start(settings: Settings) -> None:
    import sentry_sdk

    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        environment=settings.app_env,
        release=f"{settings.service}@{settings.version}",
        server_name=settings.service,
        send_default_pii=False,
        include_local_variables=False,
        max_request_body_size="never",
        before_send=scrub,  # type: ignore[arg-type]
        traces_sample_rate=0.0,
    )


def report(error: BaseException | None = None, message: str | None = None) -> None:
    """For errors the gateway answers itself (it is not a Starlette app)."""
    import sys

    if "sentry_sdk" not in sys.modules:
        return
    import sentry_sdk

    if error is not None:
        sentry_sdk.capture_exception(error)
    elif message is not None:
        sentry_sdk.capture_message(message, level="error")
