"""Writing a rendered Bundle to disk atomically, and comparing it with what is on disk."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePath

from mfe_deploy.exec.host import Files, LocalFiles
from mfe_deploy.exec.names import is_relative
from mfe_deploy.render import Bundle, BundleFile

INDEX = ".mfe-files"


@dataclass(frozen=True)
class Drift:
    path: str
    kind: str  # "missing", "changed", "mode", "stale"
    diff: list[str]
    secret: bool = False  # the diff names the variables that changed, never their values


def _with_index(bundle: Bundle) -> dict[str, BundleFile]:
    files = dict(bundle.files)
    files[INDEX] = BundleFile("".join(f"{name}\n" for name in sorted(bundle.files)))
    return files


def _previous(out: PurePath, files: Files) -> list[str]:
    try:
        index = files.read_text(out / INDEX)
    except (OSError, UnicodeDecodeError):
        return []
    # The index is a file on disk, not our word: a line that is not a relative path inside `out` (`..`,
    # absolute, a control character) is never a file this tool wrote, and is never removed.
    return [line for line in (index or "").split("\n") if line and is_relative(line)]


def write(bundle: Bundle, out: PurePath, files: Files | None = None) -> list[str]:
    """Write every file that differs; remove files an earlier render wrote that this one no longer has.
    `files`: where `out` is (this machine by default, or a remote host over SFTP)."""
    fs = files if files is not None else LocalFiles()
    wanted = _with_index(bundle)
    changed = []
    for name in _previous(out, fs):
        if name not in wanted and fs.mode(out / name) is not None:
            fs.unlink(out / name)
            changed.append(name)
    for name, file in wanted.items():
        target = out / name
        if _same(target, file, fs):
            continue
        fs.write_atomic(target, file.text, file.mode)
        if name != INDEX:
            changed.append(name)
    return changed


def remove(out: PurePath, files: Files | None = None, extra: Sequence[str] = ()) -> list[str]:
    """Remove every file the last render wrote (its env files hold secrets), `extra` files beside them,
    and the index: `down --volumes` leaves no secret of the environment on disk."""
    fs = files if files is not None else LocalFiles()
    removed = []
    for name in [*_previous(out, fs), *extra, INDEX]:
        if fs.mode(out / name) is not None:
            fs.unlink(out / name)
            removed.append(name)
    return removed


def _same(target: PurePath, file: BundleFile, fs: Files) -> bool:
    try:
        return fs.read_text(target) == file.text and fs.mode(target) == file.mode
    except (OSError, UnicodeDecodeError):
        return False


def drift(bundle: Bundle, out: PurePath, files: Files | None = None) -> list[Drift]:
    """What differs between a rendered bundle and the files in `out` (here, or on a remote host).
    Files holding secrets are compared but never shown: their diff names the variables that changed."""
    from mfe_deploy.plan import changed_keys

    fs = files if files is not None else LocalFiles()
    wanted = _with_index(bundle)
    found: list[Drift] = []
    for name in _previous(out, fs):
        if name not in wanted and fs.mode(out / name) is not None:
            found.append(Drift(name, "stale", []))
    for name, file in wanted.items():
        target = out / name
        try:
            current = fs.read_text(target)
        except (OSError, UnicodeDecodeError):
            current = ""
        if current is None:
            found.append(Drift(name, "missing", []))
        elif current != file.text:
            if file.secret:
                lines = [f"  changed: {key}\n" for key in changed_keys(current, file.text)]
            else:
                lines = _udiff(current, file.text, name)
            found.append(Drift(name, "changed", lines, file.secret))
        elif fs.mode(target) != file.mode:
            found.append(Drift(name, "mode", []))
    return found


def _udiff(old: str, new: str, name: str) -> list[str]:
    return list(
        difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True), f"a/{name}", f"b/{name}")
    )


def digest(result: Bundle) -> str:
    """One hash of every path and text of a bundle: a release records it, a no-op `up` compares it."""
    import hashlib

    h = hashlib.sha256()
    for path, file in result.files.items():
        h.update(path.encode() + b"\0" + file.text.encode() + b"\0")
    return h.hexdigest()
