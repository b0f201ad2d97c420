"""Which addresses the DICOM listener counts as one peer (`admission`, `refusal_audit`).

An IPv6 host is given a /64 whole (SLAAC, privacy addresses, a prefix per container: RFC 6177,
RFC 7217) and may call from a new address of it on every connection: counted address by address,
one such host took every one of `dicom.max_associations` places, each from an address of its own
within its per-address limit. So an IPv6 address counts as its /64 network, and an IPv4-mapped one
(`::ffff:192.0.2.7`, an IPv4 peer of a listener bound to "::") as its IPv4 address. The rule lives
in `shared.addresses`, where the HTTP login throttle (`daemons.toplevel.throttle.address_key`)
takes it from too.
"""

from __future__ import annotations

from shared.addresses import client_network


def peer_key(address: str) -> str:
    """The peer `address` counts as: an IPv6 address as its /64 network (any interface suffix, `%eth0`,
    dropped), an IPv4-mapped one as its IPv4 address, an IPv4 address as itself
    (`shared.addresses.client_network`), anything else as given."""
    return client_network(address) or address
