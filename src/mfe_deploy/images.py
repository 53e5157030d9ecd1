"""Service images: a wheelhouse built on the host (no network inside builds), one image per service,
tagged <prefix>/<service>:<version>."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from mfe_deploy.errors import MfeError
from mfe_deploy.exec.command import Command
from mfe_deploy.exec.process import LocalProcess

if TYPE_CHECKING:
    from mfe_deploy.console import Task
    from mfe_deploy.exec.runner import Runner

REPO = Path(__file__).resolve().parents[2]


class BuildFailed(MfeError):
    exit_code = 1


def _run(argv: list[str], what: str, env: dict[str, str] | None = None) -> str:
    done = LocalProcess().run(Command(tuple(argv), env=env or {}, inherit=env is None))
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise BuildFailed(f"{what} failed:\n{tail}")
    return done.stdout


def base_python(base_image: str) -> str:
    code = "import sys; print('%d.%d' % sys.version_info[:2])"
    return _run(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", "python3", base_image, "-c", code],
        f"asking {base_image} for its Python version",
    ).strip()


def wheelhouse(services_dir: Path, folder: Path, python_version: str) -> Path:
    """Third-party wheels for the target Python, cached by lock file; the services' own wheel, fresh."""
    lock = services_dir / "requirements.lock"
    key = hashlib.sha256(lock.read_bytes() + python_version.encode()).hexdigest()[:16]
    deps = folder / f"deps-{key}"
    if not (deps / ".complete").exists():
        shutil.rmtree(deps, ignore_errors=True)
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--disable-pip-version-check",
                "--require-hashes",
                "--only-binary=:all:",
                "--implementation",
                "cp",
                "--python-version",
                python_version,
                "--platform",
                "manylinux2014_x86_64",
                "--platform",
                "manylinux_2_17_x86_64",
                "--platform",
                "manylinux_2_28_x86_64",
                "-r",
                str(lock),
                "-d",
                str(deps),
            ],
            "downloading the services' wheels",
        )
        (deps / ".complete").touch()
    house = folder / "context" / "wheelhouse"
    shutil.rmtree(house, ignore_errors=True)
    house.mkdir(parents=True)
    for wheel in deps.glob("*.whl"):
        os.link(wheel, house / wheel.name)
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--disable-pip-version-check",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(house),
            str(services_dir),
        ],
        "building the services' wheel",
    )
    return house.parent


def exists(runner: Runner, tag: str) -> bool:
    return runner.run(Command(("docker", "image", "inspect", tag)), timeout=60).returncode == 0


def image_ids(runner: Runner, tags: list[str]) -> dict[str, str]:
    """Image id per tag, in one call; a missing tag maps to "" (inspect still answers for the others)."""
    found: dict[str, str] = dict.fromkeys(tags, "")
    if not tags:
        return found
    fmt = "{{.Id}} {{json .RepoTags}}"
    done = runner.run(Command(("docker", "image", "inspect", "--format", fmt, *tags)), timeout=60)
    for line in done.stdout.splitlines():
        image, _, repo_tags = line.partition(" ")
        for tag in json.loads(repo_tags or "[]"):
            if tag in found:
                found[tag] = image
    return found


def plan_ship(here: dict[str, str], there: dict[str, str]) -> list[str]:
    """The tags to send: those the other engine lacks or holds as another image. Pure."""
    return sorted(tag for tag, image in here.items() if image and there.get(tag) != image)


def ship(tags: list[str], source: Runner, dest: Runner, task: Task | None = None) -> int:
    """`docker save` on one engine streamed into `docker load` on the other (no registry): bytes sent."""
    if not tags:
        return 0
    with tempfile.TemporaryFile() as err_save, tempfile.TemporaryFile() as err_load:
        save = source.spawn(Command(("docker", "save", *tags)), stderr=err_save)
        load = dest.spawn(Command(("docker", "load", "-q")), stdin=True, stderr=err_load)
        assert save.stdout is not None and load.stdin is not None
        sent = 0
        try:
            while chunk := save.stdout.read(1 << 20):
                load.stdin.write(chunk)
                sent += len(chunk)
                if task is not None:
                    task.advance(len(chunk))
        except OSError:
            pass  # the loader went away: its exit status and stderr say why
        finally:
            with contextlib.suppress(OSError):
                load.stdin.close()
            save.stdout.close()
        saved, loaded = save.wait(), load.wait()
        if saved != 0 or loaded != 0:
            side, err = ("docker save", err_save) if saved != 0 else ("docker load", err_load)
            err.seek(0)
            tail = " ".join(err.read().decode(errors="replace").split()[-30:])
            raise BuildFailed(f"shipping {', '.join(tags)} failed in {side}: {tail or 'no message'}")
    return sent


def build_command(services_dir: Path, context: Path, *, base: str, service: str, version: str, tag: str) -> Command:
    """A bundled service's image, from services/Dockerfile and the wheelhouse in `context`."""
    args = {"BASE_IMAGE": base, "SERVICE": service, "VERSION": version}
    return _docker_build(services_dir / "Dockerfile", context, args, tag)


def build_own_command(context: Path, dockerfile: Path, *, version: str, tag: str) -> Command:
    """A service of yours, from its own Dockerfile (VERSION is passed as a build argument)."""
    return _docker_build(dockerfile, context, {"VERSION": version}, tag)


def _docker_build(dockerfile: Path, context: Path, args: dict[str, str], tag: str) -> Command:
    build_args = [x for key, value in args.items() for x in ("--build-arg", f"{key}={value}")]
    argv = ("docker", "build", "-q", "-f", str(dockerfile), *build_args, "-t", tag, str(context))
    return Command(argv, env={"DOCKER_BUILDKIT": os.environ.get("DOCKER_BUILDKIT", "0")})


def build(services_dir: Path, context: Path, *, base: str, service: str, version: str, tag: str) -> None:
    command = build_command(services_dir, context, base=base, service=service, version=version, tag=tag)
    _run(list(command.argv), f"building {tag}", env={**os.environ, **command.environ()})


def build_own(context: Path, dockerfile: Path, *, version: str, tag: str) -> None:
    command = build_own_command(context, dockerfile, version=version, tag=tag)
    _run(list(command.argv), f"building {tag}", env={**os.environ, **command.environ()})


def tags(runner: Runner, prefix: str, service: str) -> list[str]:
    out = runner.run(Command(("docker", "image", "ls", "--format", "{{.Tag}}", f"{prefix}/{service}")), timeout=60)
    return [t for t in out.stdout.split() if t and t != "<none>"]


def created(runner: Runner, tag: str) -> str:
    done = runner.run(Command(("docker", "image", "inspect", "--format", "{{.Created}}", tag)), timeout=60)
    return done.stdout.strip()


def plan_prune(tags_by_age: list[str], keep: int, protected: set[str]) -> list[str]:
    """Tags to delete: all but the newest `keep`, except those a recorded release still needs."""
    return [t for t in tags_by_age[keep:] if t not in protected]


def remove(runner: Runner, tag: str) -> bool:
    return runner.run(Command(("docker", "image", "rm", tag)), timeout=120).returncode == 0
