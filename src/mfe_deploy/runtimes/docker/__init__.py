"""The docker runtime: the rendered bundle driven by Compose v2 on a Docker Engine."""

from mfe_deploy.runtimes.docker.runtime import DockerRuntime

RUNTIME = DockerRuntime

__all__ = ["RUNTIME", "DockerRuntime"]
