"""The docker runtime: the rendered bundle driven by Compose v2 on a Docker Engine."""

from collections.abc import Callable

from mfe_deploy.runtimes.contract import Deployment, Runtime
from mfe_deploy.runtimes.docker.runtime import DockerRuntime

RUNTIME: Callable[[Deployment], Runtime] = DockerRuntime  # the type checker holds the class to the contract

__all__ = ["RUNTIME", "DockerRuntime"]
