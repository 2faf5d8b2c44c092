"""The duplicate policy: when an uploaded code clashes with one already held.

Codes are compared against codes available or distributed (a withdrawn code may come back) and
never against archived lists. A partner-scoped list checks every non-archived list of its
partner; a list-scoped one checks itself only. The same code under another partner is fine.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from voucherd.codes import Reason


class Scope(StrEnum):
    PARTNER = "partner"
    LIST = "list"


@dataclass(frozen=True, slots=True)
class Holder:
    """Where an existing copy of a code lives."""

    list_id: int
    upload_id: int
    partner: str
    archived: bool
    # Available or distributed; False once withdrawn (or its upload failed).
    live: bool = True


@dataclass(frozen=True, slots=True)
class Target:
    """The upload the new code arrives in."""

    list_id: int
    upload_id: int
    partner: str
    scope: Scope


def clash(target: Target, holder: Holder) -> Reason | None:
    if holder.upload_id == target.upload_id:
        return Reason.DUPLICATE_IN_FILE
    if holder.archived or not holder.live:
        return None
    if holder.list_id == target.list_id:
        return Reason.DUPLICATE_IN_LIST
    if target.scope is Scope.PARTNER and holder.partner == target.partner:
        return Reason.DUPLICATE_IN_PARTNER
    return None


_PRECEDENCE = (Reason.DUPLICATE_IN_FILE, Reason.DUPLICATE_IN_LIST, Reason.DUPLICATE_IN_PARTNER)


def first_clash(target: Target, holders: list[Holder]) -> Reason | None:
    """The most specific reason among all holders of one code."""
    found = {clash(target, holder) for holder in holders}
    return next((reason for reason in _PRECEDENCE if reason in found), None)
