"""Streaming authenticated encryption of backup files with a passphrase (the `cryptography` library).

File = header (magic, scrypt salt, nonce prefix) + chunks. Each chunk of up to 1 MiB is sealed with
AES-256-GCM; its nonce is the prefix, a chunk counter and a last-chunk flag, and the header is the
associated data, so a reordered, truncated, extended or flipped file fails to decrypt (the STREAM
construction). The key comes from the passphrase through scrypt (N=2^15, r=8, p=1).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # `cryptography` is imported when a backup is encrypted or decrypted, not on every command
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"MFEBAK1\0"
CHUNK = 1 << 20
TAG = 16
HEADER = len(MAGIC) + 16 + 7
SCHEME = {"cipher": "AES-256-GCM, 1 MiB chunks (STREAM)", "kdf": "scrypt n=32768 r=8 p=1"}


class DecryptionFailed(Exception):
    pass


def _key(passphrase: str, salt: bytes) -> AESGCM:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    kdf = Scrypt(salt=salt, length=32, n=1 << 15, r=8, p=1)
    return AESGCM(kdf.derive(passphrase.encode()))


def _nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    return prefix + counter.to_bytes(4, "big") + (b"\1" if last else b"\0")


class Encryptor:
    def __init__(self, passphrase: str) -> None:
        salt, self._prefix = os.urandom(16), os.urandom(7)
        self.header = MAGIC + salt + self._prefix
        self._aead = _key(passphrase, salt)
        self._buffer = bytearray()
        self._counter = 0
        self._started = False

    def _seal(self, chunk: bytes, last: bool) -> bytes:
        sealed = self._aead.encrypt(_nonce(self._prefix, self._counter, last), chunk, self.header)
        self._counter += 1
        return sealed

    def update(self, data: bytes) -> bytes:
        out = bytearray()
        if not self._started:
            out += self.header
            self._started = True
        self._buffer += data
        while len(self._buffer) > CHUNK:  # keep at least one byte back: the last chunk is sealed as last
            out += self._seal(bytes(self._buffer[:CHUNK]), False)
            del self._buffer[:CHUNK]
        return bytes(out)

    def finalize(self) -> bytes:
        head = b"" if self._started else self.header
        self._started = True
        return head + self._seal(bytes(self._buffer), True)


class Decryptor:
    def __init__(self, passphrase: str) -> None:
        self._passphrase = passphrase
        self._aead: AESGCM | None = None
        self._header = b""
        self._prefix = b""
        self._buffer = bytearray()
        self._counter = 0

    def _open(self, sealed: bytes, last: bool) -> bytes:
        from cryptography.exceptions import InvalidTag

        assert self._aead is not None
        try:
            plain = self._aead.decrypt(_nonce(self._prefix, self._counter, last), sealed, self._header)
        except InvalidTag:
            raise DecryptionFailed("the file does not decrypt: wrong passphrase, or the file was altered") from None
        self._counter += 1
        return plain

    def update(self, data: bytes) -> bytes:
        self._buffer += data
        if self._aead is None:
            if len(self._buffer) < HEADER:
                return b""
            header = bytes(self._buffer[:HEADER])
            if not header.startswith(MAGIC):
                raise DecryptionFailed("not an mfe-deploy encrypted file")
            self._header, self._prefix = header, header[len(MAGIC) + 16 :]
            self._aead = _key(self._passphrase, header[len(MAGIC) : len(MAGIC) + 16])
            del self._buffer[:HEADER]
        out = bytearray()
        while len(self._buffer) > CHUNK + TAG:
            out += self._open(bytes(self._buffer[: CHUNK + TAG]), False)
            del self._buffer[: CHUNK + TAG]
        return bytes(out)

    def finalize(self) -> bytes:
        if self._aead is None:
            raise DecryptionFailed("the file is too short to be an encrypted backup")
        return self._open(bytes(self._buffer), True)


def opens(head: bytes, passphrase: str, whole: bool) -> bool:
    """Whether `passphrase` opens the first chunk of an encrypted file: `head` is its first bytes (a
    header, a chunk and one byte more, or the `whole` file when it is shorter)."""
    decryptor = Decryptor(passphrase)
    try:
        decryptor.update(head)
        if whole:
            decryptor.finalize()
    except DecryptionFailed:
        return False
    return True


def head_size() -> int:
    return HEADER + CHUNK + TAG + 1


def manifest_mac(passphrase: str, text: str, salt: bytes | None = None) -> str:
    """`<salt>:<HMAC-SHA256>` of a manifest's text (written with no mac), keyed by scrypt from the
    passphrase with a salt of its own: only who holds the passphrase can write a manifest it accepts."""
    import hmac

    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    salt = salt if salt is not None else os.urandom(16)
    key = Scrypt(salt=salt, length=32, n=1 << 15, r=8, p=1).derive(b"mfe-deploy manifest\0" + passphrase.encode())
    return f"{salt.hex()}:{hmac.new(key, text.encode(), 'sha256').hexdigest()}"


def manifest_mac_ok(passphrase: str, text: str, mac: str) -> bool:
    import hmac

    salt, _, _ = mac.partition(":")
    try:
        expected = manifest_mac(passphrase, text, bytes.fromhex(salt))
    except ValueError:
        return False
    return len(salt) == 32 and hmac.compare_digest(expected, mac)
