"""A release's images on an engine: built on this machine, sent to the engines that lack them, pruned.
Composed by the docker and swarm runtimes alike."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from mfe_deploy import images
from mfe_deploy.config.models import Environment
from mfe_deploy.console import Console, human_size
from mfe_deploy.exec.host import Host
from mfe_deploy.exec.runner import Runner
from mfe_deploy.render import image_ref
from mfe_deploy.runtimes.contract import StartFailed
from mfe_deploy.state.ledger import Ledger


@dataclass
class EngineImages:
    env: Environment
    project_dir: Path
    build_dir: Path  # on this machine: the wheelhouse and build contexts
    builder: Runner  # this machine's engine: images are built here, then shipped
    runner: Runner  # the engine that runs the stack
    host: Host
    console: Console
    ledger: Ledger

    def tag(self, service: str, version: str) -> str:
        return image_ref(self.env, service, version)

    def build(self, version: str) -> None:
        services_dir = self.project_dir / "services"
        if not (services_dir / "Dockerfile").exists():
            services_dir = images.REPO / "services"
        for name, svc in self.env.services.items():
            if svc.image is not None and not images.exists(self.builder, svc.image):
                raise StartFailed(f"{name}: image {svc.image} does not exist on this engine (docker pull or load it)")
        built = [s for s, svc in self.env.services.items() if svc.image is None]
        fresh = version.endswith("-dirty")
        needed = [s for s in built if fresh or not images.exists(self.builder, self.tag(s, version))]
        if needed:
            started = time.monotonic()
            with self.console.status(f"building {len(needed)} service image(s) at {version}") as waiting:
                context: Path | None = None
                for done, service in enumerate(needed, 1):
                    tag = self.tag(service, version)
                    own = self.env.services[service].build
                    if own is not None:
                        folder = self.project_dir / own.context
                        images.build_own(folder, folder / own.dockerfile, version=version, tag=tag)
                    else:
                        if context is None:
                            python = images.base_python(self.env.images.service_base)
                            context = images.wheelhouse(services_dir, self.build_dir, python)
                        images.build(
                            services_dir,
                            context,
                            base=self.env.images.service_base,
                            service=service,
                            version=version,
                            tag=tag,
                        )
                    waiting.update(f"{done}/{len(needed)} built ({service})", f"{time.monotonic() - started:.0f}s")
        if self.host.remote:
            self.ship([self.tag(s, version) for s in self.env.services])

    def ship(self, tags: list[str]) -> list[str]:
        """Send the remote engine the images it lacks (or holds as other images), without a registry.
        Infra images this machine has are sent too when the remote lacks them (air-gapped hosts)."""
        return self.ship_to(self.runner, self.host.name, [*tags, *self.infra()])

    def infra(self) -> list[str]:
        i = self.env.images
        return [
            i.postgres,
            i.redis,
            *([i.rabbitmq] if self.env.uses_rabbitmq else []),
            *([i.nginx] if self.env.nginx.enabled else []),
            *([i.prometheus] if self.env.monitoring.enabled else []),
        ]

    def ship_to(self, engine: Runner, where: str, wanted: list[str]) -> list[str]:
        todo = images.plan_ship(images.image_ids(self.builder, wanted), images.image_ids(engine, wanted))
        if not todo:
            return []
        started = time.monotonic()
        with self.console.progress() as progress:
            task = progress.task(f"shipping {len(todo)} image(s) to {where}")
            sent = images.ship(todo, self.builder, engine, task)
            task.finish(f"{human_size(sent)} in {time.monotonic() - started:.1f}s")
        return todo

    def ids(self, versions: dict[str, str]) -> dict[str, str]:
        """Each service's image id on the engine that runs the stack (what the ledger records); "" for an image
        it does not hold (not built yet)."""
        ids = images.image_ids(self.runner, [self.tag(s, v) for s, v in versions.items()])
        return {s: ids.get(self.tag(s, v), "") for s, v in versions.items()}

    def exists(self, service: str, version: str) -> bool:
        return images.exists(self.runner, self.tag(service, version))

    def prune(self, keep: int = 5) -> list[str]:
        """Keep the newest `keep` versions of each service image; never remove a version that the current
        release or any of the last `keep` successful releases uses (the rollback targets)."""
        good = [r for r in self.ledger.all() if r.outcome == "succeeded"][-keep:]
        removed = []
        for service in (s for s, svc in self.env.services.items() if svc.image is None):
            protected = {r.versions.get(service, "") for r in good}
            tags = sorted(
                images.tags(self.runner, self.env.images.services_prefix, service),
                key=lambda t: images.created(self.runner, self.tag(service, t)),
                reverse=True,
            )
            for version in images.plan_prune(tags, keep, protected):
                if images.remove(self.runner, self.tag(service, version)):
                    removed.append(self.tag(service, version))
        return removed
