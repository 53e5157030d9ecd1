"""The swarm runtime: the same environment as a Swarm stack (`docker stack deploy`) on one or more hosts.

Swarm does the rolling update (start-first, health-gated, rolled back by itself on failure); this
runtime builds the images here, sends each node's engine what it lacks, deploys the stores first, runs
the migrations once per release, deploys the rest and then watches every service until it converged or
Swarm rolled it back: `docker stack deploy` exits 0 either way, so the exit status comes from here."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import cached_property
from pathlib import PurePath
from typing import Any

import yaml

from mfe_deploy import bundle, swarm_stack
from mfe_deploy.backups.pg import ContainerPostgres, Postgres
from mfe_deploy.compose import ContainerState
from mfe_deploy.config import urls
from mfe_deploy.config.models import seconds
from mfe_deploy.engine import capabilities_for, version_via
from mfe_deploy.errors import MfeError
from mfe_deploy.exec.command import Command
from mfe_deploy.exec.docker_host import AtEngine
from mfe_deploy.exec.host import Files
from mfe_deploy.exec.runner import Runner
from mfe_deploy.ops import health, migrations, schema
from mfe_deploy.render import Bundle, Capabilities, render
from mfe_deploy.runtimes import eventhub
from mfe_deploy.runtimes.contract import (
    Deployment,
    Features,
    Node,
    RolledBack,
    StartFailed,
    UnitStatus,
    Unsupported,
)
from mfe_deploy.runtimes.docker import rollbacks
from mfe_deploy.runtimes.docker.base import EngineRuntime
from mfe_deploy.runtimes.docker.probes import HEALTH_PROBE, parse_probe, probe_command
from mfe_deploy.state.ledger import Release
from mfe_deploy.swarm_bundle import swarm_bundle

BUSY = ("updating", "rollback_started")
ROLLED_BACK = ("rollback_completed", "rollback_paused", "paused")


class SwarmRuntime(EngineRuntime):
    name = "swarm"

    def __init__(self, deployment: Deployment) -> None:
        if deployment.host.remote:
            raise MfeError("runtime swarm reaches its manager through swarm.manager: leave target: local")
        super().__init__(deployment, AtEngine(deployment.host.runner, deployment.loaded.env.swarm.manager))
        self.stack = f"{self.env.project}-{self.env.name}"
        self.engines: list[tuple[str, Runner]] = [
            (self.env.swarm.manager, self.runner),
            *((url, AtEngine(self.host.runner, url)) for url in self.env.swarm.nodes),
        ]

    @property
    def features(self) -> Features:
        return Features(versioned_images=True, remote=False)

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

    # --- up ------------------------------------------------------------------------------------------------
    def up(self, *, wait: bool, timeout: float, version: str = "dev", restart_stores: bool = False) -> list[UnitStatus]:
        self._refuse_pitr()
        started = time.monotonic()
        self._guard_stores(version, allowed=restart_stores)
        prepared = self._prepared(version)
        if prepared is None:
            return self.status()
        previous, versions, digest = prepared
        heads: dict[str, str] = {}
        backup = ""
        try:
            stores = [u for u in swarm_stack.STORES if u in self.units()]
            self._deploy("stores.yml", stores, timeout, prune=False)
            self._hub_users(timeout)
            self._provision(timeout)
            heads, backup = self._migrate(versions)
            self._deploy("stack.yml", self.units(), timeout if wait else 0, prune=True)
        except StartFailed as exc:
            self.record("up", "failed", versions, digest, heads, note=str(exc).splitlines()[0], backup=backup)
            if previous is None or dict(previous.versions) == versions:
                raise
            # Swarm rolls back only the service whose update failed: the others go back too, so that
            # what runs is the last good release, as the ledger says.
            self.console.info(f"rolling every service back to release {previous.id}")
            back = dict(previous.versions)
            back_digest = self.write_bundle(back)
            try:
                self._deploy("stack.yml", self.units(), timeout, prune=False)
            except StartFailed as again:
                self.record("auto-rollback", "failed", back, back_digest, {}, note=str(again).splitlines()[0])
                raise StartFailed(f"{exc}\nthe rollback to release {previous.id} failed too: {again}") from None
            self.record("auto-rollback", "succeeded", back, back_digest, {})
            raise RolledBack(f"{exc}\nevery service is back at release {previous.id}") from None
        note = f"{time.monotonic() - started:.1f}s"
        self.record("up", "succeeded", versions, digest, heads, note=note, backup=backup)
        self._remove_unused_objects()
        return self.status()

    def _store_hashes(self, version: str) -> dict[str, str]:
        """Each store's definition digest as `version`'s stack file labels it."""
        doc = yaml.safe_load(self.rendered(version).files["stores.yml"].text)
        return {u: svc["deploy"]["labels"][swarm_stack.STORE_LABEL] for u, svc in doc["services"].items()}

    def _running_stores(self, states: Sequence[ContainerState] | None = None) -> dict[str, str]:
        """The digest each deployed store's service carries (none: deployed before stores had one)."""
        found = self._inspect(self.env.stores)
        labels = {u: (spec["Spec"].get("Labels") or {}).get(swarm_stack.STORE_LABEL) for u, spec in found.items()}
        return {u: label for u, label in labels.items() if label}

    def _hub_users(self, timeout: float) -> None:
        if not self.env.uses_rabbitmq:
            return
        found = self._container("rabbitmq")
        if found is None:
            raise StartFailed("rabbitmq has no running task on the nodes this machine reaches")
        engine, container = found
        ctl = Command(("docker", "exec", "-i", container, *eventhub.IMPORT))
        eventhub.create_users(engine, ctl, self.secrets, self.console, timeout)

    def _nothing_to_do(self, previous: Release | None, versions: dict[str, str], digest: str) -> bool:
        if previous is None or previous.bundle_sha256 != digest or dict(previous.versions) != versions:
            return False
        if any(v.endswith("-dirty") for v in versions.values()):
            return False
        if self.images.ids(versions) != dict(previous.images):
            return False
        services, tasks, now = self._inspect(self.units()), self._tasks(), time.time()
        if len(services) != len(self.units()):
            return False
        return all(self._converged(unit, spec, now, tasks) == "done" for unit, spec in services.items())

    def _deploy(self, file: str, units: Sequence[str], timeout: float, *, prune: bool) -> None:
        before = {u: spec.get("Version", {}).get("Index") for u, spec in self._inspect(units).items()}
        since = time.time()
        # No --detach: clients before 26 do not know it, and detached is what every client does without it.
        argv = ["docker", "stack", "deploy", "--resolve-image", "never"]
        deploy = Command((*argv, *(["--prune"] if prune else []), "-c", file, self.stack), cwd=self.bundle_dir)
        with self.console.status(f"deploying {', '.join(units)}"):
            self._run(deploy, "docker stack deploy")
        if timeout:
            self._watch(units, before, since, timeout)

    def _watch(self, units: Sequence[str], before: dict[str, Any], since: float, timeout: float) -> None:
        """Until every service converged (its tasks run and are healthy, its update completed), or Swarm
        rolled one back (exit 1, with the failing task's error), or the time is up."""
        deadline = time.monotonic() + timeout
        with self.console.status("waiting for the services to converge") as waiting:
            while True:
                specs, tasks = self._inspect(units), self._tasks()
                states = {
                    u: self._converged(u, specs[u], since, tasks, changed=before.get(u) != specs[u]["Version"]["Index"])
                    if u in specs
                    else "new"
                    for u in units
                }
                failed = [u for u, state in states.items() if state == "rolled back"]
                if failed:
                    unit = failed[0]
                    message = (specs[unit].get("UpdateStatus") or {}).get("Message", "")
                    raise RolledBack(
                        f"Swarm rolled {unit} back ({message}); the previous release goes on serving"
                        f"{self._task_error(unit)}"
                    )
                pending = [u for u, state in states.items() if state != "done"]
                if not pending:
                    return
                if time.monotonic() > deadline:
                    raise StartFailed(
                        f"not converged after {timeout:.0f}s: {', '.join(pending)}{self._task_error(pending[0])}"
                    )
                waiting.update(f"{len(units) - len(pending)}/{len(units)} converged; waiting for {pending[0]}")
                time.sleep(1)

    def _converged(
        self, unit: str, spec: dict[str, Any], since: float, tasks: list[dict[str, str]], *, changed: bool = False
    ) -> str:
        status = spec.get("UpdateStatus") or {}
        state = status.get("State", "")
        began = _when(status.get("StartedAt"))
        if state in ROLLED_BACK and began >= since - 1:
            return "rolled back"
        if state in BUSY:
            return "updating"
        if changed and began < since - 1 and time.time() - since < 5:
            return "updating"  # the update was asked for: Swarm has not started it yet
        wanted = (spec["Spec"].get("Mode", {}).get("Replicated") or {}).get("Replicas", 1)
        running = sum(1 for t in tasks if t["unit"] == unit and t["state"] == "running")
        return "done" if running == wanted else "starting"

    def _inspect(self, units: Sequence[str]) -> dict[str, dict[str, Any]]:
        names = [f"{self.stack}_{u}" for u in units]
        done = self.runner.run(Command(("docker", "service", "inspect", *names)), timeout=60)
        found = json.loads(done.stdout or "[]") if done.stdout.strip().startswith("[") else []
        return {s["Spec"]["Name"].removeprefix(f"{self.stack}_"): s for s in found}

    def _tasks(self, unit: str | None = None) -> list[dict[str, str]]:
        """The tasks that should run (desired state running): their state, node, image and error."""
        what = ["service", "ps", f"{self.stack}_{unit}"] if unit else ["stack", "ps", self.stack]
        fmt = "{{json .}}"
        argv = ("docker", *what, "--no-trunc", "--filter", "desired-state=running", "--format", fmt)
        done = self.runner.run(Command(argv), timeout=60)
        tasks = []
        for line in done.stdout.splitlines():
            if not line.startswith("{"):
                continue
            row = json.loads(line)
            name = row.get("Name", "")
            tasks.append(
                {
                    "name": name,
                    "unit": name.removeprefix(f"{self.stack}_").split(".")[0],
                    "state": row.get("CurrentState", "").split(" ")[0].lower(),
                    "node": row.get("Node", ""),
                    "image": row.get("Image", ""),
                    "error": row.get("Error", ""),
                }
            )
        return tasks

    def _task_error(self, unit: str) -> str:
        """The error of a task that failed, preferring one of the image being deployed (the history also
        holds older tasks' errors)."""
        argv = ("docker", "service", "ps", f"{self.stack}_{unit}", "--no-trunc", "--format", "{{json .}}")
        done = self.runner.run(Command(argv), timeout=60)
        rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        failed = [r for r in rows if r.get("Error")]
        deploying = _image_in(self.files.read_text(self.bundle_dir / "stack.yml") or "", unit)
        failed.sort(key=lambda r: r.get("Image") != deploying)
        if not failed:
            return ""
        row = failed[0]
        return f"\n{unit}: task {row.get('Name', '')} ({row.get('Image', '')}) on {row.get('Node', '')}: {row['Error']}"

    def _remove_unused_objects(self) -> None:
        """Secrets and configs an earlier release used (the names are content digests): gone once converged
        and the replaced tasks that hold them have drained (swarm.drain). One a task still holds after that
        is refused by Swarm and stays until the next deploy."""
        stack_file = self.files.read_text(self.bundle_dir / "stack.yml") or ""
        unused: list[tuple[str, str]] = []
        for kind in ("secret", "config"):
            argv = ("docker", kind, "ls", "--filter", f"label=com.docker.stack.namespace={self.stack}")
            done = self.runner.run(Command((*argv, "--format", "{{.Name}}")), timeout=60)
            unused += [(kind, name) for name in done.stdout.split() if name not in stack_file]
        if unused:
            self._wait_for_replaced_tasks()
        for kind, name in unused:
            self.runner.run(Command(("docker", kind, "rm", name)), timeout=60)

    def _wait_for_replaced_tasks(self) -> None:
        """Until no replaced task (desired state shutdown) still runs: each drains for swarm.drain after
        Swarm's 2 s, then finishes its requests; bounded by the longest stop_timeout."""
        longest = max((seconds(s.stop_timeout) for s in self.env.services.values()), default=20)
        deadline = time.monotonic() + 2 + longest + 5
        replaced = ("--filter", "desired-state=shutdown", "--format", "{{.CurrentState}}")
        argv = ("docker", "stack", "ps", self.stack, *replaced)
        with self.console.status("waiting for the replaced tasks to drain") as waiting:
            while time.monotonic() < deadline:
                done = self.runner.run(Command(argv), timeout=60)
                left = sum(1 for state in done.stdout.splitlines() if state.startswith(("Running", "Starting")))
                if done.returncode != 0 or not left:
                    return
                waiting.update(f"waiting for {left} replaced task{'s' * (left != 1)} to drain")
                time.sleep(1)

    # --- migrations: a one-off container on the manager, on the data network --------------------------------
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
                image = _image_in(marker, service) or self.images.tag(service, versions.get(service, "dev"))
            elif svc.migrations is None:
                outcomes.append(migrations.nothing(service))
                continue
            else:
                bundled = self.runner_service()
                image = _image_in(marker, bundled) or self.images.tag(bundled, versions.get(bundled, "dev"))
                mounts = ["-v", f"{self.files_for_migrations(service)}:/run/mfe/migrations:ro"]
                extra_env = ["-e", "MFE_MIGRATIONS_FOLDER=/run/mfe/migrations"]
            url = urls.database_url(self.env, self.secrets, service, "postgres", 5432)
            argv = (
                "docker",
                "run",
                "--rm",
                "--network",
                f"{self.stack}_data",
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
    def rollback(
        self, service: str, to: str | None, timeout: float, *, schema_policy: schema.Policy = "check"
    ) -> Release:
        current, target = rollbacks.target(self, service, to)
        # The whole stack is deployed again: a store whose configuration changed since would restart.
        self._guard_stores(target, allowed=False)
        verdict = None if schema_policy == "ignore" else rollbacks.verdict(self, service, target)
        versions = {**current, service: target}
        if verdict is not None and verdict.blocking and schema_policy == "restore":
            return rollbacks.restoring(self, verdict, current, versions, timeout)
        heads = rollbacks.schema_first(self, verdict, schema_policy)
        digest = self.write_bundle(versions)
        try:
            self._deploy("stack.yml", self.units(), timeout, prune=False)
        except StartFailed:
            self.record("rollback", "failed", versions, digest, heads)
            self.write_bundle(current)
            raise
        note = f"{service}: {current[service]} -> {target}"
        self.record("rollback", "succeeded", versions, digest, heads, note=note)
        self._remove_unused_objects()
        return self.ledger.all()[-1]

    def start_older(self, names: list[str], timeout: float) -> None:
        """After a restore for a rollback: the stack file just written brings the services back (their
        replicas, the older image) and is watched until they converge, then until every gateway task
        reaches them (as after a restore: the new tasks' addresses reach the engine's DNS a moment later)."""
        self._deploy("stack.yml", self.units(), timeout, prune=False)
        self._gateways_see_all(timeout)

    def run(self, service: str, argv: Sequence[str], *, in_place: bool) -> int:
        raise Unsupported(
            f"one-off commands on a swarm are not offered yet: `mfe-deploy status --env {self.env.name}` names "
            f"the node and task of {service}; run `docker exec` on that node's engine"
        )

    def db_shell(self, service: str, args: Sequence[str]) -> int:
        raise Unsupported(
            "db shell on a swarm is not offered yet: psql runs in the postgres task, on the manager's engine "
            "(`docker exec -it TASK psql`)"
        )

    def acme_folder(self) -> tuple[Files, PurePath]:
        raise Unsupported("nginx.tls.mode acme is not available on the swarm runtime yet; use files")

    def install_certificate(self, chain: str, key: str) -> None:
        raise Unsupported("nginx.tls.mode acme is not available on the swarm runtime yet; use files")

    def prune_images(self, keep: int = 5) -> list[str]:
        raise Unsupported("images prune on a swarm: run it on each node's engine (not yet offered)")

    # --- nodes ---------------------------------------------------------------------------------------------
    def nodes(self) -> list[Node]:
        listed = self.runner.run(Command(("docker", "node", "ls", "-q")), timeout=60)
        if listed.returncode != 0:
            raise MfeError(f"the engine at {self.env.swarm.manager} is not a swarm manager: {listed.stderr.strip()}")
        done = self.runner.run(Command(("docker", "node", "inspect", *listed.stdout.split())), timeout=60)
        tasks: dict[str, list[str]] = {}
        for t in self._tasks():
            tasks.setdefault(t["node"], []).append(t["name"].removeprefix(f"{self.stack}_"))
        rows = []
        for n in json.loads(done.stdout or "[]"):
            name = n["Description"]["Hostname"]
            labels = tuple(sorted((n["Spec"].get("Labels") or {}).items()))
            rows.append(
                Node(
                    name=name,
                    role=n["Spec"]["Role"],
                    availability=n["Spec"]["Availability"],
                    state=n["Status"]["State"],
                    address=n["Status"].get("Addr", ""),
                    labels=labels,
                    tasks=tuple(sorted(tasks.get(name, []))),
                )
            )
        return sorted(rows, key=lambda r: (r.role != "manager", r.name))

    def set_availability(self, node: str, availability: str, timeout: float) -> None:
        names = [n.name for n in self.nodes()]
        if node not in names:
            raise MfeError(f"unknown node {node!r}; the swarm has: {', '.join(names)}")
        if availability == "drain":
            self._move_off(node, timeout)
        argv = ("docker", "node", "update", "--availability", availability, node)
        self._run(Command(argv), f"docker node update --availability {availability}")
        units = [u for u in self.units() if u in self._inspect(self.units())]
        deadline = time.monotonic() + timeout
        with self.console.status(f"{node}: {availability}; waiting until every service is whole") as waiting:
            while True:
                tasks = self._tasks()
                short = []
                for unit, spec in self._inspect(units).items():
                    wanted = (spec["Spec"].get("Mode", {}).get("Replicated") or {}).get("Replicas", 1)
                    ok = [t for t in tasks if t["unit"] == unit and t["state"] == "running"]
                    if availability == "drain":
                        ok = [t for t in ok if t["node"] != node]
                    if len(ok) < wanted:
                        short.append(unit)
                if not short:
                    return
                if time.monotonic() > deadline:
                    raise StartFailed(
                        f"not whole after {timeout:.0f}s: {', '.join(short)} (a store pinned to {node} cannot "
                        f"move: its volume is there){self._task_error(short[0])}"
                    )
                waiting.update(f"waiting for {', '.join(short)}")
                time.sleep(1)

    def _move_off(self, node: str, timeout: float) -> None:
        """Swarm's drain stops a node's tasks and only then starts their replacements: a service with one
        task there is gone meanwhile. So first the node takes no new task (pause), and each service with
        a task there is replaced start-first (its own update_config), which places the new tasks on the
        other nodes; the drain that follows finds nothing left to stop."""
        on_node = sorted({t["unit"] for t in self._tasks() if t["node"] == node})
        pinned = [u for u in on_node if u in swarm_stack.STORES or u == "nginx"]
        if pinned:
            raise MfeError(
                f"{node} runs {', '.join(pinned)}, placed there with its volume or host port: draining it would "
                "stop them (pin the stores to another node with swarm.stores_label first)"
            )
        argv = ("docker", "node", "update", "--availability", "pause", node)
        self._run(Command(argv), "docker node update --availability pause")
        before = {u: spec["Version"]["Index"] for u, spec in self._inspect(on_node).items()}
        since = time.time()
        for unit in on_node:
            update = ("docker", "service", "update", "--force", "--detach=true", f"{self.stack}_{unit}")
            self._run(Command(update), f"moving {unit} off {node}")
        self._watch(on_node, before, since, timeout)

    # --- observe -------------------------------------------------------------------------------------------
    def containers(self) -> list[ContainerState]:
        """One row per task that should run: enough for plan, diff and status."""
        rows = []
        for t in self._tasks():
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

    def _containers(self, unit: str) -> list[tuple[Runner, str]]:
        """The unit's running containers on the engines this machine reaches (the manager and the nodes)."""
        return [(engine, container) for engine, container, _ in self._task_containers(unit)]

    def _task_containers(self, unit: str, *, exited: bool = False) -> list[tuple[Runner, str, str]]:
        """(engine, id, name) of the unit's task containers on every engine: running, or all with `exited`."""
        label = f"label=com.docker.swarm.service.name={self.stack}_{unit}"
        found = []
        for _, engine in self.engines:
            argv = ("docker", "ps", *(["-a"] if exited else []), "--filter", label, "--format", "{{.ID}} {{.Names}}")
            done = engine.run(Command(argv), timeout=30)
            rows = [row.partition(" ") for row in done.stdout.splitlines()] if done.returncode == 0 else []
            found += [(engine, container, name) for container, _, name in rows]
        return found

    def _container(self, unit: str) -> tuple[Runner, str] | None:
        found = self._containers(unit)
        return found[0] if found else None

    def health(self) -> dict[str, health.Probe]:
        probes = {}
        for service in self.env.services:
            found = self._container(service)
            if found is None:
                probes[service] = health.Probe(None, {}, "no running task on an engine this machine reaches")
                continue
            engine, container = found
            probe = Command(("docker", "exec", container, *probe_command(self.env.services[service])))
            probes[service] = parse_probe(engine.run(probe, timeout=30))
        return probes

    def postgres(self) -> Postgres:
        found = self._container("postgres")
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
            lines = [line for name in ([unit] if unit else self.units()) for line in self._task_lines(name, tail)]
            lines.sort()
            for _, line in lines[-tail:] if tail is not None else lines:
                if needle is None or needle in line:
                    write(line)
            return
        last = str(tail) if tail is not None else "all"
        argv = ("docker", "service", "logs", "--no-trunc", "--tail", last, "--follow", f"{self.stack}_{unit}")
        proc = self.runner.spawn(Command(argv), stderr=None)
        assert proc.stdout is not None
        try:
            for raw in iter(proc.stdout.readline, b""):
                line = raw.decode(errors="replace").rstrip("\n")
                if needle is None or needle in line:
                    write(line)
        finally:
            proc.kill()

    def _task_lines(self, unit: str, tail: int | None) -> list[tuple[str, str]]:
        """The last lines of every task of the unit (running or exited: a crashed task's output is what one
        looks for), as (time, "TASK | line"): stdout and stderr, every replica and node, in time order."""
        found: list[tuple[str, str]] = []
        for engine, container, name in self._task_containers(unit, exited=True):
            task = ".".join(name.removeprefix(f"{self.stack}_").split(".")[:2])  # api-gateway.1
            argv = ("docker", "logs", "--timestamps", "--tail", str(tail) if tail is not None else "all", container)
            done = engine.run(Command(argv), timeout=60)
            for text in (done.stdout + done.stderr).splitlines():
                stamp, _, line = text.partition(" ")
                found.append((_sortable(stamp), f"{task} | {line}"))
        return found

    def stop_services(self, names: Sequence[str]) -> None:
        """The fence of a restore: the schema may change under the images, so the next `up` migrates again."""
        self.files.unlink(self.state_dir / "migrated")
        with self.console.status(f"stopping {', '.join(names)}"):
            scale = [f"{self.stack}_{n}=0" for n in names]
            self._run(Command(("docker", "service", "scale", "--detach=false", *scale)), "stopping the services")

    def start_services(self, names: Sequence[str], timeout: float) -> None:
        with self.console.status(f"starting {', '.join(names)} and waiting until healthy"):
            scale = [
                f"{self.stack}_{n}={self.env.services[n].replicas if n in self.env.services else 1}" for n in names
            ]
            self._run(Command(("docker", "service", "scale", "--detach=true", *scale)), "starting the services")
        self._watch(names, {}, time.time(), timeout)
        self._gateways_see_all(timeout)

    def _edge_resolves(self, gateway: str) -> bool:
        """nginx finds the gateway through the engine's DNS, which was seen not to answer for seconds
        right after services were scaled back up: the edge is back when it answers from nginx's task."""
        if not self.env.nginx.enabled:
            return True
        found = self._containers("nginx")
        return bool(found) and all(
            engine.run(Command(("docker", "exec", c, "getent", "hosts", gateway)), timeout=30).returncode == 0
            for engine, c in found
        )

    def _gateways_see_all(self, timeout: float) -> None:
        """The restarted services are new tasks with new addresses: wait until every gateway task
        reaches them (its /health asks each one) before saying they are back (a request in between got 502)."""
        gateway = self.env.gateway
        if gateway is None:
            return
        deadline = time.monotonic() + timeout
        while True:
            answers = [
                parse_probe(engine.run(Command(("docker", "exec", c, "python3", "-c", HEALTH_PROBE)), timeout=30))
                for engine, c in self._containers(gateway)
            ]
            if answers and all(a.status == 200 for a in answers) and self._edge_resolves(gateway):
                return
            if time.monotonic() > deadline:
                raise StartFailed(f"the {gateway} tasks do not reach every service after {timeout:.0f}s")
            time.sleep(1)

    def down(self, *, volumes: bool = False) -> bool:
        running = bool(self._inspect(self.units()))
        label = f"label=com.docker.stack.namespace={self.stack}"
        with self.console.status(f"removing the stack {self.stack}") as waiting:
            self.runner.run(Command(("docker", "stack", "rm", self.stack)), timeout=120)
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
        self.files.unlink(self.state_dir / "migrated")
        return running


def _when(stamp: str | None) -> float:
    if not stamp:
        return 0.0
    head, _, frac = stamp.rstrip("Z").partition(".")
    try:
        return datetime.fromisoformat(head).replace(tzinfo=UTC).timestamp() + float(f"0.{frac or 0}")
    except ValueError:
        return 0.0


def _image_in(stack_text: str, service: str) -> str | None:
    """The image the deployed stack file gives a service (what migrations run with)."""
    doc = yaml.safe_load(stack_text) if stack_text else None
    image = ((doc or {}).get("services", {}).get(service) or {}).get("image")
    return str(image) if image else None


def _sortable(stamp: str) -> str:
    """docker's RFC 3339 time with its fraction padded to 9 digits: it trims trailing zeros, which breaks
    the order of the strings."""
    head, dot, rest = stamp.partition(".")
    return f"{head}.{rest.rstrip('Z').ljust(9, '0')}Z" if dot else stamp
