"""File objects over a channel's stdin, stdout and stderr that a garbage collection cannot make noisy.

paramiko's files flush again in __del__ even when already closed; when a collection finalizes the file's
own buffer first, that flush raises and Python prints "Exception ignored in BufferedFile.__del__" on the
user's terminal. These close once, and quietly."""

from __future__ import annotations

from contextlib import suppress

from paramiko.channel import ChannelFile, ChannelStderrFile, ChannelStdinFile


class _Quiet(ChannelFile):
    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            with suppress(OSError, ValueError, EOFError):
                self.close()


class Stdin(_Quiet, ChannelStdinFile):
    pass


class Stdout(_Quiet):
    pass


class Stderr(_Quiet, ChannelStderrFile):
    pass
