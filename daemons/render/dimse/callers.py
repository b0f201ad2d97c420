"""Who may associate with the node's DICOM listener: `dicom.allowed_callers`.

An AE title is a name the peer chooses, sent in clear, and printed on every modality's set-up
page: alone it identifies a peer, it does not authenticate one. Anyone who can reach the port and
knows one listed title could query and retrieve every study of the node. So an entry may bind its
title to the addresses it may come from, as a firewall rule would: `"CT01"` (any address),
`"CT01@10.20.5.7"` (that host) or `"PACS@10.20.9.0/24"` (that network); a title listed several
times may come from any of its addresses. The `AET@host` form is the one dcm4che's tools use.
Addresses are IP addresses or networks, not host names: a name would be resolved on each
association (a DNS outage would stop the modalities, a forged answer would let a stranger in).

A peer whose title is not listed, or that calls from an address its title is not bound to, gets
A-ASSOCIATE-RJ (rejected-permanent, service user, "calling AE title not recognised"), audited with
the reason.
"""

from __future__ import annotations

import ipaddress
import logging
import weakref
from dataclasses import dataclass
from typing import Any

from pynetdicom import evt
from pynetdicom.association import Association

from shared.config import Config, ConfigError

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: Longest AE title (PS3.5 6.2, VR AE).
AE_TITLE_MAX = 16
#: An AE title's form in words, for the config errors that refuse one.
AE_TITLE_RULE = f"1 to {AE_TITLE_MAX} printable ASCII characters, no backslash"
#: A-ASSOCIATE-RJ: rejected-permanent, by the service user, calling AE title not recognised (PS3.8 9.3.4).
REJECTED_PERMANENT, SERVICE_USER, CALLING_AE_NOT_RECOGNISED = 0x01, 0x01, 0x03
#: A-ASSOCIATE-RJ: by the service provider (ACSE related function), no reason given (PS3.8 9.3.4).
SERVICE_PROVIDER_ACSE, NO_REASON_GIVEN = 0x02, 0x01
#: Why the node rejected an association itself, for its audit entry (`rejection_reason`).
_reasons: weakref.WeakKeyDictionary[Association, str] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Callers:
    """The allowed calling AE titles, each with the networks it may call from (None: any address)."""

    networks: dict[str, tuple[Network, ...] | None]

    @property
    def titles(self) -> list[str]:
        """The titles, for pynetdicom's own check (which cannot see addresses)."""
        return list(self.networks)

    def refusal(self, title: str, address: str) -> str | None:
        """Why a peer calling as `title` from IP `address` is refused (None: it may associate)."""
        if title not in self.networks:
            return f"calling AE title {title!r} is not in dicom.allowed_callers"
        networks = self.networks[title]
        if networks is None:
            return None
        try:
            peer = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 address may name its interface
        except ValueError:
            return f"calling AE title {title!r} from {address!r}, which is no IP address"
        if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
            peer = peer.ipv4_mapped  # an IPv4 peer of a listener bound to "::"
        if any(peer in network for network in networks):
            return None
        allowed = ", ".join(str(network) for network in networks)
        return f"calling AE title {title!r} from {peer}, not from its address in dicom.allowed_callers ({allowed})"

    def check(self, event: Any) -> None:
        """EVT_REQUESTED: reject a peer this list refuses before anything is negotiated, as pynetdicom
        rejects (the answer sent, EVT_REJECTED for the audit and the metrics, the association
        ended). pynetdicom's own check of the titles would come later and cannot see addresses."""
        assoc = event.assoc
        title = str(assoc.requestor.primitive.calling_ae_title).strip()
        try:
            reason = self.refusal(title, str(assoc.requestor.address))
        except Exception:  # pynetdicom would log it and negotiate: a failing check must refuse, not admit
            log.exception("checking the DICOM caller %r from %s failed", title, assoc.requestor.address)
            reason = f"calling AE title {title!r}: its address could not be checked"
        if reason is not None:
            reject(assoc, reason, SERVICE_USER, CALLING_AE_NOT_RECOGNISED)


def reject(assoc: Association, reason: str, source: int, diagnostic: int) -> None:
    """From an EVT_REQUESTED handler: A-ASSOCIATE-RJ, rejected-permanent, with `source` and `diagnostic`
    (PS3.8 9.3.4), as pynetdicom rejects (the answer sent, EVT_REJECTED for the audit with `reason` and
    the metrics, the association ended, never negotiated)."""
    log.warning("DICOM association from %s rejected: %s", assoc.requestor.address, reason)
    note_rejection(assoc, reason)
    request = assoc.requestor.primitive
    assert request is not None, "EVT_REQUESTED is signalled once the A-ASSOCIATE-RQ has been read"
    assoc.requestor.ae_title = str(request.calling_ae_title).strip()  # who is audited (negotiation is skipped)
    assoc.acse.send_reject(REJECTED_PERMANENT, source, diagnostic)
    evt.trigger(assoc, evt.EVT_REJECTED, {})
    assoc.kill()


def note_rejection(assoc: Association, reason: str) -> None:
    """Why the node refuses `assoc` itself (`admission` too), for its `dicom.reject` audit entry."""
    _reasons[assoc] = reason


def rejection_reason(assoc: Association) -> str:
    """Why `assoc` was rejected: the node's own reason (`Callers.check`), else the reason of the
    rejection pynetdicom sent (a wrong called AE title, too many associations)."""
    reason = _reasons.get(assoc)
    if reason:
        return reason
    answer = assoc.acceptor.primitive
    return "" if answer is None else str(answer.reason_str)


def parse_callers(config: Config) -> Callers:
    """`dicom.allowed_callers` ("AE_TITLE" or "AE_TITLE@address-or-network" each); ConfigError if an
    entry is malformed, or one title is listed both from any address and from some."""
    where = f"{config.source or '<config>'}: dicom.allowed_callers"
    networks: dict[str, tuple[Network, ...] | None] = {}
    for entry in config["dicom"]["allowed_callers"]:
        title, at, address = str(entry).rpartition("@") if "@" in str(entry) else (str(entry), "", "")
        title = title.strip()
        if not is_ae_title(title):
            raise ConfigError(f"{where}: {entry!r} does not start with an AE title ({AE_TITLE_RULE})")
        network = _network(where, entry, address.strip()) if at else None
        if title in networks and (networks[title] is None) != (network is None):
            raise ConfigError(f"{where}: {title!r} is listed both from any address and from some: list only its "
                              "addresses (\"AE_TITLE@address\"), or only the title")
        networks[title] = None if network is None else (*(networks.get(title) or ()), network)
    return Callers(networks)


def is_ae_title(title: str) -> bool:
    """Whether `title` (stripped) is an AE title (PS3.5 6.2: the default repertoire, no backslash or
    control): checked in the config, before pynetdicom's own validator refuses it with a bare error
    while the listener starts."""
    return 0 < len(title) <= AE_TITLE_MAX and title.isascii() and title.isprintable() and "\\" not in title


def _network(where: str, entry: object, address: str) -> Network:
    """The network after an entry's '@'. Not one with an interface (`fe80::1%eth0`): Python's
    comparison ignores the interface, so the entry would admit that address on every interface."""
    if "%" in address:
        raise ConfigError(f"{where}: {entry!r}: an address with an interface (%) cannot be told apart from the "
                          "same address on another interface: give a global or unique local address")
    try:
        return ipaddress.ip_network(address.strip("[]"), strict=True)
    except ValueError as exc:
        raise ConfigError(f"{where}: {entry!r}: the part after '@' must be an IP address or network such as "
                          f"10.20.5.7, 10.20.9.0/24 or fd00::/64, not a host name ({exc})") from None
