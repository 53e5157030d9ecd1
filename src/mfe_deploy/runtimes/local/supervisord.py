"""The local runtime's supervisord: started with a bare environment, its programs started over its Unix
socket's XML-RPC without waiting on each in turn, asked for their states, and shut down."""

from __future__ import annotations

import os
import shutil
import time
import xmlrpc.client
from collections.abc import Callable, Sequence

from mfe_deploy.binaries import Binaries
from mfe_deploy.errors import MfeError
from mfe_deploy.exec.command import Command
from mfe_deploy.runtimes.contract import StartFailed
from mfe_deploy.runtimes.local import logs
from mfe_deploy.runtimes.local.site import Site
from mfe_deploy.supervisor import ProgramState, parse_status

# What every program inherits from supervisord's environment (never the CLI's: it holds the secrets).
INHERITED = frozenset({"PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PYTHONPATH"})


def ctl(rt: Site, bins: Binaries, *args: str, check: bool = True) -> str:
    done = rt.runner.run(Command((str(bins.supervisorctl), "-c", str(rt.layout.conf), *args)), timeout=120)
    # supervisorctl exits non-zero when a listed program is not running; callers decide what matters.
    if check and done.returncode not in (0, 3) and "no such" not in done.stdout.lower():
        raise MfeError(f"supervisorctl {' '.join(args)} failed: {(done.stdout + done.stderr).strip()}")
    return done.stdout


def supervisor_pid(rt: Site) -> int | None:
    pidfile = rt.layout.run / "supervisord.pid"
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def states(rt: Site, bins: Binaries | None = None) -> dict[str, ProgramState]:
    if supervisor_pid(rt) is None or not rt.layout.conf.exists():
        return {}
    return parse_status(ctl(rt, bins or rt.bins(), "status", check=False))


def start_supervisord(rt: Site, bins: Binaries) -> None:
    # Every program inherits supervisord's environment: it gets only what a process needs to run, never
    # the CLI's (which holds the secrets and whatever else the operator exported). A service reads its
    # own variables from its env file; a program's own settings are `environment=` in its section.
    inherited = {key: value for key, value in os.environ.items() if key in INHERITED}
    supervisord = Command((str(bins.supervisord), "-c", str(rt.layout.conf)), env=inherited, inherit=False)
    done = rt.runner.run(supervisord)
    if done.returncode != 0:
        raise StartFailed(f"supervisord did not start: {(done.stdout + done.stderr).strip()}")
    wait(rt, lambda: (rt.layout.run / "supervisor.sock").exists(), 10, "supervisord")


def _rpc(rt: Site) -> xmlrpc.client.ServerProxy:
    from supervisor.xmlrpc import SupervisorTransport  # type: ignore[import-untyped]

    transport = SupervisorTransport(None, None, f"unix://{rt.layout.run / 'supervisor.sock'}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def stop_programs(rt: Site, names: Sequence[str]) -> None:
    """Stop these programs (each within its stopwaitsecs: a service drains); one not running is left."""
    rpc = _rpc(rt)
    for name in names:
        try:
            rpc.supervisor.stopProcess(name, True)
        except xmlrpc.client.Fault as fault:
            if "NOT_RUNNING" not in fault.faultString:
                raise StartFailed(f"{name} did not stop ({fault.faultString})") from None


def start_programs(rt: Site, names: Sequence[str]) -> None:
    """Start without waiting on each program's startsecs in turn (supervisorctl start would):
    readiness is /health, and a crash shows as BACKOFF or FATAL while we wait for it."""
    rpc = _rpc(rt)
    for name in names:
        try:
            rpc.supervisor.startProcess(name, False)
        except xmlrpc.client.Fault as fault:
            if "ALREADY_STARTED" not in fault.faultString:
                raise StartFailed(
                    f"{name} did not start ({fault.faultString}); its last log lines:\n{logs.tail(rt, name, 20)}"
                ) from None


def wait(rt: Site, ready: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    with rt.console.status(f"waiting for {what}"):
        while time.monotonic() < deadline:
            if ready():
                return
            time.sleep(0.1)
    raise StartFailed(f"{what} not ready after {timeout:.0f}s")


def stop(rt: Site, bins: Binaries | None) -> bool:
    pid = supervisor_pid(rt)
    if pid is None:
        return False
    bins = bins or rt.bins()
    with rt.console.status("stopping"):
        ctl(rt, bins, "shutdown", check=False)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.1)
    shutil.rmtree(rt.layout.run, ignore_errors=True)
    return True
