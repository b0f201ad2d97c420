"""The one rule of who administers what (`shared.roles`), as a table."""

from __future__ import annotations

import pytest

from shared.roles import (
    Principal,
    assignable_roles,
    is_admin,
    may_administer_institution,
    may_administer_user,
    may_change_finding,
    may_change_record,
    may_grant_role,
)

A, B = "inst-a", "inst-b"
ROOT, INST_A, DOC_A = Principal("sysadmin", A), Principal("instadmin", A), Principal("physician", A)


@pytest.mark.parametrize("caller, institution, allowed", [
    (ROOT, A, True), (ROOT, B, True),
    (INST_A, A, True), (INST_A, B, False),
    (DOC_A, A, False), (Principal("admin", A), A, False),  # the retired role administers nothing
])
def test_who_administers_an_institution(caller, institution, allowed):
    assert may_administer_institution(caller, institution) is allowed


@pytest.mark.parametrize("caller, role, institution, allowed", [
    (ROOT, "sysadmin", B, True),
    (INST_A, "physician", A, True), (INST_A, "instadmin", A, True),
    (INST_A, "sysadmin", A, False),  # not even a system admin of their own institution
    (INST_A, "physician", B, False),
    (DOC_A, "physician", A, False),
])
def test_who_administers_a_user(caller, role, institution, allowed):
    assert may_administer_user(caller, role, institution) is allowed


def test_grantable_roles():
    assert assignable_roles(ROOT) == ("sysadmin", "instadmin", "physician")
    assert assignable_roles(INST_A) == ("instadmin", "physician")
    assert assignable_roles(DOC_A) == ()
    assert not may_grant_role(INST_A, "sysadmin")
    assert [is_admin(p) for p in (ROOT, INST_A, DOC_A)] == [True, True, False]


@pytest.mark.parametrize("caller, caller_id, registered_by, institution, allowed", [
    (DOC_A, "u1", "u1", A, True),                     # the uploader
    (DOC_A, "u2", "u1", A, False),                    # a colleague
    (DOC_A, "u1", "", A, False),                      # nobody is the uploader of an unattributed record
    (Principal("physician", B), "u1", "u1", A, False),  # the uploader, since moved to another institution
    (INST_A, "x", "u1", A, True), (ROOT, "x", "u1", B, True),
    (INST_A, "x", "u1", B, False),
])
def test_who_changes_a_record(caller, caller_id, registered_by, institution, allowed):
    assert may_change_record(caller, caller_id, registered_by, institution) is allowed


@pytest.mark.parametrize("caller, caller_id, author, deleting, allowed", [
    (DOC_A, "u1", "u1", False, True), (DOC_A, "u1", "u1", True, True),      # the author
    (DOC_A, "u2", "u1", False, False), (DOC_A, "u2", "u1", True, False),    # a colleague
    (Principal("physician", B), "u1", "u1", False, False),                # the author, since moved to B
    (Principal("physician", B), "u1", "u1", True, False),
    (Principal("instadmin", A), "u1", "u1", False, False),                # the author, since made an admin
    (INST_A, "x", "u1", False, False), (INST_A, "x", "u1", True, True),   # admins delete, never rewrite
    (ROOT, "x", "u1", False, False), (Principal("sysadmin", B), "x", "u1", True, True),
    (Principal("instadmin", B), "x", "u1", True, False),
    (DOC_A, "u1", "", False, False),
])
def test_who_changes_a_finding(caller, caller_id, author, deleting, allowed):
    assert may_change_finding(caller, caller_id, author, A, deleting=deleting) is allowed
