"""File names and texts made safe to show: one line, valid UTF-8, nothing a terminal would act on.

On Linux a file name is bytes; Python turns bytes that are not UTF-8 into lone surrogates
(`os.fsdecode`), which cannot be printed, drawn by matplotlib or written as valid UTF-8 JSON. And a
name may hold a newline, which would break a one-line-per-item listing. `printable` shows such bytes
as `\\xNN` and control characters as their escapes (`\\n`, `\\t`, `\\x1b`), and leaves every other
character, accents and all, as it is.
"""

from __future__ import annotations

import os
import unicodedata

__all__ = ["printable", "shorten"]

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str | os.PathLike) -> str:
    """`text` (or a path) with undecodable bytes as `\\xNN` and control characters escaped."""
    text = os.fspath(text)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    try:  # the bytes os.fsdecode could not decode, back to bytes, then shown as \xNN
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that did not come from a file name
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if text.isprintable():
        return text
    return "".join(_escape(char) if unicodedata.category(char) in _UNSAFE else char for char in text)


_UNSAFE = ("Cc", "Zl", "Zp")  # control characters, line and paragraph separators


def _escape(char: str) -> str:
    return _ESCAPES.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def shorten(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, the cut marked with an ellipsis (for table columns and plot labels)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
