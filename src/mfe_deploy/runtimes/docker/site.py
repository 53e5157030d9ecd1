"""What the parts of the engine runtimes use of the runtime that composes them (docker/base.py's
EngineRuntime, and the docker runtime for its compose parts): they take a Site, never the runtime's
class, so no part imports the module that composes it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import Protocol

from mfe_deploy.backups.jobs import Backups
from mfe_deploy.compose import Compose, ContainerState
from mfe_deploy.config.models import Environment
from mfe_deploy.config.secrets import Secrets
from mfe_deploy.console import Console
from mfe_deploy.exec.host import Files, Host
from mfe_deploy.exec.runner import Runner
from mfe_deploy.ops.migrations import Outcome
from mfe_deploy.render import Bundle
from mfe_deploy.runtimes.contract import Rollbacks
from mfe_deploy.runtimes.docker.images import EngineImages
from mfe_deploy.state.ledger import Ledger


class EngineSite(Rollbacks, Protocol):
    """A release on an engine: its files and state, its images, its ledger, its migrations and backups; and
    the primitives of a rollback (the contract's), which its parts use too (writing the bundle, recording)."""

    project_dir: Path
    host: Host
    files: Files
    bundle_dir: PurePath
    state_dir: PurePath
    ledger: Ledger
    runner: Runner
    console: Console

    @property
    def env(self) -> Environment: ...

    @property
    def secrets(self) -> Secrets: ...

    @property
    def images(self) -> EngineImages: ...

    def current_versions(self) -> dict[str, str]: ...

    def containers(self) -> list[ContainerState]: ...

    def rendered(self, version: str) -> Bundle: ...

    def migrate(self, services: list[str], action: list[str]) -> list[Outcome]: ...

    def schema_status(self, service: str) -> Outcome:
        """What the migration runner of the code running now says of `service`'s database (`status`)."""
        ...

    def migration_key(self, versions: dict[str, str]) -> str: ...

    def migrated(self, key: str) -> bool: ...

    def forget_migrations(self) -> None: ...

    def backups(self) -> Backups: ...

    def start_older(self, names: list[str], timeout: float) -> None: ...

    def stop_services(self, names: Sequence[str]) -> None: ...

    def start_services(self, names: Sequence[str], timeout: float) -> None: ...


class ComposeSite(EngineSite, Protocol):
    """The docker runtime: the same, and its Compose project."""

    @property
    def compose(self) -> Compose: ...

    def runner_service(self) -> str: ...

    def files_for_migrations(self, service: str) -> str: ...

    def store_hashes(self, version: str) -> dict[str, str]: ...

    def running_stores(self, states: Sequence[ContainerState] | None = None) -> dict[str, str]: ...
