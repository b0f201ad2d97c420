"""Calling AE titles bound to the addresses they may call from (`dicom.allowed_callers`): an AE title
alone identifies a peer, it does not authenticate one."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from daemons.deployment import free_port
from daemons.render.dimse.callers import Callers, parse_callers
from shared.config import Config, ConfigError
from tests.render.dimse_peers import CALLER, SCP, close_archive, echo, open_archive


def callers(*entries: str) -> Callers:
    return parse_callers(Config({"dicom": {"allowed_callers": list(entries)}}, "render", Path("node.toml")))


def test_a_title_alone_may_call_from_anywhere():
    listed = callers("CT01")
    assert listed.refusal("CT01", "10.1.2.3") is None
    assert listed.refusal("CT01", "::1") is None
    assert "not in dicom.allowed_callers" in listed.refusal("CT02", "10.1.2.3")


def test_a_bound_title_calls_only_from_its_addresses():
    listed = callers("CT01@10.20.5.7", "PACS@10.20.9.0/24", "PACS@fd00::/64", "WS@[::1]")
    assert listed.titles == ["CT01", "PACS", "WS"]
    assert listed.refusal("CT01", "10.20.5.7") is None
    assert "from 10.20.5.8, not from its address in dicom.allowed_callers (10.20.5.7/32)" in \
        listed.refusal("CT01", "10.20.5.8")
    assert listed.refusal("PACS", "10.20.9.200") is None
    assert listed.refusal("PACS", "fd00::17") is None
    assert listed.refusal("PACS", "::ffff:10.20.9.4") is None  # IPv4 peer of a listener bound to "::"
    assert listed.refusal("PACS", "10.20.10.1") is not None
    assert listed.refusal("WS", "::1") is None and listed.refusal("WS", "127.0.0.1") is not None
    assert listed.refusal("WS", "::1%lo") is None
    assert "no IP address" in listed.refusal("WS", "localhost")


@pytest.mark.parametrize(("entries", "message"), [
    (["CT01@ct01.hospital.example"], "not a host name"),
    (["CT01@fe80::1%eth0"], "with an interface"),
    (["CT01@10.20.9.1/24"], "has host bits set"),
    (["@10.0.0.1"], "does not start with an AE title"),
    (["A_TITLE_LONGER_THAN_16"], "1 to 16"),
    (["BACK\\SLASH"], "no backslash"),
    (["\u00c9CHO"], "printable ASCII"),
    (["CT01", "CT01@10.0.0.1"], "listed both from any address and from some"),
    (["CT01@10.0.0.1", "CT01"], "listed both from any address and from some"),
])
def test_malformed_callers_stop_the_node_from_starting(entries, message):
    with pytest.raises(ConfigError, match=message) as raised:
        callers(*entries)
    assert "node.toml: dicom.allowed_callers" in str(raised.value)


def test_a_node_with_a_malformed_caller_does_not_start(make_node):
    with pytest.raises(ConfigError, match="not a host name"):
        make_node(dicom__port=free_port(), dicom__allowed_callers=["CT01@ct01.example"])


def audit_details(harness, action: str) -> list[str]:
    audit = harness.app.extensions["sivr_node"].models.AuditEntry
    return [row.detail for row in audit.select().where(audit.action == action)]


def wait_for(predicate, seconds: float = 10.0) -> bool:
    """pynetdicom tells of a rejection (audit row) after it has sent it to the peer."""
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return predicate()


def test_a_known_title_from_another_address_is_rejected_and_audited(make_node):
    """The peers call from 127.0.0.1: bound to 127.0.0.0/8 they associate, bound to another
    address the same title is rejected as a stranger is, with the reason in the audit."""
    harness = open_archive(make_node, [f"{CALLER}@127.0.0.0/8", "ELSEWHERE@192.0.2.10"])
    try:
        assert echo(harness.dicom_port, CALLER)
        assert not echo(harness.dicom_port, "ELSEWHERE")
        assert wait_for(lambda: audit_details(harness, "dicom.reject"))
        [detail] = audit_details(harness, "dicom.reject")
        assert detail == ("calling AE title 'ELSEWHERE' from 127.0.0.1, not from its address in "
                          "dicom.allowed_callers (192.0.2.10/32)")
        audit = harness.app.extensions["sivr_node"].models.AuditEntry
        row = audit.get(audit.action == "dicom.reject")
        assert (row.username, row.client_ip) == ("ELSEWHERE", "127.0.0.1")
        metrics = harness.client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"}).get_data(as_text=True)
        assert 'sivr_dicom_associations_total{result="rejected"} 1.0' in metrics
        # a title that is not listed at all: the same answer, its own reason
        assert not echo(harness.dicom_port, "STRANGER")
        assert wait_for(lambda: len(audit_details(harness, "dicom.reject")) == 2)
        stranger = audit_details(harness, "dicom.reject")[1]
        assert stranger == "calling AE title 'STRANGER' is not in dicom.allowed_callers"
        # and the listener still serves the allowed peer
        assert echo(harness.dicom_port, CALLER)
    finally:
        close_archive(harness)


@pytest.mark.skipif(shutil.which("echoscu") is None, reason="dcmtk's echoscu absent")
def test_dcmtk_reads_the_rejection_of_a_bound_title(make_node):
    harness = open_archive(make_node, ["ELSEWHERE@192.0.2.10"])
    try:
        refused = subprocess.run(["echoscu", "-aet", "ELSEWHERE", "-aec", SCP, "127.0.0.1", str(harness.dicom_port)],
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0
        assert "Calling AE Title Not Recognized" in refused.stdout + refused.stderr
    finally:
        close_archive(harness)


def test_a_wrong_called_title_is_audited_with_its_reason(make_node):
    harness = open_archive(make_node, [CALLER])
    try:
        assert not echo(harness.dicom_port, CALLER, called="NOT-THE-NODE")
        assert wait_for(lambda: audit_details(harness, "dicom.reject"))
        assert audit_details(harness, "dicom.reject") == ["Called AE title not recognised"]
    finally:
        close_archive(harness)


def ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback on this machine")
def test_a_listener_on_both_ip_versions_matches_ipv4_peers_by_their_ipv4_address(make_node):
    """Bound to "::", the listener sees an IPv4 peer as ::ffff:127.0.0.1: it is matched as 127.0.0.1."""
    harness = open_archive(make_node, [f"{CALLER}@127.0.0.1", "V6PEER@::1"], dicom__host="::")
    try:
        assert echo(harness.dicom_port, CALLER)  # over IPv4
        assert not echo(harness.dicom_port, "V6PEER")  # over IPv4 too: not its address
        assert wait_for(lambda: audit_details(harness, "dicom.reject"))
        assert audit_details(harness, "dicom.reject") == [
            "calling AE title 'V6PEER' from 127.0.0.1, not from its address in dicom.allowed_callers (::1/128)"]
        assert echo(harness.dicom_port, "V6PEER", host="::1")
        assert not echo(harness.dicom_port, CALLER, host="::1")
    finally:
        close_archive(harness)


def test_a_check_that_fails_refuses_the_caller(make_node, monkeypatch):
    """pynetdicom logs an exception of an EVT_REQUESTED handler and negotiates: the address check
    must fail closed, or a bound title would be admitted from anywhere."""
    harness = open_archive(make_node, ["ELSEWHERE@192.0.2.10", CALLER])

    def broken(self, title, address):
        raise RuntimeError("the check broke")

    monkeypatch.setattr(Callers, "refusal", broken)
    try:
        assert not echo(harness.dicom_port, "ELSEWHERE")
        assert not echo(harness.dicom_port, CALLER)
        assert wait_for(lambda: len(audit_details(harness, "dicom.reject")) == 2)
        first = audit_details(harness, "dicom.reject")[0]
        assert first == "calling AE title 'ELSEWHERE': its address could not be checked"
    finally:
        close_archive(harness)
