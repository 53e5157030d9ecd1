"""The local runtime: the stack as supervised processes on this machine (supervisord drives them)."""

from mfe_deploy.runtimes.local.runtime import LocalRuntime

RUNTIME = LocalRuntime

__all__ = ["RUNTIME", "LocalRuntime"]
