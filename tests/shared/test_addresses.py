"""The one rule of which addresses count as one client (`shared.addresses.client_network`), and
that the login throttle and the DICOM listener both count by it."""

from __future__ import annotations

import pytest

from daemons.render.dimse.peers import peer_key
from daemons.toplevel.throttle import address_key
from shared.addresses import client_network


@pytest.mark.parametrize(("address", "counted_as"), [
    ("2001:db8:1:2::7", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:abcd:ef01:2345:6789", "2001:db8:1:2::/64"),
    ("fe80::1%eth0", "fe80::/64"),
    ("::ffff:192.0.2.7", "192.0.2.7"),
    ("192.0.2.7", "192.0.2.7"),
])
def test_the_throttle_and_the_dicom_listener_count_an_address_alike(address: str, counted_as: str) -> None:
    assert client_network(address) == address_key(address) == peer_key(address) == counted_as


def test_what_is_no_address_each_keeps_in_its_own_form() -> None:
    """No IP address: the listener keeps it as given, the throttle as the audit stores it (cut)."""
    path = "/run/sivr/" + "x" * 80
    assert client_network(path) is None
    assert peer_key(path) == path
    assert address_key(path) == path[:63] + "…"
