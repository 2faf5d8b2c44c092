"""The duplicate policy, without a server: which existing copy of a code blocks a new one."""

from __future__ import annotations

import itertools

import pytest

from voucherd.codes import Reason
from voucherd.duplicates import Holder, Scope, Target, clash, first_clash

LIST = 1
UPLOAD = 10


def target(scope: Scope = Scope.PARTNER, partner: str = "Puma") -> Target:
    return Target(list_id=LIST, upload_id=UPLOAD, partner=partner, scope=scope)


def in_file(archived: bool = False) -> Holder:
    return Holder(list_id=LIST, upload_id=UPLOAD, partner="Puma", archived=archived)


def in_list(archived: bool = False) -> Holder:
    return Holder(list_id=LIST, upload_id=UPLOAD - 1, partner="Puma", archived=archived)


def in_partner(archived: bool = False, partner: str = "Puma") -> Holder:
    return Holder(list_id=LIST + 1, upload_id=UPLOAD + 1, partner=partner, archived=archived)


# -- clash -------------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", list(Scope))
def test_a_code_earlier_in_the_same_upload_is_a_duplicate_in_file(scope: Scope) -> None:
    assert clash(target(scope), in_file()) is Reason.DUPLICATE_IN_FILE


@pytest.mark.parametrize("scope", list(Scope))
def test_a_code_of_an_earlier_upload_to_the_list_is_a_duplicate_in_list(scope: Scope) -> None:
    assert clash(target(scope), in_list()) is Reason.DUPLICATE_IN_LIST


def test_a_code_in_another_list_of_the_partner_is_a_duplicate_in_partner() -> None:
    assert clash(target(Scope.PARTNER), in_partner()) is Reason.DUPLICATE_IN_PARTNER


def test_a_list_scoped_list_ignores_the_partners_other_lists() -> None:
    assert clash(target(Scope.LIST), in_partner()) is None


@pytest.mark.parametrize("scope", list(Scope))
def test_the_same_code_under_another_partner_is_allowed(scope: Scope) -> None:
    assert clash(target(scope), in_partner(partner="Nike")) is None


@pytest.mark.parametrize("scope", list(Scope))
def test_partners_are_compared_case_sensitively(scope: Scope) -> None:
    assert clash(target(scope), in_partner(partner="puma")) is None
    assert clash(target(scope, partner="PUMA"), in_partner()) is None


@pytest.mark.parametrize("scope", list(Scope))
def test_codes_of_archived_lists_are_not_checked(scope: Scope) -> None:
    assert clash(target(scope), in_partner(archived=True)) is None
    assert clash(target(scope), in_list(archived=True)) is None


def test_another_list_with_the_same_upload_id_would_still_be_the_same_file() -> None:
    # Upload ids are global, so an upload id match means the very same upload.
    holder = Holder(list_id=LIST, upload_id=UPLOAD, partner="Puma", archived=False)
    assert clash(target(Scope.LIST), holder) is Reason.DUPLICATE_IN_FILE


# -- first_clash -------------------------------------------------------------------------------


def test_no_holders_means_no_clash() -> None:
    assert first_clash(target(), []) is None


def test_holders_that_do_not_clash_mean_no_clash() -> None:
    holders = [in_partner(partner="Nike"), in_partner(archived=True), in_list(archived=True)]
    assert first_clash(target(), holders) is None


ORDERED = [
    (in_file, Reason.DUPLICATE_IN_FILE),
    (in_list, Reason.DUPLICATE_IN_LIST),
    (in_partner, Reason.DUPLICATE_IN_PARTNER),
]


@pytest.mark.parametrize("size", [1, 2, 3])
def test_the_most_specific_reason_wins_in_any_order(size: int) -> None:
    for chosen in itertools.combinations(ORDERED, size):
        expected = chosen[0][1]
        for order in itertools.permutations(chosen):
            holders = [make() for make, _ in order]
            assert first_clash(target(), holders) is expected, order


def test_a_non_clashing_holder_does_not_hide_a_clashing_one() -> None:
    holders = [in_partner(partner="Nike"), in_partner(archived=True), in_partner()]
    assert first_clash(target(), holders) is Reason.DUPLICATE_IN_PARTNER


def test_a_list_scoped_list_reports_its_own_copy_over_the_partners() -> None:
    holders = [in_partner(), in_list()]
    assert first_clash(target(Scope.LIST), holders) is Reason.DUPLICATE_IN_LIST
    assert first_clash(target(Scope.LIST), [in_partner()]) is None


def test_an_archived_holder_does_not_block_but_a_live_one_does() -> None:
    holders = [in_partner(archived=True), in_partner(partner="Puma")]
    assert first_clash(target(), holders) is Reason.DUPLICATE_IN_PARTNER
