"""Which addresses the DICOM listener counts as one peer (`admission`, `refusal_audit`).

An IPv6 host is given a /64 whole (SLAAC, privacy addresses, a prefix per container: RFC 6177,
RFC 7217) and may call from a new address of it on every connection: counted address by address,
one such host took every one of `dicom.max_associations` places, each from an address of its own
within its per-address limit. So an IPv6 address counts as its /64 network, and an IPv4-mapped one
(`::ffff:192.0.2.7`, an IPv4 peer of a listener bound to "::") as its IPv4 address. It is the rule
the HTTP login throttle counts clients by (`daemons.toplevel.throttle.address_key`); the render node
is a separate layer that does not import the toplevel's code, hence this module.
"""

from __future__ import annotations

import ipaddress

#: The prefix of an IPv6 address that counts as one peer (one link, and often one host, holds a /64).
IPV6_PEER_PREFIX = 64


def peer_key(address: str) -> str:
    """The peer `address` counts as: an IPv6 address as its /64 network (any interface suffix, `%eth0`,
    dropped), an IPv4-mapped one as its IPv4 address, an IPv4 address as itself, anything else as given."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip), IPV6_PEER_PREFIX), strict=False))
    return str(ip)
