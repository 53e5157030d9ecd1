"""The docker runtime's start-first replacement: services replaced in waves beside their old containers,
health-gated, and nginx switched to a new gateway's containers by colour before the old ones stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import PurePath

from mfe_deploy.compose import (
    Compose,
    ContainerState,
    health_log,
    nginx_reload,
    parse_health_log,
    remove_containers,
    stop_containers,
)
from mfe_deploy.config.models import Environment
from mfe_deploy.console import Console
from mfe_deploy.exec.command import Command
from mfe_deploy.exec.host import Files
from mfe_deploy.exec.runner import Completed, Runner
from mfe_deploy.ops.health import Probe
from mfe_deploy.plan import waves
from mfe_deploy.render import GREEN_FLAG, LIVE_NETWORK, colour_name
from mfe_deploy.runtimes.contract import StartFailed, checked


@dataclass
class Rollout:
    env: Environment
    compose: Compose
    runner: Runner
    files: Files
    bundle_dir: PurePath
    console: Console
    containers: Callable[[], list[ContainerState]]  # the stack's containers as compose lists them

    def _run(self, command: Command, what: str, timeout: float = 600) -> Completed:
        return checked(self.runner, command, what, timeout)

    def roll(self, services: list[str], timeout: float) -> None:
        """Start-first, in waves (plan.waves): the services of a wave (at most rollout.parallel) are replaced
        side by side, each after those it depends on, the gateway alone and last. Each service's new
        containers (all its replicas) start beside the old ones and must become healthy; for the gateway,
        nginx switches to the new containers' colour (no reload); then the old ones stop (SIGTERM: they
        finish what they serve, within stop_grace_period) and go, while the next wave starts: nothing waits
        on a drain but the end of `roll`, which returns once every old container is gone. A new container
        that does not become healthy is removed and the old ones go on serving; the rest of its wave
        finishes, and the deploy fails."""
        depends = {name: self.env.services[name].depends_on for name in services}
        gateways = [n for n in services if self.env.services[n].role == "gateway"]
        retiring: list[Future[None]] = []
        failed: list[BaseException] = []
        with ThreadPoolExecutor(max_workers=max(len(services), 1)) as retire:
            for wave in waves(services, depends, last=gateways, width=self.env.rollout.parallel):
                outcomes = self._replace_side_by_side(wave, timeout)
                for name in wave:
                    done = outcomes[name]
                    if isinstance(done, tuple):
                        new, old = done
                        self.console.info(f"{name}: replaced start-first ({new} new, {len(old)} old stopping)")
                        retiring.append(retire.submit(self._retire, name, old))
                failed = [done for done in outcomes.values() if isinstance(done, BaseException)]
                if failed:
                    break
            for future in retiring:  # every old container gone before `up` goes on (or rolls back)
                error = future.exception()
                if error is not None:
                    failed.append(error)
        if failed:
            raise failed[0]

    def _retire(self, name: str, old: list[str]) -> None:
        if old:
            self._run(stop_containers(*old), f"stopping the old {name}")
            self._run(remove_containers(*old), f"removing the old {name}")

    def _replace_side_by_side(
        self, wave: list[str], timeout: float
    ) -> dict[str, tuple[int, list[str]] | BaseException]:
        """Each service of the wave replaced in a thread of its own (one service: in this one): every one
        waited for, and what each did (new containers, old ones to stop) or raised returned."""
        if len(wave) == 1:
            with self.console.status(f"{wave[0]}: replacing start-first") as waiting:
                try:
                    return {wave[0]: self._replace(wave[0], timeout, lambda _, text: waiting.update(text))}
                except StartFailed as exc:
                    return {wave[0]: exc}
        news: dict[str, str] = {}
        lock = threading.Lock()
        with self.console.status(f"replacing {', '.join(wave)} start-first") as waiting:

            def update(name: str, text: str) -> None:
                with lock:
                    news[name] = text
                    waiting.update("; ".join(news[n] for n in wave if n in news))

            with ThreadPoolExecutor(max_workers=len(wave)) as pool:
                futures = {name: pool.submit(self._replace, name, timeout, update) for name in wave}
                return {name: _outcome(future) for name, future in futures.items()}

    def _replace(self, name: str, timeout: float, update: Callable[[str, str], None]) -> tuple[int, list[str]]:
        """One service's new containers started beside the old ones and healthy (a singleton: stop-first):
        how many new containers, and the old ones, still running, for `_retire`."""
        old = {c.name for c in self.containers() if c.service == name and not c.oneoff}
        replicas = self.env.services[name].replicas
        if self.env.services[name].singleton and old:
            # Never two at once: the old one finishes what it holds (SIGTERM, its stop timeout) and goes first.
            update(name, f"{name}: stopping the old container(s) first (singleton)")
            self._retire(name, sorted(old))
            old = set()
        update(name, f"{name}: starting {replicas} new container(s) beside {len(old)}")
        beside = self.compose.up(name, timeout=None, no_deps=True, scale=len(old) + replicas)
        try:
            self._run(beside, f"starting {name}")
            new = self._wait_new(name, old, timeout, lambda text: update(name, text))
        except StartFailed:
            # The new containers go, whatever state they are in; the old ones never stopped.
            extra = [c.name for c in self.containers() if c.service == name and c.name not in old]
            if extra:
                self.runner.run(remove_containers(*extra), timeout=120)
            raise
        if self.env.services[name].role == "gateway":
            # nginx sends new requests to the new containers only; the old ones finish theirs and stop.
            self.switch_gateways(new, lambda text: update(name, text))
        return len(new), sorted(old)

    def _wait_new(self, name: str, old: set[str], timeout: float, update: Callable[[str], None]) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            new = [c for c in self.containers() if c.service == name and not c.oneoff and c.name not in old]
            bad = [c for c in new if c.state in ("exited", "dead", "restarting") or c.health == "unhealthy"]
            # "healthy" only: every service has a healthcheck, and a container that has just started (or that
            # exits at once and is restarted) can show no health yet, which is not health.
            if new and not bad and all(c.state == "running" and c.health == "healthy" for c in new):
                return [c.name for c in new]
            if bad or time.monotonic() > deadline:
                why = f"{bad[0].health or bad[0].state}" if bad else f"not healthy after {timeout:.0f}s"
                looked = bad[0] if bad else next((c for c in new if c.health != "healthy"), None)
                report = (self._checks_of(looked.name) + self._logs_of(looked.name)) if looked else ""
                raise StartFailed(f"{name} is {why}; the old container(s) go on serving{report}")
            update(f"{name}: {sum(c.health == 'healthy' for c in new)}/{len(new)} new container(s) healthy")
            time.sleep(0.5)

    def _checks_of(self, container: str) -> str:
        """What the engine's last healthchecks of a container said: a check that answered 503 names the
        store it waits for; one that outlasted its timeout says so."""
        done = self.runner.run(health_log(container), timeout=60)
        lines = parse_health_log(done.stdout) if done.returncode == 0 else []
        return "\nits last health checks:\n" + "\n".join(f"  {line}" for line in lines) if lines else ""

    def _logs_of(self, container: str) -> str:
        done = self.runner.run(Command(("docker", "logs", "--tail", "15", container)), timeout=60)
        lines = (done.stdout + done.stderr).strip().splitlines()[-15:]
        return "\nits last log lines:\n" + "\n".join(f"  {line}" for line in lines) if lines else ""

    def confirm_healthy(self, timeout: float, *, recovering: bool = False) -> None:
        """`compose up --wait` can return while a container is in a restart loop (seen with Engine 20.10):
        confirm from `compose ps` that every container runs and is healthy, failing fast otherwise.
        `recovering`: containers that depend on restarted ones may still report unhealthy until their
        next probe; wait for them instead of failing."""
        deadline = time.monotonic() + timeout
        settled = 0
        while time.monotonic() < deadline:
            states = self.containers()
            bad = [
                c
                for c in states
                if c.state in ("restarting", "exited", "dead") or (c.health == "unhealthy" and not recovering)
            ]
            if bad:
                raise StartFailed(
                    f"{bad[0].service} is {bad[0].health if bad[0].health == 'unhealthy' else bad[0].state}"
                )
            if all(c.state == "running" and c.health in ("healthy", "") for c in states):
                settled += 1
                if settled >= 2:  # healthy on two looks in a row, half a second apart
                    self.publish_gateways(states, healthy_only=True)
                    return
            else:
                settled = 0
            time.sleep(0.5)
        raise StartFailed(f"not every container was healthy after {timeout:.0f}s")

    def reload_nginx(self) -> None:
        """nginx reads its configuration when it starts or reloads: reload after nginx.conf changed."""
        if not self.env.nginx.enabled:
            return
        container = next((c.name for c in self.containers() if c.service == "nginx" and c.state == "running"), None)
        if container is None:  # it reads the file when it starts
            return
        for step in nginx_reload(container):
            done = self.runner.run(step, timeout=60)
            if done.returncode != 0:
                tail = (done.stderr.strip().splitlines() or ["no error output"])[-1]
                raise StartFailed(f"nginx refused its new configuration (exit {done.returncode}): {tail}")

    def _live_colour(self) -> str:
        return "green" if self.files.mode(self.bundle_dir / GREEN_FLAG) is not None else "blue"

    def _live_network(self) -> str:
        return f"{self.env.project}-{self.env.name}_{LIVE_NETWORK}"

    def unpublished(self, states: Sequence[ContainerState]) -> list[ContainerState]:
        """Running gateway containers nginx cannot reach: not on the live network (compose made them)."""
        if not self.env.nginx.enabled:
            return []
        gateways = [c for c in states if c.service == self.env.gateway and c.state == "running" and not c.oneoff]
        return [c for c in gateways if self._live_network() not in c.networks]

    def _attach(self, containers: Sequence[str], colour: str) -> None:
        alias = colour_name(self.env, colour)
        for name in containers:
            connect = Command(("docker", "network", "connect", "--alias", alias, self._live_network(), name))
            self._run(connect, f"giving {name} to nginx")

    def confirm_fresh(self, health: Callable[[], Mapping[str, Probe]], timeout: float) -> None:
        """After a store restarted: until every service's own /health, asked now, says healthy. The engine's
        healthcheck of a container that kept running can still say `healthy` from before the restart, while
        the service's clients reconnect (a CI run saw the gateway's /health unhealthy just after `up`)."""
        deadline = time.monotonic() + timeout
        while True:
            waiting = [name for name, probe in health().items() if not probe.healthy]
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise StartFailed(f"{', '.join(waiting)} not healthy {timeout:.0f}s after the stores restarted")
            time.sleep(0.5)

    def publish_gateways(self, states: Sequence[ContainerState], *, healthy_only: bool) -> None:
        """Gateway containers compose made (a first start, a recreation) join the live colour: nginx reaches
        them. A replacement's new containers never come here before they are healthy (see _roll)."""
        waiting = self.unpublished(states)
        ready = [c.name for c in waiting if c.health == "healthy" or not healthy_only]
        if ready:
            self._attach(ready, self._live_colour())

    def switch_gateways(self, new: list[str], update: Callable[[str], None]) -> None:
        """The new (healthy) containers join the live network under the other colour, then nginx switches
        colour: a file appears or goes, which nginx checks per request (a reload would close idle client
        keep-alive connections, and a request sent on one at that instant would get no answer). Requests
        nginx routed just before the switch connect within the pause that follows; the old containers then
        finish what they hold when stopped."""
        if not self.env.nginx.enabled:
            return
        colour = "green" if self._live_colour() == "blue" else "blue"
        self._attach(new, colour)
        flag = self.bundle_dir / GREEN_FLAG
        if colour == "green":
            self.files.makedirs(flag.parent, 0o755)
            self.files.write_atomic(flag, "", 0o644)
        else:
            self.files.unlink(flag)
        update(f"{self.env.gateway}: nginx sends new requests to the new container(s) ({colour})")
        time.sleep(1)

    def failure_report(self) -> str:
        states = self.containers()
        bad = [c for c in states if c.health == "unhealthy" or c.state in ("exited", "dead", "restarting")]
        lines = []
        for c in bad[:3]:
            logs = self.runner.run(self.compose.logs(c.service, 15), timeout=60)
            lines.append(f"{c.service} is {c.health or c.state}{self._checks_of(c.name)}\nits last log lines:")
            lines += [f"  {line}" for line in logs.stdout.strip().splitlines()[-15:]]
        return "\n".join(lines) or "no container reported a failure; see `mfe-deploy logs`"


def _outcome(future: Future[tuple[int, list[str]]]) -> tuple[int, list[str]] | BaseException:
    """A replacement's result, or what it raised: every one of a wave is waited for before any fails."""
    error = future.exception()
    return error if error is not None else future.result()
