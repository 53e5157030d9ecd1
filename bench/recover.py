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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))  # the tests' real servers and project helpers

from tests.local_project import make_local_project  # noqa: E402
from tests.lost_host import elsewhere, lose_and_recover  # noqa: E402
from tests.servers import s3_server  # noqa: E402

ENV = "brc"
BUCKET = "bench-recover"


def environment_yaml(endpoint: str) -> str:
    return (
        f"backup:\n  offsite:\n    endpoint: {endpoint}\n    bucket: {BUCKET}\n    prefix: bench/\n"
        "    access_key_id: ${BRC_S3_KEY}\n    secret_access_key: ${BRC_S3_SECRET}\n    ca_file: offsite-ca.pem\n"
    )


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
        other = elsewhere(first, Path(tmp) / "elsewhere", "offsite-ca.pem")
        try:
            got = lose_and_recover(first, other, args.write)
        finally:
            other.cli("down", "--env", ENV, "--volumes", "--yes")
    if got.recover.returncode != 0:
        raise SystemExit(f"mfe-deploy recover failed:\n{got.recover.stdout}{got.recover.stderr}")
    oldest = got.lost_at - min(t for _, t in got.missing) if got.missing else 0.0
    lost = f"{len(got.missing)} lost (the last {oldest:.1f} s)"
    print(f"writes: {len(got.acked)} acknowledged in {args.write:.0f} s, {lost}")
    print(f"recovery point: {got.point:.1f} s at archive_timeout {args.archive_timeout} s (goal <= 35 s at 30 s)")
    print(f"recovery time: {got.seconds:.1f} s (goal <= 180 s)")
    print(f"recover said: {got.recover.stdout.strip()}")


if __name__ == "__main__":
    main()
