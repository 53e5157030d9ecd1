"""Offsite copies: each backup of an environment in an S3-compatible store, under `<prefix><env>/<id>/`.

A backup's files go up first, each as a multipart upload whose parts the store checks against their
SHA-256 (ChecksumAlgorithm), with the file's own SHA-256 in the object's metadata (a multipart object's
stored checksum is a composite of its parts); the manifest goes up last. A listing shows only folders
that hold a manifest, so an upload cut short is never taken for a backup; `sync` uploads it again.
The release ledger and the audit log go up beside the backups, under `<prefix><env>/state/`.

Nothing read from the store is trusted with a name: a listed folder that is not a bare name is no
backup of ours, and a downloaded file's SHA-256 and size must match its manifest before it is kept.
The credentials live in the client object only: never in argv, the environment or a message."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mfe_deploy.backups.store import MANIFEST, VERIFIED, BackupError, Entry, FileEntry, Manifest, Store, pick, receive
from mfe_deploy.console import Task
from mfe_deploy.exec.host import AUDIT, RELEASES, Files
from mfe_deploy.exec.names import bare, is_bare

if TYPE_CHECKING:
    from pathlib import PurePath

    from mfe_deploy.config.models import Environment, Offsite
    from mfe_deploy.config.secrets import Secrets
    from mfe_deploy.exec.secret import Secret

STATE = "state"
STATE_FILES = (RELEASES, AUDIT)  # the release ledger and the audit log
CHUNK = 1 << 20
_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


class OffsiteError(BackupError):
    """The store did not answer, refused, or holds something other than what was sent."""


@dataclass(frozen=True)
class OffsiteEntry:
    """One backup folder in the store: its manifest (None: an upload cut short) and its objects."""

    id: str
    manifest: Manifest | None
    objects: Mapping[str, int]  # key name in the folder -> size
    problem: str = ""
    verified: dict[str, Any] | None = None

    @property
    def complete(self) -> bool:
        return self.manifest is not None

    def as_entry(self, where: str) -> Entry:
        """As a local folder's entry, for what lists, prunes and checks entries (`where`: its address)."""
        return Entry(self.id, Path(where), self.manifest, self.verified, self.problem)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def for_env(
    env: Environment, secrets: Secrets | None, project_dir: Path, state: tuple[Files, PurePath] | None = None
) -> OffsiteStore | None:
    """The environment's offsite store (backup.offsite), or None when it has none. `state`: where its
    release ledger and audit log are read, to go up with each backup."""
    config = env.backup.offsite
    if config is None or secrets is None or secrets.offsite is None:
        return None
    return OffsiteStore(config, secrets.offsite, env.name, project_dir, state)


class OffsiteStore:
    def __init__(
        self,
        config: Offsite,
        credentials: tuple[Secret, Secret],
        env_name: str,
        project_dir: Path,
        state: tuple[Files, PurePath] | None = None,
    ) -> None:
        self.config = config
        self.env_name = env_name
        self._state = state
        self.folder = f"{config.prefix}{env_name}/"
        self._credentials = credentials
        self._ca = None if config.ca_file is None else str(project_dir / config.ca_file)
        self._client: Any = None

    @property
    def endpoint(self) -> str:
        return self.config.endpoint.rstrip("/")

    def where(self, backup_id: str = "") -> str:
        return f"{self.endpoint}/{self.config.bucket}/{self.folder}{backup_id}"

    # --- the client -----------------------------------------------------------------------------------
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            key, secret = self._credentials
            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint,
                region_name=self.config.region,
                aws_access_key_id=key.reveal(),
                aws_secret_access_key=secret.reveal(),
                verify=self._ca if self._ca is not None else True,
                config=Config(
                    s3={"addressing_style": "path" if self.config.path_style else "virtual"},
                    connect_timeout=5,
                    read_timeout=60,
                    retries={"max_attempts": 3, "mode": "standard"},
                ),
            )
        return self._client

    @contextmanager
    def _talking(self, doing: str) -> Iterator[None]:
        """A failure of the store as one line: what was being done, the endpoint, the store's reason."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            why = f"{error.get('Code', 'error')}: {error.get('Message') or 'no message'}"
            raise OffsiteError(f"the offsite store {self.endpoint} refused {doing} ({why})") from None
        except BotoCoreError as exc:
            raise OffsiteError(f"the offsite store {self.endpoint} did not answer {doing} ({exc})") from None

    def _key(self, *parts: str) -> str:
        return self.folder + "/".join(parts)

    def _part_size(self) -> int:
        size = self.config.part_size
        return int(size[:-1]) * _UNITS[size[-1]]

    # --- up ---------------------------------------------------------------------------------------------
    def upload(self, entry: Entry, task: Task | None = None) -> None:
        """Every file of a complete local backup (side by side), then its verification record and its
        manifest, last."""
        manifest = entry.manifest
        if manifest is None:
            raise BackupError(f"backup {entry.id} is not complete: not uploaded")
        files = sorted(manifest.files.items())
        with ThreadPoolExecutor(max(1, min(4, len(files)))) as pool:
            jobs = [pool.submit(self._send, entry, name, file, task) for name, file in files]
            for job in jobs:
                job.result()
        if (entry.path / VERIFIED).exists():
            self._put(self._key(entry.id, VERIFIED), (entry.path / VERIFIED).read_bytes(), f"backup {entry.id}")
        self._put(self._key(entry.id, MANIFEST), manifest.to_json().encode(), f"the manifest of backup {entry.id}")

    def _send(self, entry: Entry, name: str, file: FileEntry, task: Task | None) -> None:
        """One file. Below the part size in one request that carries the SHA-256 the backup computed as
        it wrote the file (the store checks the body against it; nothing is read twice here); above, in
        parts the store checks one by one, and the whole file's SHA-256 in the metadata."""
        from boto3.s3.transfer import TransferConfig

        part = max(self._part_size(), 5 << 20)
        path, key = entry.path / name, self._key(entry.id, name)
        metadata = {"sha256": file.sha256}
        with self._talking(f"{name} of backup {entry.id}"):
            if file.size < part:
                digest = base64.b64encode(bytes.fromhex(file.sha256)).decode()
                with path.open("rb") as body:
                    self.client().put_object(
                        Bucket=self.config.bucket, Key=key, Body=body, ChecksumSHA256=digest, Metadata=metadata
                    )
                if task is not None:
                    task.advance(file.size)
                return
            self.client().upload_file(
                str(path),
                self.config.bucket,
                key,
                ExtraArgs={"ChecksumAlgorithm": "SHA256", "Metadata": metadata},
                Config=TransferConfig(multipart_threshold=part, multipart_chunksize=part, max_concurrency=4),
                Callback=task.advance if task is not None else None,
            )

    def _put(self, key: str, body: bytes, what: str) -> None:
        with self._talking(what):
            self.client().put_object(
                Bucket=self.config.bucket,
                Key=key,
                Body=body,
                ChecksumAlgorithm="SHA256",
                Metadata={"sha256": hashlib.sha256(body).hexdigest()},
            )

    def _objects(self, backup_id: str) -> dict[str, int]:
        """The objects of one backup folder (a listing of that prefix only), name -> size."""
        prefix = self._key(bare(backup_id, "a backup id"), "")
        found: dict[str, int] = {}
        with self._talking(f"the listing of {self.where(backup_id)}"):
            for page in (
                self.client().get_paginator("list_objects_v2").paginate(Bucket=self.config.bucket, Prefix=prefix)
            ):
                for item in page.get("Contents", []):
                    found[item["Key"][len(prefix) :]] = int(item["Size"])
        return found

    def holds(self, backup_id: str) -> bool:
        """Whether the store has this backup whole (its manifest, which goes up last)."""
        return MANIFEST in self._objects(backup_id)

    def mark_verified(self, backup_id: str, record: Mapping[str, object]) -> None:
        body = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
        self._put(self._key(bare(backup_id, "a backup id"), VERIFIED), body, f"the verification of {backup_id}")

    def put_state(self) -> None:
        """The ledger and the audit log, as they are now (each replaces the previous copy)."""
        if self._state is None:
            return
        files, folder = self._state
        for name in STATE_FILES:
            text = files.read_text(folder / name)
            if text is not None:
                self._put(self._key(STATE, name), text.encode(), f"the state file {name}")

    def state(self, name: str) -> bytes | None:
        return self._get_bytes(self._key(STATE, bare(name, "a state file")), f"the state file {name}")

    # --- listing ----------------------------------------------------------------------------------------
    def scan(self) -> list[OffsiteEntry]:
        """Every backup folder in the store, oldest first (ids sort by time)."""
        client = self.client()
        objects: dict[str, dict[str, int]] = {}
        with self._talking(f"the listing of {self.where()}"):
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.config.bucket, Prefix=self.folder):
                for item in page.get("Contents", []):
                    rest = item["Key"][len(self.folder) :]
                    folder, _, name = rest.partition("/")
                    if folder == STATE or not name or "/" in name:
                        continue
                    objects.setdefault(folder, {})[name] = int(item["Size"])
        return [self._entry(folder, names) for folder, names in sorted(objects.items())]

    def _entry(self, folder: str, names: dict[str, int]) -> OffsiteEntry:
        if not is_bare(folder):
            return OffsiteEntry(folder, None, names, "not a plain file name")
        if MANIFEST not in names:
            return OffsiteEntry(folder, None, names, "interrupted")  # `backup sync` uploads it again
        text = self._get_bytes(self._key(folder, MANIFEST), f"the manifest of {folder}")
        try:
            manifest = Manifest.from_json((text or b"").decode())
        except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError) as exc:
            return OffsiteEntry(folder, None, names, f"unreadable manifest: {exc}")
        if manifest.id != folder or manifest.env != self.env_name:
            return OffsiteEntry(folder, None, names, "unreadable manifest: it names another backup")
        verified = None
        if VERIFIED in names:
            try:
                verified = json.loads(self._get_bytes(self._key(folder, VERIFIED), f"backup {folder}") or b"null")
            except ValueError:
                verified = None
        return OffsiteEntry(folder, manifest, names, verified=verified if isinstance(verified, dict) else None)

    def get(self, backup_id: str | None) -> OffsiteEntry:
        complete = [e for e in self.scan() if e.complete]
        chosen = pick([e.as_entry(self.where(e.id)) for e in complete], backup_id, self.where())
        return next(e for e in complete if e.id == chosen.id)

    def _get_bytes(self, key: str, what: str) -> bytes | None:
        """The object's bytes; None when there is no such object."""
        from botocore.exceptions import ClientError

        with self._talking(what):
            try:
                return bytes(self.client().get_object(Bucket=self.config.bucket, Key=key)["Body"].read())
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    return None
                raise

    # --- down -------------------------------------------------------------------------------------------
    def download(self, remote: OffsiteEntry, store: Store, task: Task | None = None) -> Entry:
        """A complete offsite backup into the local folder: each file's SHA-256 and size checked against
        the manifest as it arrives; a mismatch keeps nothing."""
        manifest = remote.manifest
        assert manifest is not None

        def fetch(name: str, target: Path) -> tuple[str, int]:
            return self._fetch(self._key(remote.id, name), target, task)

        return receive(store, manifest, self.where(remote.id), fetch, remote.verified)

    def _fetch(self, key: str, target: Path, task: Task | None) -> tuple[str, int]:
        digest = hashlib.sha256()
        size = 0
        with self._talking(f"{key}"):
            body = self.client().get_object(Bucket=self.config.bucket, Key=key)["Body"]
            with target.open("wb") as out:
                target.chmod(0o600)
                for chunk in body.iter_chunks(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                    if task is not None:
                        task.advance(len(chunk))
        return digest.hexdigest(), size

    # --- removal ----------------------------------------------------------------------------------------
    def remove(self, backup_id: str) -> None:
        """The manifest first: a half-removed backup is no longer listed as complete."""
        entry_names = self._objects(backup_id)
        names = ([MANIFEST] if MANIFEST in entry_names else []) + sorted(n for n in entry_names if n != MANIFEST)
        for name in names:
            with self._talking(f"the removal of {backup_id}/{name}"):
                self.client().delete_object(Bucket=self.config.bucket, Key=self._key(backup_id, name))
