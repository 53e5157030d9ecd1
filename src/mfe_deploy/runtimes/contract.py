"""The one contract every runtime keeps: the CLI and the operations only ever talk to a Runtime.

A runtime is built from a Deployment (the loaded environment, where it runs, how to print, and how to
resolve the secrets when a step needs them: read-only commands never do)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

from mfe_deploy.errors import MfeError
from mfe_deploy.plan import store_refusal, store_restarts

if TYPE_CHECKING:
    from datetime import datetime

    from mfe_deploy.backups.jobs import Backups
    from mfe_deploy.backups.pg import Postgres
    from mfe_deploy.backups.pitr import Window
    from mfe_deploy.bundle import Drift
    from mfe_deploy.config.loader import Loaded
    from mfe_deploy.config.models import Environment
    from mfe_deploy.config.secrets import Secrets
    from mfe_deploy.console import Console
    from mfe_deploy.exec.command import Command
    from mfe_deploy.exec.host import Files, Host
    from mfe_deploy.exec.runner import Completed, Runner
    from mfe_deploy.ops.health import Probe
    from mfe_deploy.ops.migrations import Outcome
    from mfe_deploy.ops.schema import Policy as SchemaPolicy
    from mfe_deploy.ops.schema import Verdict
    from mfe_deploy.plan import Desired, Observed, Plan, Step
    from mfe_deploy.state.ledger import Release


C = TypeVar("C")


class StartFailed(MfeError):
    exit_code = 1


def checked(runner: Runner, command: Command, what: str, timeout: float = 600) -> Completed:
    """A step that must succeed: its result, or StartFailed naming it with the last 20 lines it printed."""
    done = runner.run(command, timeout=timeout)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
        raise StartFailed(f"{what} failed:\n{tail}")
    return done


class RolledBack(StartFailed):
    """A deploy that did not become healthy and was rolled back to the previous release by itself."""


class StoresWouldRestart(MfeError):
    """`up` stopped before changing anything: applying the environment restarts a store (downtime)."""

    exit_code = 1


def guard_stores(
    env: str, wanted: Mapping[str, str], running: Mapping[str, str], *, allowed: bool, say: Callable[[str], None]
) -> list[str]:
    """The running stores whose configuration changes (applying it restarts them). Refused, before anything
    changed, unless the restart is allowed (--restart-stores); said when it is."""
    restarts = store_restarts(wanted, running)
    if restarts and not allowed:
        raise StoresWouldRestart(store_refusal(env, restarts))
    if restarts:
        say(f"{', '.join(restarts)}: configuration changed, restarted (--restart-stores)")
    return restarts


def units(env: Environment) -> list[str]:
    """What an environment runs, in the order status lists it: the stores, prometheus (monitoring), the
    services, nginx. The same on every runtime: each renders exactly these."""
    extra = ["prometheus"] if env.monitoring.enabled else []
    return [*env.stores, *extra, *env.services, *(["nginx"] if env.nginx.enabled else [])]


class Unsupported(MfeError):
    """What this runtime cannot do (rollback without versioned images, for instance)."""


@dataclass(frozen=True)
class UnitStatus:
    name: str
    state: str
    pid: int | str | None  # a process id (local) or a container name (docker)
    version: str
    health: str


@dataclass(frozen=True)
class Node:
    """A swarm node: what `docker node inspect` says, and the tasks of this stack it holds."""

    name: str
    role: str
    availability: str  # active, pause, drain
    state: str  # ready, down
    address: str
    labels: tuple[tuple[str, str], ...]
    tasks: tuple[str, ...]


@dataclass(frozen=True)
class PointRestored:
    target: str  # the moment the databases were brought to (ISO 8601)
    pre_restore: str  # the id of the backup taken just before, every acknowledged write in it
    lost: list[str]  # "schema.table: N rows" the restore removed (written after the target)
    seconds: float


class PointInTime(Protocol):
    """database.pitr on a runtime: a full backup now, the window restore can reach, and the restore."""

    def backup(self) -> None: ...

    def window(self, *, offsite: bool = False) -> Window: ...

    def restore_to(self, target: datetime, timeout: float, *, offsite: bool = False) -> PointRestored:
        """`offsite`: from the copy on the offsite store alone (its full backups and WAL)."""
        ...


@dataclass(frozen=True)
class Deployment:
    project_dir: Path
    loaded: Loaded
    console: Console
    host: Host
    secrets: Callable[[], Secrets]  # resolved on first use, and only by steps that need a secret


class Runtime(Protocol):
    name: str

    @property
    def env(self) -> Environment: ...

    @property
    def lacks(self) -> Mapping[str, str]:
        """The capabilities (Rollbacks, Nodes, Images, OneOff, Acme: their class names) this runtime does not
        offer here, each with the sentence that says why and what to do instead (see able())."""
        ...

    @property
    def runner(self) -> Runner:
        """Where the runtime's commands run (backups and admin SQL use it)."""
        ...

    @property
    def secrets(self) -> Secrets: ...

    def down(self, *, volumes: bool) -> bool:
        """True when something was running. volumes: the data goes too."""
        ...

    def status(self) -> list[UnitStatus]: ...

    def health(self) -> dict[str, Probe]: ...

    def units(self) -> list[str]: ...

    def logs(
        self, unit: str | None, tail: int | None, follow: bool, needle: str | None, write: Callable[[str], None]
    ) -> None:
        """Each log line (prefixed by its unit when there are several) goes to write(), which masks."""
        ...

    def postgres(self) -> Postgres: ...

    def backups(self) -> Backups:
        """This environment's backups: the one place they are put together (store, offsite copy, passphrase,
        the release they belong to)."""
        ...

    def stop_services(self, names: Sequence[str]) -> None: ...

    def start_services(self, names: Sequence[str], timeout: float) -> None: ...

    def migrate(self, services: list[str], action: list[str]) -> list[Outcome]: ...

    def nginx_certificate(self) -> str | None:
        """The certificate chain nginx serves (PEM), or None before there is one."""
        ...

    def point_in_time(self) -> PointInTime | None:
        """database.pitr's tool here; None when the environment has none."""
        ...

    def desired(self, version: str) -> Desired:
        """What `up --version VERSION` would run: images, replicas, env files, pending migrations."""
        ...

    def observe(self) -> Observed:
        """What runs now."""
        ...

    def drift(self, version: str) -> list[Drift]:
        """The rendered files against the ones in place (files with secrets: variable names only)."""
        ...


# What some runtimes offer and others do not: a runtime has a capability when it implements the protocol
# and does not name it in `lacks`; the CLI asks able() before it uses one, so a missing capability is a
# sentence the runtime declared, never a method that raises.


@runtime_checkable
class Rollbacks(Protocol):
    """Versioned releases: a service goes back to an earlier image. The primitives app.rollback runs the use
    case with (which version, what the schema holds in the way, the replacement, the ledger)."""

    def rollback_target(self, service: str, to: str | None) -> tuple[dict[str, str], str]:
        """The versions running now and the one `service` goes back to (`to`, or its previous one); refused
        with the reason (an unknown service, a prebuilt image, no earlier release, an image not there)."""
        ...

    def rollback_verdict(self, service: str, target: str) -> Verdict | None:
        """What going back to `target` meets in the schema (None: not checked)."""
        ...

    def undo_migrations(self, verdict: Verdict | None, policy: SchemaPolicy) -> dict[str, str]:
        """Refuse (check), or undo the migrations in the way first (down); the heads the rollback leaves."""
        ...

    def restore_for_rollback(
        self, verdict: Verdict, current: dict[str, str], versions: dict[str, str], timeout: float
    ) -> Release:
        """The service stopped, the backup taken before the migrations in the way restored, the older code
        started on it (schema policy restore)."""
        ...

    def write_bundle(self, versions: dict[str, str]) -> str: ...

    def roll_back(self, service: str, target: str, timeout: float) -> None:
        """`service` replaced by `target` (the bundle is written), health-gated."""
        ...

    def revert(self, current: dict[str, str], service: str, timeout: float) -> None:
        """After a failed roll_back: the files of what still runs written back."""
        ...

    def record(
        self,
        kind: str,
        outcome: str,
        versions: dict[str, str],
        digest: str,
        heads: dict[str, str],
        note: str = "",
        backup: str = "",
    ) -> None: ...

    def released(self) -> Release:
        """The release just recorded, once what it replaced is cleaned up."""
        ...


@runtime_checkable
class Images(Protocol):
    def prune_images(self, keep: int) -> list[str]: ...


@runtime_checkable
class OneOff(Protocol):
    def run(self, service: str, argv: Sequence[str], *, in_place: bool) -> int:
        """A one-off command with the service's release and variables (never in an argv), its standard
        streams the caller's; its exit code. in_place: inside a running unit (`exec`), not a new one."""
        ...

    def db_shell(self, service: str, args: Sequence[str]) -> int:
        """psql as the service's own role on its database; its exit code."""
        ...


@runtime_checkable
class Acme(Protocol):
    """tls.mode acme: the runtime serves the CA's challenges from nginx's folder and installs what it signs."""

    @property
    def env(self) -> Environment: ...

    def nginx_certificate(self) -> str | None: ...

    def acme_folder(self) -> tuple[Files, PurePath]:
        """tls.mode acme: where nginx serves /.well-known/acme-challenge/ from (the folder that holds
        .well-known), on the host nginx runs on, and that host's files."""
        ...

    def install_certificate(self, chain: str, key: str) -> None:
        """nginx's certificate and key replaced (the key 0600, written first), then nginx reloaded: the
        connections it holds finish on the old one, none is refused."""
        ...


@runtime_checkable
class Nodes(Protocol):
    def nodes(self) -> list[Node]:
        """The hosts the stack runs on (a swarm's nodes); one-host runtimes raise Unsupported."""
        ...

    def set_availability(self, node: str, availability: str, timeout: float) -> None:
        """Drain or activate a node, then wait until every service has all its tasks running again."""
        ...


def able(rt: Runtime, capability: type[C]) -> C:
    """`rt` as a runtime with `capability`, or Unsupported with the sentence the runtime declared."""
    why = rt.lacks.get(capability.__name__)
    if why is None and isinstance(rt, capability):
        return rt
    raise Unsupported(why or f"the {rt.name} runtime does not offer {capability.__name__}")


# How a runtime brings an environment to a release: the plan executed step by step by the use case
# (app.up: docker), or converged by the runtime as one operation (a Swarm stack deploy, supervisord).


@dataclass
class Prepared:
    """A release ready to run: its plan (what `up` executes, in order), and what the ledger records."""

    version: str
    versions: dict[str, str]
    digest: str  # the bundle's
    previous: Release | None  # the last good release (an automatic rollback's target)
    plan: Plan
    nothing: bool = False  # the running release already is this one: files, images, all healthy
    heads: dict[str, str] = field(default_factory=dict)  # the migrations each service reached
    backup: str = ""  # the backup taken just before migrating
    status: list[Outcome] = field(default_factory=list)  # the migration runner's status, when the plan asked


@dataclass
class Fallback:
    """A failed deploy: what the failing units said, and the plan back to the last good release."""

    report: str
    back: Prepared
    to: Release  # the release it brings back


@runtime_checkable
class Stepwise(Protocol):
    def prepare(self, version: str, *, restart_stores: bool) -> Prepared:
        """Images built and the bundle written; the plan from what runs against that bundle. A store whose
        configuration changes is refused (StoresWouldRestart) before anything changed, unless allowed."""
        ...

    def run_phase(self, phase: str, steps: Sequence[Step], prepared: Prepared, *, timeout: float, wait: bool) -> None:
        """One phase of the plan (plan.PHASES), with its steps (possibly none: the stores are ensured, the
        whole stack converged and waited on, every time)."""
        ...

    def failed(self, prepared: Prepared, error: StartFailed) -> Fallback:
        """A step failed: the failed release recorded, and the way back: the previous release's bundle
        written and the plan that brings it back, with what the failing units said. Raised (StartFailed,
        with that report) when there is nothing to go back to."""
        ...

    def rolled_back(self, back: Prepared, error: StartFailed | None) -> None:
        """The way back was executed: recorded (an automatic rollback that succeeded, or failed with error)."""
        ...

    def finish(self, prepared: Prepared, seconds: float) -> list[UnitStatus]:
        """The release recorded as succeeded; what runs now."""
        ...


@runtime_checkable
class Reseeds(Protocol):
    """`recover` with database.pitr: a new cluster here restored from the offsite WAL before `up` starts it."""

    def seed_from_offsite(self) -> None:
        """The next `prepare` makes the cluster's data folder from the offsite copy (the newest full backup,
        the WAL after it) instead of an empty one; it refuses a cluster that is there."""
        ...

    def replayed_until(self) -> str | None:
        """The last transaction the restored cluster replayed, as PostgreSQL logged it; None: not said."""
        ...
