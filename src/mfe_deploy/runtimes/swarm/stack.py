"""A Swarm stack as the engine sees it: deployed from a stack file, its services and tasks inspected, watched
until they converge or Swarm rolls one back, and the secrets and configs an earlier release used removed
once the tasks that hold them have drained."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePath
from typing import Any

import yaml

from mfe_deploy.console import Console
from mfe_deploy.exec.command import Command
from mfe_deploy.exec.host import Files
from mfe_deploy.exec.runner import Runner
from mfe_deploy.runtimes.contract import RolledBack, StartFailed, checked

BUSY = ("updating", "rollback_started")
ROLLED_BACK = ("rollback_completed", "rollback_paused", "paused")


@dataclass
class SwarmStack:
    name: str
    runner: Runner  # the manager's engine
    files: Files
    bundle_dir: PurePath
    console: Console

    def must(self, command: Command, what: str) -> None:
        checked(self.runner, command, what)

    def deploy(self, file: str, units: Sequence[str], timeout: float, *, prune: bool) -> None:
        before = {u: spec.get("Version", {}).get("Index") for u, spec in self.inspect(units).items()}
        since = time.time()
        # No --detach: clients before 26 do not know it, and detached is what every client does without it.
        argv = ["docker", "stack", "deploy", "--resolve-image", "never"]
        deploy = Command((*argv, *(["--prune"] if prune else []), "-c", file, self.name), cwd=self.bundle_dir)
        with self.console.status(f"deploying {', '.join(units)}"):
            self.must(deploy, "docker stack deploy")
        if timeout:
            self.watch(units, before, since, timeout)

    def watch(self, units: Sequence[str], before: dict[str, Any], since: float, timeout: float) -> None:
        """Until every service converged (its tasks run and are healthy, its update completed), or Swarm
        rolled one back (exit 1, with the failing task's error), or the time is up."""
        deadline = time.monotonic() + timeout
        with self.console.status("waiting for the services to converge") as waiting:
            while True:
                specs, tasks = self.inspect(units), self.tasks()
                states = {
                    u: self.converged(u, specs[u], since, tasks, changed=before.get(u) != specs[u]["Version"]["Index"])
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
                        f"{self.task_error(unit)}"
                    )
                pending = [u for u, state in states.items() if state != "done"]
                if not pending:
                    return
                if time.monotonic() > deadline:
                    raise StartFailed(
                        f"not converged after {timeout:.0f}s: {', '.join(pending)}{self.task_error(pending[0])}"
                    )
                waiting.update(f"{len(units) - len(pending)}/{len(units)} converged; waiting for {pending[0]}")
                time.sleep(1)

    def converged(
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

    def inspect(self, units: Sequence[str]) -> dict[str, dict[str, Any]]:
        names = [f"{self.name}_{u}" for u in units]
        done = self.runner.run(Command(("docker", "service", "inspect", *names)), timeout=60)
        found = json.loads(done.stdout or "[]") if done.stdout.strip().startswith("[") else []
        return {s["Spec"]["Name"].removeprefix(f"{self.name}_"): s for s in found}

    def tasks(self, unit: str | None = None) -> list[dict[str, str]]:
        """The tasks that should run (desired state running): their state, node, image and error."""
        what = ["service", "ps", f"{self.name}_{unit}"] if unit else ["stack", "ps", self.name]
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
                    "unit": name.removeprefix(f"{self.name}_").split(".")[0],
                    "state": row.get("CurrentState", "").split(" ")[0].lower(),
                    "node": row.get("Node", ""),
                    "image": row.get("Image", ""),
                    "error": row.get("Error", ""),
                }
            )
        return tasks

    def task_error(self, unit: str) -> str:
        """The error of a task that failed, preferring one of the image being deployed (the history also
        holds older tasks' errors)."""
        argv = ("docker", "service", "ps", f"{self.name}_{unit}", "--no-trunc", "--format", "{{json .}}")
        done = self.runner.run(Command(argv), timeout=60)
        rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        failed = [r for r in rows if r.get("Error")]
        deploying = image_in(self.files.read_text(self.bundle_dir / "stack.yml") or "", unit)
        failed.sort(key=lambda r: r.get("Image") != deploying)
        if not failed:
            return ""
        row = failed[0]
        return f"\n{unit}: task {row.get('Name', '')} ({row.get('Image', '')}) on {row.get('Node', '')}: {row['Error']}"

    def remove_unused_objects(self, longest_stop: float) -> None:
        """Secrets and configs an earlier release used (the names are content digests): gone once converged
        and the replaced tasks that hold them have drained (swarm.drain). One a task still holds after that
        is refused by Swarm and stays until the next deploy."""
        stack_file = self.files.read_text(self.bundle_dir / "stack.yml") or ""
        unused: list[tuple[str, str]] = []
        for kind in ("secret", "config"):
            argv = ("docker", kind, "ls", "--filter", f"label=com.docker.stack.namespace={self.name}")
            done = self.runner.run(Command((*argv, "--format", "{{.Name}}")), timeout=60)
            unused += [(kind, name) for name in done.stdout.split() if name not in stack_file]
        if unused:
            self.wait_for_replaced_tasks(longest_stop)
        for kind, name in unused:
            self.runner.run(Command(("docker", kind, "rm", name)), timeout=60)

    def wait_for_replaced_tasks(self, longest_stop: float) -> None:
        """Until no replaced task (desired state shutdown) still runs: each drains for swarm.drain after
        Swarm's 2 s, then finishes its requests; bounded by the longest stop_timeout."""
        deadline = time.monotonic() + 2 + longest_stop + 5
        replaced = ("--filter", "desired-state=shutdown", "--format", "{{.CurrentState}}")
        argv = ("docker", "stack", "ps", self.name, *replaced)
        with self.console.status("waiting for the replaced tasks to drain") as waiting:
            while time.monotonic() < deadline:
                done = self.runner.run(Command(argv), timeout=60)
                left = sum(1 for state in done.stdout.splitlines() if state.startswith(("Running", "Starting")))
                if done.returncode != 0 or not left:
                    return
                waiting.update(f"waiting for {left} replaced task{'s' * (left != 1)} to drain")
                time.sleep(1)


def _when(stamp: str | None) -> float:
    if not stamp:
        return 0.0
    head, _, frac = stamp.rstrip("Z").partition(".")
    try:
        return datetime.fromisoformat(head).replace(tzinfo=UTC).timestamp() + float(f"0.{frac or 0}")
    except ValueError:
        return 0.0


def image_in(stack_text: str, service: str) -> str | None:
    """The image the deployed stack file gives a service (what migrations run with)."""
    doc = yaml.safe_load(stack_text) if stack_text else None
    image = ((doc or {}).get("services", {}).get(service) or {}).get("image")
    return str(image) if image else None
