"""`migrate lint` over a table of good and bad migrations, the bundled ones, and the CLI's exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mfe_deploy.ops.migration_lint import lint, statements
from tests.conftest import REPO

CASES = [
    # (sql, the rules found)
    ("CREATE TABLE t (id int PRIMARY KEY, name text NOT NULL);\nCREATE INDEX t_name ON t (name);", []),
    ("ALTER TABLE users ADD COLUMN nickname text;", []),
    ("ALTER TABLE users ADD COLUMN active boolean NOT NULL DEFAULT true;", []),
    ("CREATE INDEX CONCURRENTLY users_email ON users (email);", []),
    ("ALTER TABLE users ADD CONSTRAINT c CHECK (email IS NOT NULL) NOT VALID;", []),
    ("-- DROP TABLE users; in a comment\nSELECT 'DROP TABLE users;';", []),
    ("DROP TABLE users;", ["drop-table"]),
    ("ALTER TABLE users DROP COLUMN nickname;", ["drop-column"]),
    ("ALTER TABLE users RENAME COLUMN email TO mail;", ["rename"]),
    ("ALTER TABLE users RENAME TO people;", ["rename"]),
    ("ALTER TABLE payments ALTER COLUMN amount TYPE numeric;", ["type-change"]),
    ("ALTER TABLE payments ALTER amount SET DATA TYPE numeric;", ["type-change"]),
    ("ALTER TABLE users ALTER COLUMN nickname SET NOT NULL;", ["set-not-null"]),
    ("ALTER TABLE users ADD COLUMN tier text NOT NULL;", ["not-null-without-default"]),
    ("CREATE INDEX users_created ON users (created_at);", ["index-locks-writes"]),
    ("CREATE UNIQUE INDEX IF NOT EXISTS u ON ONLY users (email);", ["index-locks-writes"]),
    ("TRUNCATE event_outbox;", ["truncate"]),
    ("-- mfe: compatible\nALTER TABLE users ADD COLUMN nickname text;", []),
    ("-- mfe: compatible\nALTER TABLE users DROP COLUMN nickname;", ["drop-column", "compatible-header"]),
    # an index locks, but old code keeps working: not a reason to refuse the header
    ("-- mfe: compatible\nCREATE INDEX users_created ON users (created_at);", ["index-locks-writes"]),
]


@pytest.mark.parametrize(("sql", "rules"), CASES)
def test_lint_table(sql: str, rules: list[str]) -> None:
    assert [f.rule for f in lint("m.sql", sql)] == rules


def test_findings_name_the_line_of_their_statement() -> None:
    sql = "CREATE TABLE a (id int);\n\n/* two\nlines */\nALTER TABLE users\n  DROP COLUMN x;\n"
    (finding,) = lint("services/auth/migrations/0003_x.sql", sql)
    assert str(finding) == (
        "services/auth/migrations/0003_x.sql:5: drop-column: drops a column the running code may read"
    )


def test_statements_keep_quoted_and_dollar_quoted_text_whole() -> None:
    sql = "SELECT ';';\nDO $$ BEGIN PERFORM 1; END $$;\nSELECT 2"
    assert statements(sql) == [(1, "SELECT ';'"), (2, "DO $$ BEGIN PERFORM 1; END $$"), (3, "SELECT 2")]


def _lint_cli(cwd: Path, *paths: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "mfe_deploy", "-C", str(cwd), "migrate", "lint", *paths]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_the_bundled_migrations_are_clean() -> None:
    done = _lint_cli(REPO)
    assert (done.returncode, done.stderr) == (0, ""), done.stdout + done.stderr
    assert "nothing found" in done.stdout


def test_a_breaking_migration_exits_1_and_down_migrations_are_not_linted(tmp_path: Path) -> None:
    folder = tmp_path / "services" / "auth" / "migrations"
    folder.mkdir(parents=True)
    (folder / "0003_rename.sql").write_text("-- mfe: compatible\nALTER TABLE users RENAME COLUMN a TO b;\n")
    (folder / "0003_rename.down.sql").write_text("ALTER TABLE users RENAME COLUMN b TO a;\n")
    done = _lint_cli(tmp_path)
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        "services/auth/migrations/0003_rename.sql:2: rename: renames what the running code names: add, copy, "
        "then drop later",
        "services/auth/migrations/0003_rename.sql:1: compatible-header: declared compatible, but old code breaks "
        "on it (rename)",
    ]
    assert "2 finding(s) in 1 of 2 migration(s)" in done.stderr
    as_data = _lint_cli(tmp_path, "--json")  # the same findings as data, still exit 1 (a CI gate)
    assert as_data.returncode == 1
    found = json.loads(as_data.stdout)
    assert found["files"] == 2
    assert [(f["line"], f["rule"], f["breaking"]) for f in found["findings"]] == [
        (2, "rename", True),
        (1, "compatible-header", True),
    ]
    assert _lint_cli(tmp_path, "nowhere").returncode == 2
