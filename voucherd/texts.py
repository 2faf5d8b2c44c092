"""What any text a client sends must be: no control characters, valid Unicode."""

from __future__ import annotations

from voucherd import errors


def check_characters(value: str, name: str) -> None:
    """Refuse control characters (C0, DEL, C1) and text that is not valid Unicode."""
    if value.isascii() and value.isprintable():
        return
    if not value.isprintable() and any(ch < " " or "\x7f" <= ch <= "\x9f" for ch in value):
        raise errors.InvalidRequest(f"{name} must not contain control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise errors.InvalidRequest(f"{name} is not valid Unicode text") from None
