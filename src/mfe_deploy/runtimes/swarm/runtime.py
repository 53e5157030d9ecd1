"""The swarm runtime: the same environment as a Swarm stack (`docker stack deploy`) on one or more hosts.

Swarm does the rolling update (start-first, health-gated, rolled back by itself on failure); this
runtime builds the images here, sends each node's engine what it lacks, deploys the stores first, runs
the migrations once per release, deploys the rest and then watches every service until it converged or
Swarm rolled it back: `docker stack deploy` exits 0 either way, so the exit status comes from here."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import cached_property

import yaml

from mfe_deploy import bundle, swarm_stack
from mfe_deploy.backups.pg import ContainerPostgres, Postgres
from mfe_deploy.compose import ContainerState
from mfe_deploy.config import urls
from mfe_deploy.config.models import Environment, seconds
from mfe_deploy.engine import capabilities_for, version_via
from mfe_deploy.errors import MfeError
from mfe_deploy.exec.command import Command
from mfe_deploy.exec.docker_host import AtEngine
from mfe_deploy.exec.runner import Runner
from mfe_deploy.ops import health, migrations
from mfe_deploy.plan import Desired, Step, plan
from mfe_deploy.render import Bundle, Capabilities, render
from mfe_deploy.runtimes import eventhub
from mfe_deploy.runtimes.contract import (
    Deployment,
    Fallback,
    Node,
    Prepared,
    StartFailed,
    UnitStatus,
    Unsupported,
)
from mfe_deploy.runtimes.docker.base import EngineRuntime
from mfe_deploy.runtimes.docker.probes import parse_probe, probe_command
from mfe_deploy.runtimes.swarm import nodes
from mfe_deploy.runtimes.swarm.stack import SwarmStack, image_in
from mfe_deploy.runtimes.swarm.tasks import TaskContainers
from mfe_deploy.state.ledger import Release
from mfe_deploy.swarm_bundle import swarm_bundle


class SwarmRuntime(EngineRuntime):
    name = "swarm"

    def __init__(self, deployment: Deployment) -> None:
        if deployment.host.remote:
            raise MfeError("runtime swarm reaches its manager through swarm.manager: leave target: local")
        super().__init__(deployment, AtEngine(deployment.host.runner, deployment.loaded.env.swarm.manager))
        name = f"{self.env.project}-{self.env.name}"
        self.engines: list[tuple[str, Runner]] = [
            (self.env.swarm.manager, self.runner),
            *((url, AtEngine(self.host.runner, url)) for url in self.env.swarm.nodes),
        ]
        self.stack = SwarmStack(name, self.runner, self.files, self.bundle_dir, self.console)
        self.tasks = TaskContainers(name, self.engines, self.env.gateway, self.env.nginx.enabled)
        self._deployed = False  # this up deployed stack.yml (see run_phase)
        self._back: dict[str, str] | None = None  # the versions a failed up goes back to

    @property
    def lacks(self) -> dict[str, str]:
        return {
            "OneOff": (
                f"one-off commands and db shell on a swarm are not offered yet: `mfe-deploy status --env "
                f"{self.env.name}` names each task and its node; run `docker exec` on that node's engine"
            ),
            "Acme": "nginx.tls.mode acme is not available on the swarm runtime yet; use files",
            "Images": "images prune on a swarm: run it on each node's engine (not yet offered)",
        }

    @cached_property
    def capabilities(self) -> Capabilities:
        return capabilities_for(version_via(self.runner))

    # --- images: built here, sent to every node that lacks them ------------------------------------------------
    def build(self, version: str) -> None:
        self.images.build(version)
        wanted = [*(self.images.tag(s, version) for s in self.env.services), *self.images.infra()]
        for url, engine in self.engines:
            self.images.ship_to(engine, url, wanted)

    # --- rendering -----------------------------------------------------------------------------------------
    def _swarm_bundle(self, versions: dict[str, str]) -> Bundle:
        base = render(self.env, self.secrets, versions=versions, caps=self.capabilities)
        made = self.bundle_dir
        return swarm_bundle(self.env, base, self.capabilities, lambda path: self.files.read_text(made / path))

    def write_bundle(self, versions: dict[str, str]) -> str:
        self.files.makedirs(self.bundle_dir, 0o700)
        if self.env.nginx.enabled and self.env.nginx.tls.mode == "self-signed":
            self._self_signed()  # before the stack: the secrets' names are their contents' digests
        self._database_tls()
        result = self._swarm_bundle(versions)
        bundle.write(result, self.bundle_dir, self.files)
        return bundle.digest(result)

    def rendered(self, version: str) -> Bundle:
        return self._swarm_bundle(dict.fromkeys(self.env.services, version))

    # --- up: the primitives app.up executes the plan with ---------------------------------------------------
    def prepare(self, version: str, *, restart_stores: bool) -> Prepared:
        observed = self.observe()  # before the bundle changes: what runs, and the env files it was deployed with
        staged = self.stage(version, restart_stores=restart_stores)
        if not staged.nothing:
            desired, staged.status = self.wanted(version)  # the stack file written: its images answer migrations
            staged.plan = plan(desired, observed)
        return staged

    def run_phase(self, phase: str, steps: Sequence[Step], prepared: Prepared, *, timeout: float, wait: bool) -> None:
        """One `docker stack deploy` of stack.yml replaces, starts, scales and removes together (Swarm
        rolls each service start-first): it runs with the replacements when there are any, else when
        the stack converges."""
        if phase == "stores":
            stores = [u for u in swarm_stack.STORES if u in self.units()]
            self.stack.deploy("stores.yml", stores, timeout, prune=False)
            self._hub_users(timeout)
            self._provision(timeout)
        elif phase == "migrate":
            targets = [s.target for s in steps]
            prepared.heads, prepared.backup = self._migrate(prepared.versions, targets, prepared.status or None)
        elif (phase == "replace" and steps) or (phase == "converge" and not self._deployed):
            # Going back, nothing is pruned: what the failed release added stays until a deploy succeeds.
            self.stack.deploy("stack.yml", self.units(), timeout if wait else 0, prune=self._back is None)
            self._deployed = True

    def failed(self, prepared: Prepared, error: StartFailed) -> Fallback:
        """Swarm rolls back only the service whose update failed: the others go back too, so that what runs
        is the last good release, as the ledger says."""
        versions, previous = prepared.versions, prepared.previous
        note = str(error).splitlines()[0]
        self.record_up(prepared, "failed", note)
        if previous is None or dict(previous.versions) == versions:
            raise error
        observed = self.observe()
        back = dict(previous.versions)
        digest = self.write_bundle(back)
        # The code goes back, the schema and the stores stay: no migration, no store deploy on the way back.
        desired = Desired(self.wants(self._swarm_bundle(back), back), {}, stores=observed.stores)
        self._back, self._deployed = back, False
        way_back = Prepared(f"release {previous.id}", back, digest, previous, plan(desired, observed))
        return Fallback(str(error), way_back, previous)

    def finish(self, prepared: Prepared, seconds: float) -> list[UnitStatus]:
        self.record_up(prepared, "succeeded", f"{seconds:.1f}s")
        self.stack.remove_unused_objects(_longest_stop(self.env))
        return self.status()

    def store_hashes(self, version: str) -> dict[str, str]:
        """Each store's definition digest as `version`'s stack file labels it."""
        doc = yaml.safe_load(self.rendered(version).files["stores.yml"].text)
        return {u: svc["deploy"]["labels"][swarm_stack.STORE_LABEL] for u, svc in doc["services"].items()}

    def running_stores(self, states: Sequence[ContainerState] | None = None) -> dict[str, str]:
        """The digest each deployed store's service carries (none: deployed before stores had one)."""
        found = self.stack.inspect(self.env.stores)
        labels = {u: (spec["Spec"].get("Labels") or {}).get(swarm_stack.STORE_LABEL) for u, spec in found.items()}
        return {u: label for u, label in labels.items() if label}

    def _hub_users(self, timeout: float) -> None:
        if not self.env.uses_rabbitmq:
            return
        found = self.tasks.container("rabbitmq")
        if found is None:
            raise StartFailed("rabbitmq has no running task on the nodes this machine reaches")
        engine, container = found
        ctl = Command(("docker", "exec", "-i", container, *eventhub.IMPORT))
        eventhub.create_users(engine, ctl, self.secrets, self.console, timeout)

    def _nothing_to_do(self, previous: Release | None, versions: dict[str, str], digest: str) -> bool:
        if not self._same_release(previous, versions, digest):
            return False
        services, tasks, now = self.stack.inspect(self.units()), self.stack.tasks(), time.time()
        if len(services) != len(self.units()):
            return False
        return all(self.stack.converged(unit, spec, now, tasks) == "done" for unit, spec in services.items())

    # --- migrations: a one-off container on the manager, on the data network --------------------------------
    def schema_status(self, service: str) -> migrations.Outcome:
        (outcome,) = self.migrate([service], ["status"])
        return outcome

    def migrate(self, services: list[str], action: list[str]) -> list[migrations.Outcome]:
        versions = self.current_versions() or dict.fromkeys(self.env.services, "dev")
        marker = self.files.read_text(self.bundle_dir / "stack.yml") or ""
        outcomes = []
        for service in services:
            svc = self.env.services[service]
            runner = migrations.runner_args(self.env.name, service, action)
            mounts: list[str] = []
            extra_env: list[str] = []
            if svc.bundled:
                image = image_in(marker, service) or self.images.tag(service, versions.get(service, "dev"))
            elif svc.migrations is None:
                outcomes.append(migrations.nothing(service))
                continue
            else:
                bundled = self.runner_service()
                image = image_in(marker, bundled) or self.images.tag(bundled, versions.get(bundled, "dev"))
                mounts = ["-v", f"{self.files_for_migrations(service)}:/run/mfe/migrations:ro"]
                extra_env = ["-e", "MFE_MIGRATIONS_FOLDER=/run/mfe/migrations"]
            url = urls.database_url(self.env, self.secrets, service, "postgres", 5432)
            argv = (
                "docker",
                "run",
                "--rm",
                "--network",
                f"{self.stack.name}_data",
                "-e",
                "DATABASE_URL",
                *extra_env,
                *mounts,
                "--entrypoint",
                "python3",
                image,
                *runner,
            )
            done = self.runner.run(Command(argv, env={"DATABASE_URL": url}), timeout=600)
            outcomes.append(migrations.parse(service, done))
        return outcomes

    # --- rollback: any release of the ledger (Swarm itself keeps one level) -----------------------------------
    def rollback_target(self, service: str, to: str | None) -> tuple[dict[str, str], str]:
        current, target = super().rollback_target(service, to)
        # The whole stack is deployed again: a store whose configuration changed since would restart.
        self._guard_stores(target, allowed=False)
        return current, target

    def roll_back(self, service: str, target: str, timeout: float) -> None:
        self.stack.deploy("stack.yml", self.units(), timeout, prune=False)

    def revert(self, current: dict[str, str], service: str, timeout: float) -> None:
        self.write_bundle(current)

    def released(self) -> Release:
        self.stack.remove_unused_objects(_longest_stop(self.env))
        return super().released()

    def start_older(self, names: list[str], timeout: float) -> None:
        """After a restore for a rollback: the stack file just written brings the services back (their
        replicas, the older image) and is watched until they converge, then until every gateway task
        reaches them (as after a restore: the new tasks' addresses reach the engine's DNS a moment later)."""
        self.stack.deploy("stack.yml", self.units(), timeout, prune=False)
        self.tasks.gateways_see_all(timeout)

    def nodes(self) -> list[Node]:
        return nodes.listed(self.stack, self.env.swarm.manager)

    def set_availability(self, node: str, availability: str, timeout: float) -> None:
        nodes.set_availability(self.stack, self.env.swarm.manager, self.units(), node, availability, timeout)

    # --- observe -------------------------------------------------------------------------------------------
    def containers(self) -> list[ContainerState]:
        """One row per task that should run: enough for plan, diff and status."""
        rows = []
        for t in self.stack.tasks():
            running = t["state"] == "running"
            rows.append(
                ContainerState(
                    service=t["unit"],
                    name=f"{t['name']}@{t['node']}",
                    state="running" if running else t["state"],
                    health="healthy" if running else "starting",
                    image=t["image"],
                    exit_code=0,
                )
            )
        return rows

    def status(self) -> list[UnitStatus]:
        for node in self.nodes():
            if node.state != "ready" or node.availability != "active":
                self.console.warn(
                    f"node {node.name} is {node.state}, {node.availability}: Swarm places no task there "
                    "(the tasks it held were started on the other nodes)"
                )
        return super().status()  # from containers(): one row per task

    def health(self) -> dict[str, health.Probe]:
        probes = {}
        for service in self.env.services:
            found = self.tasks.container(service)
            if found is None:
                probes[service] = health.Probe(None, {}, "no running task on an engine this machine reaches")
                continue
            engine, container = found
            probe = Command(("docker", "exec", container, *probe_command(self.env.services[service])))
            probes[service] = parse_probe(engine.run(probe, timeout=30))
        return probes

    def postgres(self) -> Postgres:
        found = self.tasks.container("postgres")
        if found is None or found[0] is not self.runner:
            raise MfeError("the postgres task does not run on the manager's engine: backups reach it only there")
        return ContainerPostgres(found[1], self.env.database.superuser, self.secrets.postgres_password)

    def logs(
        self, unit: str | None, tail: int | None, follow: bool, needle: str | None, write: Callable[[str], None]
    ) -> None:
        if unit is None and follow:
            raise Unsupported("on a swarm, --follow needs a unit: mfe-deploy logs UNIT --follow")
        if not follow:
            # `docker service logs` without --follow was seen to hang for minutes here once a task's
            # container was gone: the containers' own logs are read instead, each engine's, bounded.
            lines = [line for name in ([unit] if unit else self.units()) for line in self.tasks.task_lines(name, tail)]
            lines.sort()
            for _, line in lines[-tail:] if tail is not None else lines:
                if needle is None or needle in line:
                    write(line)
            return
        last = str(tail) if tail is not None else "all"
        argv = ("docker", "service", "logs", "--no-trunc", "--tail", last, "--follow", f"{self.stack.name}_{unit}")
        proc = self.runner.spawn(Command(argv), stderr=None)
        assert proc.stdout is not None
        try:
            for raw in iter(proc.stdout.readline, b""):
                line = raw.decode(errors="replace").rstrip("\n")
                if needle is None or needle in line:
                    write(line)
        finally:
            proc.kill()

    def stop_services(self, names: Sequence[str]) -> None:
        """The fence of a restore: the schema may change under the images, so the next `up` migrates again."""
        self.forget_migrations()
        with self.console.status(f"stopping {', '.join(names)}"):
            scale = [f"{self.stack.name}_{n}=0" for n in names]
            self._run(Command(("docker", "service", "scale", "--detach=false", *scale)), "stopping the services")

    def start_services(self, names: Sequence[str], timeout: float) -> None:
        with self.console.status(f"starting {', '.join(names)} and waiting until healthy"):
            scale = [
                f"{self.stack.name}_{n}={self.env.services[n].replicas if n in self.env.services else 1}" for n in names
            ]
            self._run(Command(("docker", "service", "scale", "--detach=true", *scale)), "starting the services")
        self.stack.watch(names, {}, time.time(), timeout)
        self.tasks.gateways_see_all(timeout)

    def down(self, *, volumes: bool = False) -> bool:
        running = bool(self.stack.inspect(self.units()))
        label = f"label=com.docker.stack.namespace={self.stack.name}"
        with self.console.status(f"removing the stack {self.stack.name}") as waiting:
            self.runner.run(Command(("docker", "stack", "rm", self.stack.name)), timeout=120)
            deadline = time.monotonic() + 120
            # `stack rm` returns before the tasks and networks are gone: a redeploy would find them
            while time.monotonic() < deadline:
                left = [
                    engine.run(Command(("docker", *what, "-q", "--filter", label)), timeout=30).stdout.split()
                    for _, engine in self.engines
                    for what in (("ps", "--all"), ("network", "ls"))
                ]
                if not any(left):
                    break
                waiting.update("waiting for the tasks and networks to go")
                time.sleep(1)
            if volumes:
                for _, engine in self.engines:
                    found = engine.run(Command(("docker", "volume", "ls", "-q", "--filter", label)), timeout=30)
                    if found.stdout.split():
                        engine.run(Command(("docker", "volume", "rm", *found.stdout.split())), timeout=120)
        self.forget_migrations()
        return running


def _longest_stop(env: Environment) -> float:
    return max((seconds(s.stop_timeout) for s in env.services.values()), default=20)
