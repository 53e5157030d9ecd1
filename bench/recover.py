"""A host lost under writes, recovered elsewhere from the offsite copy of its WAL: the recovery point and the
recovery time of `mfe-deploy recover` with database.pitr and backup.offsite (local runtime, real PostgreSQL,
pgBackRest, and a real S3 server: SeaweedFS from its wheel on loopback, over HTTPS as pgBackRest requires).

A writer posts payments through the gateway one after another and records when each was acknowledged; after
--write seconds every process of the stack is killed at once (SIGKILL) and its project folder, cluster,
pgBackRest repository, backups and state are deleted. `recover` then runs in a second, empty project folder
that holds the environment files, the store's CA and the secrets alone. Printed: writes acknowledged and lost,
the recovery point (the loss minus the newest acknowledged write that came back; the oldest lost write's age
beside it), and the recovery time (recover's whole run). Goals: recovery point <= 35 s at an archive_timeout
of 30 s, recovery time <= 3 minutes.

    .venv/bin/python bench/recover.py [--archive-timeout 30] [--write 75]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))  # the tests' real servers and project helpers

from tests.local_project import LocalProject, make_local_project  # noqa: E402
from tests.lost_host import lose_the_host, write_payments  # noqa: E402
from tests.servers import s3_server  # noqa: E402

ENV = "brc"
BUCKET = "bench-recover"


def environment_yaml(endpoint: str) -> str:
    return (
        f"backup:\n  offsite:\n    endpoint: {endpoint}\n    bucket: {BUCKET}\n    prefix: bench/\n"
        "    access_key_id: ${BRC_S3_KEY}\n    secret_access_key: ${BRC_S3_SECRET}\n    ca_file: offsite-ca.pem\n"
    )


def ok(p: LocalProject, *args: str) -> str:
    done = p.cli(*args, "--env", ENV, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"mfe-deploy {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive-timeout", type=int, default=30, help="database.pitr.archive_timeout, seconds")
    parser.add_argument("--write", type=float, default=75, help="seconds of writes before the host is lost")
    args = parser.parse_args()
    with s3_server(BUCKET, https=True) as s3, tempfile.TemporaryDirectory(prefix="mfe-bench-recover-") as tmp:
        environ = {"BRC_S3_KEY": s3.access_key, "BRC_S3_SECRET": s3.secret_key}
        yaml = environment_yaml(s3.endpoint)
        first = make_local_project(
            Path(tmp) / "lost", ENV, layout="per-service", extra_yaml=yaml, extra_environ=environ
        )
        path = first.root / "environments" / f"{ENV}.yaml"
        pitr = f"database:\n  pitr:\n    archive_timeout: {args.archive_timeout}s\n"
        path.write_text(path.read_text().replace("database:\n", pitr, 1))
        shutil.copy(s3.ca_file, first.root / "offsite-ca.pem")
        elsewhere = LocalProject(Path(tmp) / "elsewhere", first.ports, first.environ, ENV, first.layout)
        elsewhere.root.mkdir()
        shutil.copytree(first.root / "environments", elsewhere.root / "environments")
        shutil.copy(s3.ca_file, elsewhere.root / "offsite-ca.pem")
        lost = False
        try:
            ok(first, "up")
            acked: list[tuple[str, float]] = []
            stop = threading.Event()
            writer = threading.Thread(target=write_payments, args=(first, stop, acked), daemon=True)
            writer.start()
            time.sleep(args.write)
            lost_at = lose_the_host(first)
            lost = True
            stop.set()
            writer.join(timeout=30)
            began = time.monotonic()
            said = ok(elsewhere, "recover", "--yes")
            took = time.monotonic() - began
            database, schema = elsewhere.places()["payments"]
            present = set(elsewhere.psql(database, f"SELECT idempotency_key FROM {schema}.payments").split())
        finally:
            if not lost:
                first.cli("down", "--env", ENV, "--volumes", "--yes")
            elsewhere.cli("down", "--env", ENV, "--volumes", "--yes")
    kept = [t for key, t in acked if key in present]
    missing = [t for key, t in acked if key not in present]
    point = lost_at - max(kept) if kept else float("inf")
    oldest = lost_at - min(missing) if missing else 0.0
    print(f"writes: {len(acked)} acknowledged in {args.write:.0f} s, {len(missing)} lost (the last {oldest:.1f} s)")
    print(f"recovery point: {point:.1f} s at archive_timeout {args.archive_timeout} s (goal <= 35 s at 30 s)")
    print(f"recovery time: {took:.1f} s (goal <= 180 s)")
    print(f"recover said: {said.strip()}")


if __name__ == "__main__":
    main()
