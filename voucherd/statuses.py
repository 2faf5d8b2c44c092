"""A list's statuses and which actions each allows — the status table of the product brief.

Stored statuses are `active`, `paused` and `archived`; `expired` is never stored: a list reads
expired while its expiry date has passed, so moving the date forward brings it back.
"""

from __future__ import annotations

from enum import StrEnum

from voucherd import errors


class Status(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    EXPIRED = "expired"
    ARCHIVED = "archived"


class Action(StrEnum):
    PAUSE = "pause"
    ACTIVATE = "activate"
    ARCHIVE = "archive"
    EDIT = "edit"
    UPLOAD = "upload"
    CLAIM = "claim"


ALLOWED: dict[Status, frozenset[Action]] = {
    Status.ACTIVE: frozenset(
        {Action.PAUSE, Action.EDIT, Action.UPLOAD, Action.ARCHIVE, Action.CLAIM}
    ),
    Status.PAUSED: frozenset({Action.ACTIVATE, Action.EDIT, Action.UPLOAD, Action.ARCHIVE}),
    Status.EXPIRED: frozenset({Action.EDIT, Action.ARCHIVE}),
    Status.ARCHIVED: frozenset(),
}

# What a transition stores; EDIT, UPLOAD and CLAIM leave the status alone.
STORED_AFTER: dict[Action, Status] = {
    Action.PAUSE: Status.PAUSED,
    Action.ACTIVATE: Status.ACTIVE,
    Action.ARCHIVE: Status.ARCHIVED,
}

_REFUSAL: dict[Status, type[errors.Conflict]] = {
    Status.ACTIVE: errors.Conflict,
    Status.PAUSED: errors.ListPaused,
    Status.EXPIRED: errors.ListExpired,
    Status.ARCHIVED: errors.ListArchived,
}


def effective(stored: Status, expires_at: float, now: float) -> Status:
    if stored is Status.ARCHIVED:
        return stored
    if now >= expires_at:
        return Status.EXPIRED
    return stored


def check(status: Status, action: Action, list_id: int) -> None:
    """Raise the API error for `action` on a list in `status`, if the table forbids it."""
    if action not in ALLOWED[status]:
        raise _REFUSAL[status](f"list {list_id} is {status}: {action} is not allowed")
