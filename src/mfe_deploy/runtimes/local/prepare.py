"""This machine made ready for the local runtime's programs: its ports free, its folders (private, or the
cluster's user's as root), nginx's own folders and copies, the TLS files, and a PostgreSQL cluster."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import tempfile
from pathlib import Path

from mfe_deploy.binaries import Binaries
from mfe_deploy.errors import MfeError
from mfe_deploy.exec.command import Command
from mfe_deploy.exec.host import own_folder, write_atomic
from mfe_deploy.local_bundle import NGINX_USER, PG_SYSTEM_USER, nginx_unprivileged, pgbackrest_conf
from mfe_deploy.ops import health
from mfe_deploy.runtimes.contract import StartFailed
from mfe_deploy.runtimes.local import machine
from mfe_deploy.runtimes.local.site import Site
from mfe_deploy.supervisor import ProgramState


def check_ports(rt: Site, states: dict[str, ProgramState]) -> None:
    wanted = [("postgres", rt.env.database.port), ("redis", rt.env.redis.port)]
    if rt.env.uses_rabbitmq:
        wanted.append(("rabbitmq", rt.env.rabbitmq.port))
    wanted += [(name, svc.http_port) for name, svc in rt.env.web_services.items()]
    if rt.env.nginx.enabled:
        wanted += [("nginx", rt.env.nginx.http_port), ("nginx", rt.env.nginx.https_port)]
    if rt.env.monitoring.enabled:
        wanted.append(("prometheus", rt.env.monitoring.port))
    mine = {name for name, st in states.items() if st.state in ("RUNNING", "STARTING", "BACKOFF")}
    wanted = [(unit, port) for unit, port in wanted if unit not in mine]
    found = health.conflicts(wanted, {port: health.port_open(port, timeout=0.2) for _, port in wanted})
    if found:
        raise StartFailed("; ".join(found) + ": stop what holds it, or change the port in the environment file")


def prepare_dirs(rt: Site) -> None:
    layout = rt.layout
    for folder in (
        layout.data,
        layout.logs,
        layout.data / "redis",
        layout.data / "rabbitmq" / "mnesia",  # where RabbitMQ keeps its feature flags file too
        layout.logs / "rabbitmq",
        layout.data / "nginx",
        layout.data / "prometheus",
    ):
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    if rt.env.nginx.enabled:
        tls_files(rt)
    own_folder(layout.run)  # /tmp/mfe-<uid>-<digest>: a name another user can guess and plant
    if rt.env.nginx.enabled and nginx_unprivileged(rt.env, run_as_root=machine.as_root()):
        nginx_home(rt)
    pg = layout.pg_data
    pg.mkdir(parents=True, exist_ok=True, mode=0o700)
    if machine.as_root():
        machine.ensure_system_user(PG_SYSTEM_USER)
        shutil.chown(pg, PG_SYSTEM_USER, PG_SYSTEM_USER)
        link = layout.data / "postgres"
        if layout.pg_outside is not None and not link.is_symlink():
            link.symlink_to(pg)  # so that the cluster is still found from the bundle
        if layout.pg_outside is None:
            # Our own folders between the project and the cluster: traversable (not listable) by its user.
            for folder in (layout.data, layout.root, layout.bundle, layout.bundle.parent):
                folder.chmod(folder.stat().st_mode | 0o001)
    pitr = rt.env.database.pitr
    if pitr is not None:  # pgBackRest's folders, the cluster user's; its socket folder inside ours
        for folder in layout.pitr.folders():
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            chown_pg(folder)
        offsite = rt.env.backup.offsite
        if offsite is not None and offsite.ca_file is not None:  # archive-push verifies the store with it
            ca = rt.project_dir / offsite.ca_file
            if not ca.is_file():
                raise MfeError(f"environments/{rt.env.name}.yaml: backup.offsite.ca_file: {ca} is not a file")
            write_atomic(layout.pitr.offsite_ca, ca.read_text(), 0o644)
            chown_pg(layout.pitr.offsite_ca)
        write_atomic(layout.pitr.conf, pgbackrest_conf(rt.env, pitr, layout.pitr, pg, rt.secrets), 0o600)
        chown_pg(layout.pitr.conf)
        layout.run.chmod(0o711)  # traversable, not listable: the cluster's user reaches its socket folder


def chown_pg(path: Path) -> None:
    if machine.as_root():
        shutil.chown(path, PG_SYSTEM_USER, PG_SYSTEM_USER)


def nginx_home(rt: Site) -> None:
    """nginx's two folders: its own (pid, temporary files), and root's, readable by its group, with copies
    of its configuration, certificate and key (the key may be a file of root's, mode 0600). Root writes
    only in the second: nginx's user cannot put a link there for root to write through."""
    layout = rt.layout
    machine.ensure_system_user(NGINX_USER)
    group = grp.getgrnam(NGINX_USER).gr_gid
    layout.run.chmod(0o711)  # traversable to nginx's folders, not listable
    for folder, owner, mode in (
        (layout.nginx_run, pwd.getpwnam(NGINX_USER).pw_uid, 0o700),
        (layout.nginx_conf, 0, 0o750),
    ):
        folder.mkdir(exist_ok=True)  # in root's run folder: nobody else can put anything in its place
        os.chown(folder, owner, group, follow_symlinks=False)
        folder.chmod(mode)
    sources = {
        "nginx.conf": layout.root / "nginx" / "nginx.conf",
        "cert.pem": layout.root / "nginx" / "ssl" / "cert.pem",
        "key.pem": layout.root / "nginx" / "ssl" / "key.pem",
    }
    for name, source in sources.items():
        write_atomic(layout.nginx_conf / name, source.read_bytes(), 0o640)
        os.chown(layout.nginx_conf / name, 0, group, follow_symlinks=False)


def initdb(rt: Site, bins: Binaries) -> None:
    pgdata = rt.layout.pg_data
    if (pgdata / "PG_VERSION").exists():
        return
    mode = rt.layout.run.stat().st_mode & 0o777  # 0711 when nginx has a folder in it
    with tempfile.NamedTemporaryFile("w", delete=False, dir=rt.layout.run, prefix="pw") as pw:
        pw.write(rt.secrets.postgres_password.reveal())
    try:
        as_user = ["runuser", "-u", PG_SYSTEM_USER, "--"] if machine.as_root() else []
        if machine.as_root():
            shutil.chown(pw.name, PG_SYSTEM_USER)
            rt.layout.run.chmod(0o711)
        rt.console.info(f"initialising PostgreSQL in {pgdata}")
        initdb = (str(bins.pg_bin / "initdb"), "-D", str(pgdata), "-U", rt.env.database.superuser)
        options = (f"--pwfile={pw.name}", "--auth=scram-sha-256", "-E", "UTF8", "--no-instructions")
        done = rt.runner.run(Command((*as_user, *initdb, *options)))
    finally:
        Path(pw.name).unlink(missing_ok=True)
        rt.layout.run.chmod(mode)
    if done.returncode != 0:
        shutil.rmtree(pgdata, ignore_errors=True)
        raise StartFailed(f"initdb failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ''}")


def tls_files(rt: Site) -> None:
    """nginx reads cert.pem and key.pem from the bundle: made once (self-signed) or linked (files)."""
    ssl_dir = rt.layout.root / "nginx" / "ssl"
    ssl_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    tls = rt.env.nginx.tls
    if tls.mode == "files" and tls.certificate and tls.key:
        for name, target in (("cert.pem", tls.certificate), ("key.pem", tls.key)):
            link = ssl_dir / name
            link.unlink(missing_ok=True)
            link.symlink_to(target)
        return
    if (ssl_dir / "cert.pem").exists():
        return
    from mfe_deploy import tls as certificates

    cert, key = certificates.self_signed(rt.env.nginx.domain)
    write_atomic(ssl_dir / "key.pem", key, 0o600)
    write_atomic(ssl_dir / "cert.pem", cert, 0o644)
