"""Probing the services' /health and the stores' ports, concurrently and with short timeouts."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Probe:
    status: int | None  # HTTP status, or None when nothing answered
    body: Mapping[str, Any]
    error: str = ""

    @property
    def healthy(self) -> bool:
        return self.status == 200


def http_json(url: str, timeout: float = 3.0) -> Probe:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback URLs we build
            return Probe(response.status, _json(response.read()))
    except urllib.error.HTTPError as exc:
        return Probe(exc.code, _json(exc.read()), f"HTTP {exc.code}")
    except (OSError, ValueError) as exc:
        return Probe(None, {}, str(getattr(exc, "reason", exc)))


def _json(raw: bytes) -> Mapping[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def probe_all(urls: Mapping[str, str], timeout: float = 3.0) -> dict[str, Probe]:
    with ThreadPoolExecutor(max_workers=max(len(urls), 1)) as pool:
        futures = {name: pool.submit(http_json, url, timeout) for name, url in urls.items()}
        return {name: f.result() for name, f in futures.items()}


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def conflicts(wanted: Iterable[tuple[str, int]], in_use: Mapping[int, bool]) -> list[str]:
    """Ports the stack needs that something else already holds, named by the unit that wanted them."""
    return [f"port {port} ({unit}) is already in use" for unit, port in wanted if in_use.get(port)]


def progress(probes: Mapping[str, Probe]) -> str:
    """`3/5 healthy; waiting for api-gateway, profile`: what a long wait has to say."""
    waiting = [name for name, probe in probes.items() if not probe.healthy]
    return f"{len(probes) - len(waiting)}/{len(probes)} healthy; waiting for {', '.join(waiting)}"
