"""Remote hosts over SSH against a real sshd on loopback: host key verification (unknown, trusted,
changed), user key authentication, connection errors as one line, and commands run remotely with their
variables kept out of argv."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path, PurePosixPath

import pytest

from mfe_deploy.backups.store import Entry, Manifest
from mfe_deploy.errors import MfeError
from mfe_deploy.exec.command import Command
from mfe_deploy.exec.secret import Secret
from mfe_deploy.remote import ssh
from mfe_deploy.remote.target import SshTarget
from tests.conftest import REPO, Project, strong_secrets
from tests.pg import free_port
from tests.sshd import SSHD, Sshd, fingerprint, keygen, sshd

if os.geteuid() != 0 or not SSHD.exists():
    pytest.skip("needs root and openssh-server (scripts/setup-system)", allow_module_level=True)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Sshd]:
    with sshd(tmp_path / "sshd") as s:
        yield s


def remote_project(tmp_path: Path, server: Sshd, *, port: int | None = None, key: Path | None = None) -> Project:
    root = tmp_path / "project"
    shutil.copytree(REPO / "environments", root / "environments", dirs_exist_ok=True)
    (root / "environments" / "remote.yaml").write_text(
        f"extends: staging\ntarget: ssh://root@127.0.0.1:{port or server.port}\n"
        f"ssh:\n  identity_file: {key or server.user_key}\n  known_hosts: {tmp_path / 'known_hosts'}\n"
        "  connect_timeout: 2\n"
    )
    return Project(root=root, environ={"PATH": os.environ["PATH"], "HOME": str(tmp_path), **strong_secrets()})


def test_unknown_host_key_is_refused_then_trusted_by_fingerprint(tmp_path: Path, server: Sshd) -> None:
    p = remote_project(tmp_path, server)
    expected = fingerprint(Path(str(server.host_key) + ".pub"))
    refused = p.cli("hosts", "check", "--env", "remote")
    assert refused.code == 1 and len(refused.err.splitlines()) == 1
    assert f"root@127.0.0.1:{server.port}: unknown host key (ssh-ed25519 {expected}), refused" in refused.err
    assert "mfe-deploy hosts trust --env remote" in refused.err
    assert not (tmp_path / "known_hosts").exists()  # nothing changed
    wrong = p.cli("hosts", "trust", "--env", "remote", "--fingerprint", "SHA256:not-it", "--yes")
    assert wrong.code == 1 and not (tmp_path / "known_hosts").exists()
    asked = p.cli("hosts", "trust", "--env", "remote")
    assert asked.code == 1 and "confirm with --yes" in asked.err and expected in asked.out
    trusted = p.cli("hosts", "trust", "--env", "remote", "--fingerprint", expected, "--yes")
    assert trusted.code == 0, trusted.err
    known = (tmp_path / "known_hosts").read_text()
    assert known.startswith(f"[127.0.0.1]:{server.port} ssh-ed25519 ")
    assert (tmp_path / "known_hosts").stat().st_mode & 0o077 == 0
    checked = p.cli("hosts", "check", "--env", "remote")
    assert (
        f"root@127.0.0.1:{server.port}: connected" in checked.out or "the Docker engine does not answer" in checked.err
    )
    if checked.code == 0:  # the same, as data
        data = json.loads(p.cli("hosts", "check", "--env", "remote", "--json").out)
        assert data["host"] == f"root@127.0.0.1:{server.port}" and data["engine"], data


def test_a_changed_host_key_is_always_refused(tmp_path: Path, server: Sshd) -> None:
    p = remote_project(tmp_path, server)
    assert p.cli("hosts", "trust", "--env", "remote", "--yes").code == 0
    before = (tmp_path / "known_hosts").read_text()
    server.new_host_key()
    changed = p.cli("hosts", "check", "--env", "remote")
    assert changed.code == 1 and len(changed.err.splitlines()) == 1
    assert "the host key CHANGED" in changed.err and "refused" in changed.err
    again = p.cli("hosts", "trust", "--env", "remote", "--yes")
    assert again.code == 1 and "CHANGED" in again.err
    assert (tmp_path / "known_hosts").read_text() == before


def test_a_wrong_user_key_is_refused(tmp_path: Path, server: Sshd) -> None:
    stranger = keygen(tmp_path / "stranger")
    p = remote_project(tmp_path, server, key=stranger)
    assert p.cli("hosts", "trust", "--env", "remote", "--yes").code == 0
    denied = p.cli("hosts", "check", "--env", "remote")
    assert denied.code == 1
    assert denied.err == f"error: root@127.0.0.1:{server.port}: authentication failed as root (key {stranger})\n"


def test_refused_and_silent_hosts_are_one_line_errors(tmp_path: Path, server: Sshd) -> None:
    closed = free_port()
    p = remote_project(tmp_path, server, port=closed)
    refused = p.cli("hosts", "check", "--env", "remote")
    assert refused.code == 1 and refused.err == f"error: root@127.0.0.1:{closed}: connection refused\n"
    with socket.socket() as silent:  # accepts, never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        mute = silent.getsockname()[1]
        p = remote_project(tmp_path, server, port=mute)
        timed_out = p.cli("hosts", "check", "--env", "remote")
    assert timed_out.code == 1 and len(timed_out.err.splitlines()) == 1
    assert timed_out.err == f"error: root@127.0.0.1:{mute}: no SSH answer within 2s (is it an SSH server?)\n"


def _target(server: Sshd, tmp_path: Path) -> SshTarget:
    known = tmp_path / "known_hosts"
    target = SshTarget("root", "127.0.0.1", server.port, server.user_key, known, "mfe", 5)
    ssh.trust(target, ssh.scan(target))
    return target


def test_commands_run_remotely_with_variables_kept_out_of_argv(tmp_path: Path, server: Sshd) -> None:
    target = _target(server, tmp_path)
    secret = "canary-remote-secret-5d1e"
    with ssh.session(target, "remote") as runner:
        cmd = Command(
            # Every argv holding the value but grep's own (which ps may or may not catch: they start together).
            ("sh", "-c", 'printf "%s|" "$TOKEN"; ps -eo args | grep -F -- "$TOKEN" | grep -cv "^grep " || true'),
            env={"TOKEN": Secret(secret)},
            cwd=tmp_path,
        )
        assert secret not in ssh.remote_line(cmd)
        done = runner.run(cmd, timeout=30)
        value, _, seen_in_ps = done.stdout.partition("|")
        assert done.returncode == 0 and value == secret
        assert seen_in_ps.strip() == "0"  # no process's argv holds it
        assert runner.run(Command(("sh", "-c", "exit 7")), timeout=30).returncode == 7
        # A stream both ways: 3 MB through `cat` on the remote host, concurrently written and read.
        data = os.urandom(3 << 20)
        proc = runner.spawn(Command(("cat",)), stdin=True)
        assert proc.stdin is not None and proc.stdout is not None
        writer = threading.Thread(target=lambda: (proc.stdin.write(data), proc.stdin.close()))  # type: ignore[union-attr]
        writer.start()
        echoed = proc.stdout.read()
        writer.join()
        assert proc.wait() == 0 and hashlib.sha256(echoed).digest() == hashlib.sha256(data).digest()
    with ExitStack() as resources:  # a relative remote folder is under the remote user's home
        where = ssh.open_host(target, "remote", resources)
        assert where.remote and where.root == PurePosixPath("/root/mfe")


@pytest.mark.parametrize("max_sessions", [2, 10])
def test_concurrent_commands_beyond_the_hosts_session_limit(tmp_path: Path, max_sessions: int) -> None:
    """A backup runs a psql session and a pg_dump per database at once, plus globals: more channels than
    OpenSSH allows on one connection (MaxSessions, 10 by default; a host may set fewer). They all run."""
    with sshd(tmp_path / "sshd", max_sessions=max_sessions) as server:
        target = _target(server, tmp_path)
        with ExitStack() as resources:
            where = ssh.open_host(target, "remote", resources)  # its SFTP channel counts too
            runner = where.runner
            assert isinstance(runner, ssh.SshRunner)
            with ThreadPoolExecutor(12) as pool:  # all at once, like a backup
                held = list(
                    pool.map(lambda i: runner.spawn(Command(("sh", "-c", f"cat; echo {i}")), stdin=True), range(12))
                )
            codes = []
            for i, proc in enumerate(held):
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write(b"x\n")
                proc.stdin.close()
                assert proc.stdout.read() == f"x\n{i}\n".encode()  # closing stdin sent EOF
                codes.append(proc.wait())
            assert codes == [0] * 12
            # 12 channels open together: 8 + 4 on two connections; or 1 beside SFTP, then 2 per connection.
            if max_sessions == 10:
                assert runner.connections == 2
            else:
                assert 1 + 6 <= runner.connections <= 12
            # Ended commands free their channels: a second round needs no new connection.
            count = runner.connections
            assert all(runner.run(Command(("true",)), timeout=30).returncode == 0 for _ in range(20))
            assert runner.connections == count
            assert where.files.read_text(PurePosixPath("/etc/hostname")) is not None  # SFTP still answers


def test_a_lost_connection_is_a_one_line_error(tmp_path: Path, server: Sshd) -> None:
    target = _target(server, tmp_path)
    with ssh.session(target, "remote") as runner:
        assert runner.run(Command(("true",)), timeout=30).returncode == 0
        assert server.proc is not None
        subprocess.run(["pkill", "-KILL", "-P", str(server.proc.pid)], check=True)  # the connection's sshd
        with pytest.raises(ssh.RemoteError, match=r"^root@127\.0\.0\.1:\d+: (the connection was lost|cannot )"):
            for _ in range(50):  # the transport notices within a few reads
                runner.run(Command(("true",)), timeout=30)


def test_up_to_an_unknown_or_unreachable_host_changes_nothing(tmp_path: Path, server: Sshd) -> None:
    p = remote_project(tmp_path, server)
    unknown = p.cli("up", "--env", "remote")
    assert unknown.code == 1 and len(unknown.err.splitlines()) == 1
    assert "unknown host key" in unknown.err and "mfe-deploy hosts trust --env remote" in unknown.err
    local = p.cli("up", "--env", "remote", "--runtime", "local")
    assert local.code == 1 and "remote hosts run the docker runtime" in local.err
    closed = remote_project(tmp_path, server, port=free_port())
    refused = closed.cli("status", "--env", "remote")
    assert refused.code == 1 and refused.err.endswith(": connection refused\n")
    # Nothing was written on either side: no bundle, no state, no remote folder.
    assert not (p.root / ".mfe").exists()
    assert not (tmp_path / "mfe-deploy").exists() and not Path("/root/mfe-deploy/universal-mfe-remote").exists()


def test_remote_files_over_sftp(tmp_path: Path, server: Sshd) -> None:
    from mfe_deploy.remote.sftp import SftpFiles

    target = _target(server, tmp_path)
    client = ssh.connect(target, "remote")
    try:
        files = SftpFiles(client.open_sftp())
        root = tmp_path / "host" / "env"
        assert files.read_text(root / "missing") is None and files.mode(root / "missing") is None
        files.write_atomic(root / "env" / "auth.env", "JWT_SECRET=x\n", 0o600)
        assert (root / "env" / "auth.env").read_text() == "JWT_SECRET=x\n"
        assert (root / "env" / "auth.env").stat().st_mode & 0o777 == 0o600
        assert (root / "env").stat().st_mode & 0o777 == 0o700
        files.write_atomic(root / "env" / "auth.env", "JWT_SECRET=y\n", 0o600)  # replaced in place
        assert files.read_text(root / "env" / "auth.env") == "JWT_SECRET=y\n"
        assert [p.name for p in (root / "env").iterdir()] == ["auth.env"]  # no temporary file left
        assert files.create_exclusive(root / "state" / "deploy.lock", "me") is True
        assert files.create_exclusive(root / "state" / "deploy.lock", "you") is False
        assert (root / "state" / "deploy.lock").read_text() == "me"
        files.append_line(root / "state" / "log", "one\n")
        files.append_line(root / "state" / "log", "two\n")
        assert files.read_text(root / "state" / "log") == "one\ntwo\n"
        files.unlink(root / "state" / "deploy.lock")
        files.unlink(root / "state" / "deploy.lock")  # gone already: not an error
        assert files.listdir(root / "state") == ["log"]
        data = os.urandom(3 << 20)
        (tmp_path / "blob").write_bytes(data)
        files.put(tmp_path / "blob", root / "blob", 0o600)
        digest, size = files.get(root / "blob", tmp_path / "blob-back")
        assert size == len(data) and digest == hashlib.sha256(data).hexdigest()
        assert (tmp_path / "blob-back").stat().st_mode & 0o777 == 0o600
    finally:
        client.close()


def test_images_are_shipped_only_when_the_other_engine_lacks_them() -> None:
    from mfe_deploy.images import plan_ship

    here = {"a:1": "sha256:aa", "b:1": "sha256:bb", "c:1": "sha256:cc", "gone:1": ""}
    there = {"a:1": "sha256:aa", "b:1": "sha256:old", "c:1": ""}
    assert plan_ship(here, there) == ["b:1", "c:1"]  # same image stays, another image or none is sent
    assert plan_ship(here, dict(here)) == []


def test_a_remote_manifest_cannot_name_a_file_outside_the_local_backups_folder(tmp_path: Path, server: Sshd) -> None:
    """Finding 1 (high): a compromised host's manifest named `../../<anything>` with a matching SHA-256, and
    `backup download` wrote it there (a .pth in the venv ran as root at the next Python start)."""
    from mfe_deploy.backups.store import BackupError, Store
    from mfe_deploy.remote.backups import RemoteBackups
    from tests.test_trust_boundaries import BACKUP_ID, manifest

    target = _target(server, tmp_path)
    target = SshTarget(
        target.user, target.host, target.port, target.identity_file, target.known_hosts, str(tmp_path / "host"), 5
    )
    planted = tmp_path / "host" / "backups" / BACKUP_ID
    planted.mkdir(parents=True)
    (planted / "zz.pth").write_bytes(b"dump")
    (planted / "manifest.json").write_text(json.dumps(manifest(BACKUP_ID, "../../zz.pth")))
    store = Store(tmp_path / "local" / "backups" / "remote")
    with ExitStack() as resources:
        remote = RemoteBackups(ssh.open_host(target, "remote", resources))
        [entry] = remote.scan()
        assert not entry.complete and "not a plain file name" in entry.problem
        with pytest.raises(BackupError, match="no complete backup"):
            remote.get(None)
        parsed = Manifest.from_json(json.dumps(manifest(BACKUP_ID, "auth.dump")))
        outside = dataclasses.replace(parsed.files["auth.dump"], name="../../zz.pth")
        forged = Entry(BACKUP_ID, planted, dataclasses.replace(parsed, files={outside.name: outside}))
        with pytest.raises(MfeError, match="not a plain file name"):
            remote.download(forged, store)  # past the manifest's own check, the download still confines it
    assert not (tmp_path / "local" / "backups" / "zz.pth").exists()
    assert not (store.root / f"{BACKUP_ID}.partial").exists()
