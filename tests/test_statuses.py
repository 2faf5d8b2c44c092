"""The status table of the product brief, checked against voucherd/statuses.py with no server."""

from __future__ import annotations

import pytest

from voucherd import errors
from voucherd.statuses import ALLOWED, STORED_AFTER, Action, Status, check, effective

ACTIVE, PAUSED, EXPIRED, ARCHIVED = Status.ACTIVE, Status.PAUSED, Status.EXPIRED, Status.ARCHIVED
PAUSE, ACTIVATE, ARCHIVE = Action.PAUSE, Action.ACTIVATE, Action.ARCHIVE
EDIT, UPLOAD, CLAIM = Action.EDIT, Action.UPLOAD, Action.CLAIM

# PRODUCT.md, "Statuses and allowed actions", plus claims: only an active list hands out codes
# ("Paused: campaigns cannot use its codes", "Expired: no codes are distributed").
TABLE: dict[Status, set[Action]] = {
    ACTIVE: {PAUSE, EDIT, UPLOAD, ARCHIVE, CLAIM},
    PAUSED: {ACTIVATE, EDIT, UPLOAD, ARCHIVE},
    EXPIRED: {EDIT, ARCHIVE},
    ARCHIVED: set(),
}

REFUSAL: dict[Status, tuple[type[errors.Conflict], str]] = {
    ACTIVE: (errors.Conflict, "conflict"),
    PAUSED: (errors.ListPaused, "list_paused"),
    EXPIRED: (errors.ListExpired, "list_expired"),
    ARCHIVED: (errors.ListArchived, "list_archived"),
}

CELLS = [(status, action) for status in Status for action in Action]
ALLOWED_CELLS = [(s, a) for s, a in CELLS if a in TABLE[s]]
REFUSED_CELLS = [(s, a) for s, a in CELLS if a not in TABLE[s]]

NOW = 1_800_000_000.0


def test_the_table_covers_every_status_and_action() -> None:
    assert set(ALLOWED) == set(Status)
    assert {action for actions in TABLE.values() for action in actions} == set(Action)


def test_the_table_in_code_is_the_table_of_the_brief() -> None:
    assert {status: set(actions) for status, actions in ALLOWED.items()} == TABLE


@pytest.mark.parametrize(("status", "action"), ALLOWED_CELLS)
def test_an_allowed_action_passes_the_check(status: Status, action: Action) -> None:
    check(status, action, 7)


@pytest.mark.parametrize(("status", "action"), REFUSED_CELLS)
def test_a_refused_action_raises_the_error_of_the_current_status(
    status: Status, action: Action
) -> None:
    error_class, code = REFUSAL[status]
    with pytest.raises(errors.Conflict) as raised:
        check(status, action, 7)
    assert type(raised.value) is error_class
    assert raised.value.code == code
    assert raised.value.status == 409
    # The message names the list, its status and the refused action.
    assert "7" in raised.value.message
    assert str(status) in raised.value.message
    assert str(action) in raised.value.message


@pytest.mark.parametrize(("status", "action"), REFUSED_CELLS)
def test_a_refusal_renders_as_an_api_error_body(status: Status, action: Action) -> None:
    with pytest.raises(errors.Conflict) as raised:
        check(status, action, 7)
    body = raised.value.body()
    assert body == {"error": {"code": REFUSAL[status][1], "message": raised.value.message}}


@pytest.mark.parametrize(
    ("action", "stored"), [(PAUSE, PAUSED), (ACTIVATE, ACTIVE), (ARCHIVE, ARCHIVED)]
)
def test_a_transition_stores_its_target_status(action: Action, stored: Status) -> None:
    assert STORED_AFTER[action] is stored


def test_edit_upload_and_claim_leave_the_stored_status_alone() -> None:
    assert set(STORED_AFTER) == {PAUSE, ACTIVATE, ARCHIVE}


def test_expired_is_never_stored_by_a_transition() -> None:
    assert EXPIRED not in STORED_AFTER.values()


@pytest.mark.parametrize("stored", [ACTIVE, PAUSED, ARCHIVED])
def test_a_list_before_its_expiry_reads_its_stored_status(stored: Status) -> None:
    assert effective(stored, NOW + 1, NOW) is stored
    assert effective(stored, NOW + 86_400 * 365, NOW) is stored


@pytest.mark.parametrize("stored", [ACTIVE, PAUSED])
def test_a_list_past_its_expiry_reads_expired(stored: Status) -> None:
    assert effective(stored, NOW - 1, NOW) is EXPIRED
    assert effective(stored, 0.0, NOW) is EXPIRED


@pytest.mark.parametrize("stored", [ACTIVE, PAUSED])
def test_a_list_reads_expired_from_the_very_second_of_its_expiry(stored: Status) -> None:
    assert effective(stored, NOW, NOW) is EXPIRED
    assert effective(stored, NOW, NOW - 0.001) is stored


@pytest.mark.parametrize("expires_at", [NOW - 86_400, NOW, NOW + 86_400])
def test_archived_wins_over_expired(expires_at: float) -> None:
    assert effective(ARCHIVED, expires_at, NOW) is ARCHIVED


def test_moving_the_expiry_forward_brings_the_stored_status_back() -> None:
    assert effective(PAUSED, NOW - 1, NOW) is EXPIRED
    assert effective(PAUSED, NOW + 1, NOW) is PAUSED


def test_an_expired_list_refuses_claims_but_may_be_edited_and_archived() -> None:
    status = effective(ACTIVE, NOW - 1, NOW)
    with pytest.raises(errors.ListExpired):
        check(status, CLAIM, 1)
    check(status, EDIT, 1)
    check(status, ARCHIVE, 1)


def test_statuses_and_actions_read_as_the_api_words() -> None:
    assert [str(s) for s in Status] == ["active", "paused", "expired", "archived"]
    assert {str(a) for a in Action} == {"pause", "activate", "archive", "edit", "upload", "claim"}
