"""`mfe-deploy backup` against sequential raw `pg_dump -Fc` of the four databases, and `mfe-deploy restore`
against raw `pg_restore` of the same dumps, on the same data in the same run (local runtime, real
PostgreSQL). Goal: backup <= 0.8x of the sequential dumps, thanks to concurrency.

The data: the services' tables plus a `bench_rows` table of --rows rows in each of the four databases
(default 250,000 each: 1,000,000 rows, 25 MB of dumps). Rounds alternate so that noise hits both sides.
The fixed cost of the CLI (about 0.3 s to start, plus a psql session per database for the snapshot and
the counts) weighs more on small data: run with --rows 50000 to see it.

What each side does:
- raw dump: `pg_dump -Fc -f FILE` per database, one after the other.
- raw parallel dump (reference, not a goal): the same four started together: the ceiling concurrency
  allows on this machine.
- mfe-deploy backup: the whole CLI: snapshot sessions and exact row counts, the four dumps plus the
  globals concurrently, SHA-256 of every byte, fsync, manifest.
- raw restore: `pg_restore --clean --if-exists --single-transaction -d DB FILE` per database, in turn.
- mfe-deploy restore: the whole CLI: checksums, archive checks, a pre-restore backup, the services
  stopped, four concurrent one-transaction restores, row counts checked, the services started healthy.

With --offsite, every backup also goes to a real S3 server (SeaweedFS from its wheel, on loopback), and
the raw side uploads its four dumps with a plain boto3 `upload_file` each, after them, in turn: goal
backup plus upload <= 1.0x of pg_dump plus upload_file.

    .venv/bin/python bench/backup.py [--rounds 3] [--rows 100000] [--offsite]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))  # local_up's project helper

sys.path.insert(0, str(REPO))  # the tests' real S3 server (SeaweedFS)

from tests.servers import S3, s3_server  # noqa: E402

from local_up import project  # noqa: E402
from mfe_deploy.binaries import find_pg  # noqa: E402

DATABASES = ("auth_db", "payments_db", "admin_db", "profile_db")


def cli(root: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "mfe_deploy", "-C", str(root), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"mfe-deploy {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=250_000, help="rows of bench_rows per database")
    parser.add_argument("--offsite", action="store_true", help="upload every backup to a local S3 server")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        s3 = stack.enter_context(s3_server("bench-backups")) if args.offsite else None
        bench(args, s3)


def bench(args: argparse.Namespace, s3: S3 | None) -> None:
    pg_bin = find_pg(os.environ.get("MFE_PG_BIN"))
    base = Path(tempfile.mkdtemp(prefix="mfe-bench-backup-"))
    root, ports = project(base, database="  layout: per-service\n  name: null\n")
    if s3 is not None:
        with (root / "environments" / "bench.yaml").open("a") as f:
            f.write(
                f"backup:\n  offsite:\n    endpoint: {s3.endpoint}\n    bucket: bench-backups\n"
                "    access_key_id: ${BENCH_S3_KEY}\n    secret_access_key: ${BENCH_S3_SECRET}\n"
            )
        os.environ.update(BENCH_S3_KEY=s3.access_key, BENCH_S3_SECRET=s3.secret_key)
    env = {**os.environ, "PGPASSWORD": "postgres"}
    conn = ["-h", "127.0.0.1", "-p", str(ports["postgres"]), "-U", "postgres"]

    def run(*argv: str) -> None:
        done = subprocess.run(argv, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {done.stderr}")

    raw_dir = base / "raw"
    raw_dir.mkdir()
    try:
        cli(root, "up", "--env", "bench")
        for db in DATABASES:
            run(
                str(pg_bin / "psql"),
                *conn,
                "-d",
                db,
                "-q",
                "-c",
                "CREATE TABLE bench_rows AS SELECT g AS id, md5(g::text) AS v, now() AS at, g % 97 AS k "
                f"FROM generate_series(1, {args.rows}) g; ALTER TABLE bench_rows ADD PRIMARY KEY (id)",
            )
        times: dict[str, list[float]] = {
            "raw dump": [],
            "raw parallel": [],
            "mfe backup": [],
            "raw restore": [],
            "mfe restore": [],
        }
        sizes: dict[str, int] = {}
        backup_id = ""
        for n in range(args.rounds):
            order = ["raw", "mfe"] if n % 2 == 0 else ["mfe", "raw"]
            for side in order:
                started = time.perf_counter()
                if side == "raw":
                    for db in DATABASES:
                        run(str(pg_bin / "pg_dump"), *conn, "-Fc", "-f", str(raw_dir / f"{db}.dump"), "-d", db)
                    if s3 is not None:
                        client = s3.client()
                        for db in DATABASES:
                            client.upload_file(str(raw_dir / f"{db}.dump"), "bench-backups", f"raw/{n}/{db}.dump")
                    times["raw dump"].append(time.perf_counter() - started)
                    sizes["raw"] = sum((raw_dir / f"{db}.dump").stat().st_size for db in DATABASES)
                    started = time.perf_counter()
                    procs = [
                        subprocess.Popen(
                            [str(pg_bin / "pg_dump"), *conn, "-Fc", "-f", str(raw_dir / f"{db}.p"), "-d", db], env=env
                        )
                        for db in DATABASES
                    ]
                    if any(p.wait() for p in procs):
                        raise RuntimeError("a parallel pg_dump failed")
                    times["raw parallel"].append(time.perf_counter() - started)
                else:
                    out = json.loads(cli(root, "backup", "--env", "bench", "--json"))
                    times["mfe backup"].append(time.perf_counter() - started)
                    backup_id, sizes["mfe"] = out["id"], out["size"]
            for side in order:
                started = time.perf_counter()
                if side == "raw":
                    for db in DATABASES:
                        run(
                            str(pg_bin / "pg_restore"),
                            *conn,
                            "--clean",
                            "--if-exists",
                            "--single-transaction",
                            "-d",
                            db,
                            str(raw_dir / f"{db}.dump"),
                        )
                    times["raw restore"].append(time.perf_counter() - started)
                else:
                    cli(root, "restore", "--env", "bench", backup_id, "--yes")
                    times["mfe restore"].append(time.perf_counter() - started)
        rows = json.loads(cli(root, "backup", "list", "--env", "bench", "--json"))[-1]["rows"]
        med = {k: statistics.median(v) for k, v in times.items()}
        print(
            f"data: {rows:,} rows in 4 databases; dumps {sizes['raw'] / 1e6:.1f} MB raw, {sizes['mfe'] / 1e6:.1f} MB "
            f"mfe (+ globals); {args.rounds} rounds, medians"
        )
        for name, values in times.items():
            print(f"  {name:12s} {med[name]:6.2f} s   ({', '.join(f'{v:.2f}' for v in values)})")
        if s3 is not None:
            print(
                f"backup + offsite upload / (sequential pg_dump + boto3 upload_file): "
                f"{med['mfe backup'] / med['raw dump']:.2f}x  (goal <= 1.0x; the raw side's dumps: {s3.endpoint})"
            )
        else:
            print(
                f"backup  / sequential pg_dump:  {med['mfe backup'] / med['raw dump']:.2f}x  (goal <= 0.8x; "
                f"four raw pg_dump at once: {med['raw parallel'] / med['raw dump']:.2f}x)"
            )
        print(
            f"restore / sequential pg_restore: {med['mfe restore'] / med['raw restore']:.2f}x  "
            "(includes its checks, a pre-restore backup and the services' restart)"
        )
    finally:
        subprocess.run(
            [sys.executable, "-m", "mfe_deploy", "-C", str(root), "down", "--env", "bench", "--volumes", "--yes"],
            capture_output=True,
        )
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
