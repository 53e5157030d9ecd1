"""One rule for every value that ends up in a line-based file (env files, supervisord, nginx, cron,
systemd units, compose) or becomes a path: no control character and no line or paragraph separator.
A reader that splits lines on `\\r`, `\\x85` or U+2028 (Python's text mode and str.splitlines do) would
otherwise see two lines where the writer wrote one."""

from __future__ import annotations

import unicodedata


def control_character(text: str) -> str | None:
    """The first character of `text` that breaks a line-based file (C0, DEL, C1, U+2028, U+2029), named
    as Python escapes it; None when there is none."""
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
            return repr(ch)[1:-1]
    return None


def one_line(value: str) -> str:
    """A validator: `value` itself, or ValueError naming the character."""
    found = control_character(value)
    if found is not None:
        raise ValueError(
            f"the value holds a control character or line separator ({found}), which no line-based file can carry"
        )
    return value
