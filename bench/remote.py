"""Remote targets: what going over SSH costs, measured side by side in one run against a real sshd on
loopback and a second Docker engine standing in for the remote host's.

- a command's round trip: a channel on the open connection vs a local process (`true`, N times);
- a bundle file written atomically: SFTP vs this machine's filesystem;
- shipping an image: `docker save | docker load` over the SSH channel (what `up` does) vs the same two
  commands joined by a local pipe (the floor: no network at all).

Needs root, openssh-server, dockerd (scripts/setup-system, scripts/setup-docker).

    .venv/bin/python bench/remote.py [--rounds 3] [--image-mb 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.engines import second_engine  # noqa: E402
from tests.sshd import sshd  # noqa: E402

from mfe_deploy import images  # noqa: E402
from mfe_deploy.exec.command import Command  # noqa: E402
from mfe_deploy.exec.host import LocalFiles  # noqa: E402
from mfe_deploy.exec.process import LocalProcess  # noqa: E402
from mfe_deploy.remote import ssh  # noqa: E402
from mfe_deploy.remote.sftp import SftpFiles  # noqa: E402
from mfe_deploy.remote.target import SshTarget  # noqa: E402


def per_call(fn: object, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn()  # type: ignore[operator]
    return (time.perf_counter() - started) / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--image-mb", type=int, default=200)
    args = parser.parse_args()
    tag = "mfe-bench/ship:1"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        blob = folder / "rootfs"
        blob.mkdir()
        (blob / "data.bin").write_bytes(os.urandom(args.image_mb << 20))  # incompressible, like real layers
        tar = subprocess.run(["tar", "-C", str(blob), "-c", "."], capture_output=True, check=True).stdout
        subprocess.run(["docker", "import", "-", tag], input=tar, capture_output=True, check=True)
        with second_engine() as other, sshd(folder / "sshd", setenv=f"DOCKER_HOST={other}") as server:
            target = SshTarget("root", "127.0.0.1", server.port, server.user_key, folder / "known", "mfe", 5)
            ssh.trust(target, ssh.scan(target))
            client = ssh.connect(target, "bench")
            try:
                there = ssh.SshRunner(client, target)
                here = LocalProcess()
                true = Command(("true",))
                remote_run = per_call(lambda: there.run(true, timeout=30), 30)
                local_run = per_call(lambda: here.run(true, timeout=30), 30)
                # The reference: OpenSSH's client on a multiplexed connection (the session cost is sshd's).
                mux = [
                    "ssh",
                    "-p",
                    str(server.port),
                    "-i",
                    str(server.user_key),
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    f"UserKnownHostsFile={folder / 'known'}",
                    "-o",
                    "ControlMaster=auto",
                    "-o",
                    f"ControlPath={folder / 'mux'}",
                    "-o",
                    "ControlPersist=60",
                    "root@127.0.0.1",
                ]
                subprocess.run([*mux, "true"], capture_output=True, check=True)
                openssh_run = per_call(lambda: subprocess.run([*mux, "true"], capture_output=True, check=True), 30)
                subprocess.run([*mux[:-1], "-O", "exit", "root@127.0.0.1"], capture_output=True)
                sftp, local = SftpFiles(client.open_sftp()), LocalFiles()
                text = "X" * 4096
                remote_write = per_call(lambda: sftp.write_atomic(folder / "r" / "f.env", text, 0o600), 30)
                local_write = per_call(lambda: local.write_atomic(folder / "l" / "f.env", text, 0o600), 30)
                ratio = remote_run / openssh_run
                print(
                    f"command round trip: paramiko channel {remote_run * 1000:.1f} ms = {ratio:.2f}x "
                    f"OpenSSH's multiplexed client ({openssh_run * 1000:.1f} ms); a local process "
                    f"{local_run * 1000:.1f} ms"
                )
                print(
                    f"atomic 4 KB file write: sftp {remote_write * 1000:.1f} ms, local {local_write * 1000:.1f} ms "
                    f"({remote_write / local_write:.2f}x)"
                )
                over_ssh, piped = [], []
                for _ in range(args.rounds):
                    for way in ("ssh", "pipe"):
                        subprocess.run(["docker", "-H", other, "image", "rm", tag], capture_output=True)
                        started = time.perf_counter()
                        if way == "ssh":
                            images.ship([tag], here, there)
                            over_ssh.append(time.perf_counter() - started)
                        else:
                            save = subprocess.Popen(["docker", "save", tag], stdout=subprocess.PIPE)
                            subprocess.run(
                                ["docker", "-H", other, "load", "-q"],
                                stdin=save.stdout,
                                capture_output=True,
                                check=True,
                            )
                            save.wait()
                            piped.append(time.perf_counter() - started)
                s, p = statistics.median(over_ssh), statistics.median(piped)
                mb = args.image_mb
                print(
                    f"ship a {mb} MB image: over ssh {s:.2f} s ({mb / s:.0f} MB/s), local pipe {p:.2f} s "
                    f"({mb / p:.0f} MB/s): {s / p:.2f}x (medians of {args.rounds})"
                )
            finally:
                client.close()
                subprocess.run(["docker", "image", "rm", tag], capture_output=True)


if __name__ == "__main__":
    main()
