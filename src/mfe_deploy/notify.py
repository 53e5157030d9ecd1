"""Notifications: what happened to an environment, posted to the webhooks its `notify:` names.

Deliveries run in background threads with retries and backoff; they never fail or change the outcome of
the operation they report, and the CLI waits for them a bounded time before it exits. The payloads are
built by pure functions; a URL (which carries its token) is never printed."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mfe_deploy.config.models import Environment
from mfe_deploy.config.secrets import Secrets
from mfe_deploy.exec.secret import Secret

# What an audited action's outcome means to someone who was not watching.
OUTCOMES: dict[tuple[str, str], str] = {
    ("up", "ok"): "deploy.succeeded",
    ("up", "failed"): "deploy.failed",
    ("rollback", "ok"): "rollback.succeeded",
    ("rollback", "failed"): "rollback.failed",
    ("restore", "ok"): "restore.succeeded",
    ("restore", "failed"): "restore.failed",
    ("backup", "failed"): "backup.failed",
}
BACKOFF = (0.5, 1.0, 2.0, 4.0)
DRAIN_SECONDS = 15.0


@dataclass(frozen=True)
class Event:
    name: str
    env: str
    summary: str
    details: dict[str, Any] = field(default_factory=dict)


def events_for(record: dict[str, Any]) -> list[Event]:
    """The notifications an audit record calls for (none for most actions)."""
    name = OUTCOMES.get((str(record.get("action")), str(record.get("result"))))
    if name is None or record.get("error_type") == "LockHeld":
        return []  # refused by the deploy lock: nothing was tried, another operation is under way
    env, action = str(record.get("env")), str(record.get("action"))
    details = {k: v for k, v in record.items() if k not in ("env", "action") and v is not None}
    error = record.get("error")
    summary = f"{action} of {env} {'succeeded' if record.get('result') == 'ok' else 'failed'}"
    found = [Event(name, env, f"{summary}: {error}" if error else summary, details)]
    if record.get("error_type") == "RolledBack":
        found.append(Event("rollback.automatic", env, f"{env} was rolled back automatically: {error}", details))
    return found


def payload(fmt: str, event: Event) -> dict[str, Any]:
    if fmt == "slack":
        return {"text": f"[{event.env}] {event.name}: {event.summary}"}
    return {"event": event.name, "env": event.env, "summary": event.summary, "details": event.details}


@dataclass(frozen=True)
class Hook:
    index: int
    url: Secret
    fmt: str
    events: frozenset[str]

    def wants(self, event: str) -> bool:
        return not self.events or event in self.events or event == "test"


Post = Callable[[str, bytes, float], int]


def post(url: str, body: bytes, timeout: float) -> int:
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked when the secret is read
        url, data=body, method="POST", headers={"content-type": "application/json", "user-agent": "mfe-deploy"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
        return int(answer.status)


def reason(exc: BaseException) -> str:
    """Why a delivery failed, with nothing of the URL (which carries its token): the errno's text of a
    socket error (`Connection refused`), else the exception's type (InvalidURL's own text quotes the path)."""
    cause = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    if isinstance(cause, TimeoutError):
        return "timed out"
    return type(cause).__name__


@dataclass
class Notifier:
    hooks: list[Hook]
    timeout: float = 5
    attempts: int = 3
    warn: Callable[[str], None] = print
    send: Post = post
    backoff: tuple[float, ...] = BACKOFF
    threads: list[threading.Thread] = field(default_factory=list)
    results: list[tuple[int, str, bool]] = field(default_factory=list)  # (hook index, event, delivered)

    @classmethod
    def of(cls, env: Environment, secrets: Secrets, warn: Callable[[str], None]) -> Notifier:
        hooks = [
            Hook(i, url, hook.format, frozenset(hook.events))
            for i, (hook, url) in enumerate(zip(env.notify.webhooks, secrets.webhooks, strict=True))
        ]
        return cls(hooks, env.notify.timeout, env.notify.attempts, warn)

    def notify(self, event: Event) -> None:
        for hook in self.hooks:
            if hook.wants(event.name):
                thread = threading.Thread(target=self._deliver, args=(hook, event), daemon=True)
                thread.start()
                self.threads.append(thread)

    def _deliver(self, hook: Hook, event: Event) -> None:
        body = json.dumps(payload(hook.fmt, event)).encode()
        why = ""
        for attempt in range(self.attempts):
            try:
                status = self.send(hook.url.reveal(), body, self.timeout)
                if 200 <= status < 300:
                    self.results.append((hook.index, event.name, True))
                    return
                why = f"HTTP {status}"
            except urllib.error.HTTPError as exc:
                why = f"HTTP {exc.code}"
            except Exception as exc:  # a delivery never raises: a thread's traceback would print the URL
                why = reason(exc)
            if attempt + 1 < self.attempts:
                time.sleep(self.backoff[min(attempt, len(self.backoff) - 1)])
        self.results.append((hook.index, event.name, False))
        tries = f"{self.attempts} attempts ({why})"
        self.warn(f"notify: webhook {hook.index + 1} ({hook.fmt}) did not take {event.name} after {tries}")

    def drain(self, seconds: float = DRAIN_SECONDS) -> None:
        deadline = time.monotonic() + seconds
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
