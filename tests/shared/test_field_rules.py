"""The console checks a form with the rule the server enforces (`shared.field_rules`): it never
accepts what the server refuses, nor refuses what it accepts."""

from __future__ import annotations

import pytest

from admin_gui import form_checks
from daemons.toplevel.accounts import check_email, check_username
from daemons.toplevel.record_types import check_code
from shared.errors import ApiError


def server_accepts(check, value: str) -> bool:
    try:
        check(value, "field")
    except ApiError as exc:
        assert exc.status == 400
        return False
    return True


USERNAMES = ["dr.house", "Dr.House", "nora@hospital.example", "a-1", "ab", ".ab", "_ab", "@ab", "-ab", "dr house",
             "x" * 150, "x" * 151, "\u212aelvin", "d\u0131ana", "dr.\u202enew", "\u00e9mile", "0sa"]


@pytest.mark.parametrize("value", USERNAMES)
def test_console_and_server_agree_on_usernames(value):
    assert (form_checks.check_username(value) is None) == server_accepts(check_username, value)


def test_a_username_is_ascii_as_typed():
    """The Kelvin sign lower-cases to an ASCII `k`: it would be stored as another user's name."""
    assert not server_accepts(check_username, "\u212aelvin")
    assert check_username("Dr.House", "username") == "dr.house"


@pytest.mark.parametrize("value", ["CT", "ct", "MR_T2", "US-3D", "_CT", "-CT", "C" * 16, "C" * 17, "C T",
                                   "\u017fR", "stra\u00dfe"])
def test_console_and_server_agree_on_record_type_codes(value):
    assert (form_checks.check_record_type_code(value) is None) == server_accepts(check_code, value)


def test_record_type_codes_the_console_refused_before():
    """Lower case (stored upper-case) and `-`, which the server takes, were refused by the console."""
    assert form_checks.check_record_type_code("us-3d") is None
    assert check_code("us-3d", "code") == "US-3D"


@pytest.mark.parametrize("value", ["nora@hospital.example", "nora@hospital", "no ra@hospital.example",
                                   "a@b@c.d", "a@b.c"])
def test_console_and_server_agree_on_emails(value):
    assert (form_checks.check_email(value) is None) == server_accepts(check_email, value)
