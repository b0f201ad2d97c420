"""Which network addresses count as one client: the rule the toplevel's login throttle
(`daemons.toplevel.throttle.address_key`) and the render node's DICOM listener
(`daemons.render.dimse.peers.peer_key`) both count by, defined here once so the two cannot drift.

An IPv6 host is given a /64 whole (SLAAC, privacy addresses, a prefix per container: RFC 6177,
RFC 7217) and may use a new address of it for every login guess or every DICOM association:
counted address by address, one such host passed the per-address limits of both (89 of 90 wrong
passwords over 30 usernames checked from one /64; every `dicom.max_associations` place taken by one
host). So an IPv6 address counts as its /64 network, and an IPv4-mapped one (`::ffff:192.0.2.7`,
an IPv4 client of a listener bound to "::") as its IPv4 address.
"""

from __future__ import annotations

import ipaddress

#: The prefix of an IPv6 address that counts as one client (one link, and often one host, holds a /64).
IPV6_CLIENT_PREFIX = 64


def client_network(address: str) -> str | None:
    """The client `address` counts as: an IPv6 address as its /64 network (any interface suffix,
    `%eth0`, dropped), an IPv4-mapped one as its IPv4 address, an IPv4 address as itself; None when
    `address` is no IP address (a unix socket's path, a proxy's X-Forwarded-For list), which each
    caller keeps in its own form (the throttle as the audit stores it, the listener as given)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip), IPV6_CLIENT_PREFIX), strict=False))
    return str(ip)
