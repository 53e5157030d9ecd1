"""The docker runtime: the rendered bundle driven by Compose v2 on a Docker Engine."""

from collections.abc import Callable

from mfe_deploy.runtimes.contract import Deployment, Runtime, Stepwise
from mfe_deploy.runtimes.docker.runtime import DockerRuntime

RUNTIME: Callable[[Deployment], Runtime] = DockerRuntime  # the type checker holds the class to the contract
UP: Callable[[Deployment], Stepwise] = DockerRuntime  # and to how its `up` runs (app.up)

__all__ = ["RUNTIME", "DockerRuntime"]
