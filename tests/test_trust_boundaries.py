"""Names from outside never leave their folder: a backup's manifest (a remote host's above all), a
listing, a bundle's index. Each hostile name is refused where it enters, before it becomes a path."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from mfe_deploy import bundle
from mfe_deploy.backups.store import Manifest, Store, read_entry
from mfe_deploy.exec.host import LocalFiles
from mfe_deploy.exec.names import UnsafeName, child, is_bare, is_relative
from mfe_deploy.render import Bundle, BundleFile

HOSTILE = ["..", ".", "../x", "/abs", "a/b", "a\x00b", "x" * 300, "", "a\nb", "a\rb", "a\u2028b", "a\x85b"]
BACKUP_ID = "20261206T101500Z-ab12"


def manifest(backup_id: str, name: str, data: bytes = b"dump") -> dict[str, object]:
    entry = {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "kind": "pg_dump-custom"}
    return {
        "id": backup_id,
        "env": "staging",
        "kind": "manual",
        "started_at": "2026-12-06T10:15:00+00:00",
        "finished_at": "2026-12-06T10:15:01+00:00",
        "postgresql": {},
        "layout": "per-service",
        "files": {name: entry},
        "databases": {},
        "release": None,
        "tool": {},
        "format": 1,
    }


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_name_is_neither_bare_nor_a_child(name: str) -> None:
    assert not is_bare(name)
    with pytest.raises(UnsafeName, match="not a plain file name"):
        child(Path("/backups"), name, "a file")


@pytest.mark.parametrize("name", ["auth.dump", "globals.sql", BACKUP_ID, "a..b", "x" * 255])
def test_a_plain_name_is_a_child_of_its_folder(name: str) -> None:
    assert child(Path("/backups"), name, "a file") == Path("/backups") / name


@pytest.mark.parametrize("name", HOSTILE)
def test_a_manifest_naming_a_hostile_file_or_id_is_unreadable(tmp_path: Path, name: str) -> None:
    for text in (manifest(BACKUP_ID, name), manifest(name, "auth.dump")):
        with pytest.raises(ValueError, match="not a plain file name"):
            Manifest.from_json(json.dumps(text))
    folder = tmp_path / BACKUP_ID
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(manifest(BACKUP_ID, name)))
    entry = read_entry(LocalFiles(), tmp_path, BACKUP_ID)
    assert not entry.complete and "not a plain file name" in entry.problem
    assert Store(tmp_path).complete() == []


def test_a_manifest_whose_id_is_not_its_folder_is_not_a_backup(tmp_path: Path) -> None:
    """The id is the rename target of a download: another folder's id would land elsewhere."""
    folder = tmp_path / BACKUP_ID
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(manifest("20261206T101501Z-cd34", "auth.dump")))
    entry = read_entry(LocalFiles(), tmp_path, BACKUP_ID)
    assert not entry.complete and "is not its folder's" in entry.problem


@pytest.mark.parametrize(
    "name", ["../../victim.txt", "/tmp/victim.txt", "a/../../../victim.txt", "x\r/../../../victim.txt"]
)
def test_a_planted_index_line_never_removes_a_file_outside_the_bundle(tmp_path: Path, name: str) -> None:
    """Finding 6: `render --out out` (and `down --volumes`) removed every file the index named."""
    out, victim = tmp_path / "deep" / "out", tmp_path / "victim.txt"
    out.mkdir(parents=True)
    victim.write_text("keep me")
    absolute = name.replace("/tmp/victim.txt", str(victim))
    (out / ".mfe-files").write_text(f"{absolute}\nold.conf\n")
    (out / "old.conf").write_text("an earlier render's")
    changed = bundle.write(Bundle({"compose.yml": BundleFile("services: {}\n")}), out)
    assert victim.read_text() == "keep me"
    assert "old.conf" in changed and not (out / "old.conf").exists()  # a real leftover still goes
    (out / ".mfe-files").write_text(f"{absolute}\n")
    bundle.remove(out)
    assert victim.read_text() == "keep me"


@pytest.mark.parametrize(
    ("path", "ok"),
    [("env/auth.env", True), ("compose.yml", True), ("../x", False), ("/x", False), ("a//b", False), ("a/./b", False)],
)
def test_relative_paths(path: str, ok: bool) -> None:
    assert is_relative(path) is ok
