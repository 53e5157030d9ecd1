"""The local runtime: the stack as supervised processes on this machine (supervisord drives them)."""

from collections.abc import Callable

from mfe_deploy.runtimes.contract import Deployment, Runtime, Stepwise
from mfe_deploy.runtimes.local.runtime import LocalRuntime

RUNTIME: Callable[[Deployment], Runtime] = LocalRuntime  # the type checker holds the class to the contract
UP: Callable[[Deployment], Stepwise] = LocalRuntime  # and to how its `up` runs (app.up)

__all__ = ["RUNTIME", "LocalRuntime"]
