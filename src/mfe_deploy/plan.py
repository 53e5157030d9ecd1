"""What `up` has to do, as a value: the desired state (from the environment) against the observed one
(from the runtime), compared by a pure function. `mfe-deploy plan` prints it; `diff` shows the detail."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# Units the runtimes run beside the services: never "removed services".
INFRA = frozenset({"postgres", "redis", "rabbitmq", "nginx", "prometheus"})


@dataclass(frozen=True)
class Want:
    image: str  # the image (docker) or the version (local runtime) the service should run
    replicas: int
    config: str  # digest of the service's rendered env file
    definition: str = ""  # the runtime's fingerprint of the rest of its definition (compose's config hash)


@dataclass(frozen=True)
class Have:
    image: str | None
    replicas: int  # running
    config: str | None  # digest of the env file it was started with (on disk), None: none there
    unhealthy: int = 0
    definition: str = ""  # as Want.definition, of what runs ("": the runtime does not fingerprint it)


@dataclass(frozen=True)
class Desired:
    services: Mapping[str, Want]
    pending: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # migrations not applied yet
    # Each store's configuration as the runtime fingerprints it (compose's config hash, the stack file's
    # service, supervisord's program): a store whose fingerprint differs from the running one's is restarted.
    stores: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Observed:
    services: Mapping[str, Have]
    stores: Mapping[str, str] = field(default_factory=dict)  # the running stores' fingerprints


@dataclass(frozen=True)
class Step:
    action: str  # migrate, start, replace, scale, restart, remove
    target: str
    reason: str


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]

    @property
    def empty(self) -> bool:
        return not self.steps


def digest(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode()).hexdigest()


# The order `up` runs the steps in, and so the order of a plan: the stores (started, or restarted when
# asked), the migrations (the new code expects the new schema), the services replaced start-first (their
# old containers serve until the new ones are healthy), then what starts, scales or goes.
PHASES = ("stores", "migrate", "replace", "converge")


def phase(step: Step) -> str:
    if step.target in INFRA and step.action in ("start", "restart"):
        return "stores"
    if step.action == "migrate":
        return "migrate"
    if step.action in ("replace", "restart"):
        return "replace"
    return "converge"


def plan(desired: Desired, observed: Observed) -> Plan:
    """Ordered steps, each with the reason it is needed, in the order `up` runs them (PHASES): a store that
    does not run is started and one whose configuration changed restarted (only when `up` is asked to),
    then the migrations, then the services to replace in the environment's order, then those to start or
    scale, then what the environment no longer has."""
    steps = [Step("start", name, "not running") for name in desired.stores if name not in observed.stores]
    steps += [Step("restart", name, RESTART_STORE) for name in store_restarts(desired.stores, observed.stores)]
    steps += [Step("migrate", name, f"pending: {', '.join(ids)}") for name, ids in desired.pending.items() if ids]
    for name, want in desired.services.items():
        have = observed.services.get(name)
        if have is None:
            steps.append(Step("start", name, "new service"))
            continue
        if have.replicas == 0:
            steps.append(Step("start", name, "not running"))
            continue
        reasons = []
        if have.image != want.image:
            reasons.append(f"image {have.image or '?'} -> {want.image}")
        if have.config != want.config:
            reasons.append("env file changed")
        if not reasons and want.definition and have.definition != want.definition:
            reasons.append("definition changed (limits, command, mounts or healthcheck)")
        if reasons:
            steps.append(Step("replace", name, "; ".join(reasons)))
        elif have.replicas != want.replicas:
            steps.append(Step("scale", name, f"replicas {have.replicas} -> {want.replicas}"))
        elif have.unhealthy:
            steps.append(Step("restart", name, f"{have.unhealthy} of {have.replicas} unhealthy"))
    for name, have in observed.services.items():
        if name not in desired.services and name not in INFRA and have.replicas:
            steps.append(Step("remove", name, "no longer in the environment (its data stays)"))
    return Plan(tuple(sorted(steps, key=lambda s: PHASES.index(phase(s)))))


RESTART_STORE = "configuration changed: a restart, with downtime (`up` needs --restart-stores)"


def store_restarts(wanted: Mapping[str, str], running: Mapping[str, str]) -> list[str]:
    """The running stores whose configuration is not the one wanted, in the wanted order. A store that
    does not run is not restarted but started (by any `up`); one that is no longer wanted is left alone."""
    return [name for name, fingerprint in wanted.items() if name in running and running[name] != fingerprint]


def store_refusal(env: str, stores: Sequence[str]) -> str:
    """Why `up` stops before changing anything when a store would restart, and the way on."""
    names = ", ".join(stores)
    return (
        f"{env}: the configuration of {names} changed, and applying it restarts {'it' if len(stores) == 1 else 'them'}"
        " (stop, then start: a store is not replaced start-first). Until the restart is over, every service"
        " that uses them fails the requests that need them. Nothing was changed. To accept that downtime run"
        f" `mfe-deploy up --env {env} --restart-stores`; `mfe-deploy plan --env {env}` lists every step."
    )


def changed_keys(old: str, new: str) -> list[str]:
    """The variables of two env files whose values differ: what `diff` may show of a file with secrets."""

    def pairs(text: str) -> dict[str, str]:
        lines = (line.partition("=") for line in text.splitlines() if line and not line.startswith("#"))
        return {key: value for key, _, value in lines}

    before, after = pairs(old), pairs(new)
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def waves(
    services: Sequence[str], depends_on: Mapping[str, Sequence[str]], last: Sequence[str] = (), width: int = 2
) -> list[list[str]]:
    """The order to replace `services` in, as waves whose members (at most `width`) are replaced side by
    side: a service comes in a wave after every service it depends on (of those being replaced); those in
    `last` (the gateway: what every request passes) come alone, after all the others, in their given order."""
    rest = [s for s in services if s not in last]
    out: list[list[str]] = []
    while rest:
        ready = [s for s in rest if not any(d in rest for d in depends_on.get(s, ()))]
        if not ready:  # a cycle (the model refuses those): the rest one at a time, in their order
            ready = rest[:1]
        ready = ready[: max(width, 1)]
        out.append(ready)
        rest = [s for s in rest if s not in ready]
    out += [[s] for s in services if s in last]
    return out
