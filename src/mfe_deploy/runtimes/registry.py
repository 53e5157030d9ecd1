"""Runtimes by name. A runtime is a package in this package (`runtimes/<name>/`) that exposes RUNTIME, a
class built from a Deployment: a new runtime is a new package, nothing else. The plain modules beside them
(the contract, the parts runtimes share) are never runtimes, so nothing has to list them."""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import mfe_deploy.runtimes as package
from mfe_deploy.errors import MfeError, UsageError

if TYPE_CHECKING:
    from mfe_deploy.runtimes.contract import Deployment, Runtime


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.ispkg)


def unknown(name: str) -> UsageError:
    """A runtime that is none: a usage error (exit 2), with the nearest name when there is one."""
    names = ["auto", *available()]
    near = difflib.get_close_matches(name, names, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return UsageError(f"unknown runtime {name!r}{hint}: one of {', '.join(names)}")


def create(name: str, deployment: Deployment) -> Runtime:
    if name not in available():
        raise unknown(name)
    module = importlib.import_module(f"{package.__name__}.{name}")
    factory = cast("Callable[[Deployment], Runtime]", module.RUNTIME)
    return factory(deployment)


def choose(wanted: str, *, remote: bool, engine: Callable[[], tuple[int, int] | None]) -> tuple[str, str | None]:
    """The runtime to use and, when it was picked for you (auto), why. `engine()`: the Docker Engine's
    version when one answers here (asked only for auto); a remote host runs the docker runtime."""
    if wanted != "auto" and wanted not in available():
        raise unknown(wanted)
    if remote:
        if wanted not in ("docker", "auto"):
            raise MfeError(f"remote hosts run the docker runtime, not {wanted!r}")
        return "docker", None
    if wanted != "auto":
        return wanted, None
    found = engine()
    if found:
        return "docker", f"Docker Engine {found[0]}.{found[1]} answers"
    return "local", "no Docker engine answers"
