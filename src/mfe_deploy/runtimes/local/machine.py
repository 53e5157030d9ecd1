"""This machine as the local runtime needs it: whether it runs as root, the system users it creates, and,
as root, where PostgreSQL's cluster and binaries go when the folders above them are private."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pwd
import shutil
from pathlib import Path

from mfe_deploy.errors import MfeError
from mfe_deploy.exec.command import Command
from mfe_deploy.exec.process import LocalProcess


def as_root() -> bool:
    return os.geteuid() == 0


def private_above(path: Path) -> bool:
    return any(folder.exists() and not folder.stat().st_mode & 0o001 for folder in [path, *path.parents])


def pg_outside(bundle_dir: Path) -> Path | None:
    """As root, PostgreSQL runs as an unprivileged user, which must traverse every folder above its data.
    When one of them is private (/root, a 0700 temp folder), the cluster lives under /var/lib/mfe-deploy
    instead, linked from the bundle: we do not loosen the permissions of someone's folders."""
    if private_above(bundle_dir):
        digest = hashlib.sha256(str(bundle_dir).encode()).hexdigest()[:16]
        return Path("/var/lib/mfe-deploy") / digest / "postgres"
    return None


def shared_pg_install(pg_bin: Path) -> Path:
    """The same reason for the binaries: the pgserver wheel's PostgreSQL inside a venv under /root cannot be
    run by the unprivileged user, so its install tree is copied once to a world-readable folder keyed by where
    it came from and when it was installed. The layout is kept: the binaries find lib/ and share/ relative to
    themselves, and their RPATH names the wheel's `<package>.libs` folder beside the package (auditwheel)."""
    install, package = pg_bin.parent, pg_bin.parent.parent
    stamp = f"{install}:{(pg_bin / 'postgres').stat().st_mtime_ns}"
    target = Path("/var/lib/mfe-deploy/pg") / hashlib.sha256(stamp.encode()).hexdigest()[:16]
    copied = target / package.name / install.name / "bin"
    if not (copied / "postgres").is_file():
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(install, partial / package.name / install.name, symlinks=True)
        libs = package.with_name(package.name + ".libs")
        if libs.is_dir():
            shutil.copytree(libs, partial / libs.name, symlinks=True)
        for folder in (partial, target.parent, target.parent.parent):
            folder.chmod(0o755)
        partial.rename(target)
    return copied


def services_installed() -> bool:
    return importlib.util.find_spec("mfe_services") is not None


def ensure_system_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
        return
    except KeyError:
        pass
    useradd = ("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name)
    done = LocalProcess().run(Command(useradd))
    if done.returncode != 0:
        raise MfeError(f"useradd {name} failed: {(done.stdout + done.stderr).strip()}")


def read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return None
