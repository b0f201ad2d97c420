"""DICOM TLS on a render node's listener and to its C-MOVE destinations, with real peers on loopback:
dcmtk `echoscu`/`storescu`/`findscu` with `+tls`, a TLS `storescp` as C-MOVE destination, and
pynetdicom with an ssl context (also the C-MOVE requester: dcmtk's `movescu` has no TLS);
issue 11, "Optional DICOM TLS"."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from daemons.deployment import free_port, free_ports
from shared.config import ConfigError
from shared.tls import create_ca, issue_server_cert
from tests.render.test_dimse_retrieve import CALLER, CT, SCP, originals, received, wait_port

pytestmark = pytest.mark.skipif(shutil.which("storescu") is None or shutil.which("storescp") is None,
                                reason="dcmtk (echoscu, storescu, findscu, storescp) absent")


class Pki:
    """A CA, certificates it signs for the node, a modality and a destination, and a rogue CA's."""

    def __init__(self, folder: Path):
        self.folder = folder
        create_ca(folder / "ca.pem", folder / "ca.key")
        create_ca(folder / "rogue-ca.pem", folder / "rogue-ca.key")
        for name, ca in (("node", "ca"), ("modality", "ca"), ("dest", "ca"), ("rogue", "rogue-ca")):
            issue_server_cert(folder / f"{ca}.pem", folder / f"{ca}.key", folder / f"{name}.pem",
                              folder / f"{name}.key", client_auth=True)

    def __getitem__(self, name: str) -> str:
        return str(self.folder / name)

    def dcmtk(self, name: str = "modality") -> list[str]:
        """dcmtk's TLS options for a peer with certificate `name` that trusts the CA."""
        return ["+tls", self[f"{name}.key"], self[f"{name}.pem"], "+cf", self["ca.pem"]]

    def context(self, name: str | None = "modality") -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self["ca.pem"])
        if name:
            context.load_cert_chain(self[f"{name}.pem"], self[f"{name}.key"])
        return context


@pytest.fixture
def pki(tmp_path) -> Pki:
    folder = tmp_path / "pki"
    folder.mkdir()
    return Pki(folder)


@pytest.fixture
def secure(make_node, pki, tmp_path):
    """A node with a plain and a TLS listener (the HTTPS certificate, as by default), client
    certificates required, and one C-MOVE destination over TLS: a dcmtk storescp with +tls that
    accepts JPEG 2000 lossless (the demo CT's stored syntax, so it receives the stored bytes)."""
    dest_port, port, tls_port = free_ports(3)
    harness = make_node(dicom__port=port, dicom__tls_port=tls_port, dicom__ae_title=SCP,
                        dicom__allowed_callers=[CALLER], dicom__tls_ca=pki["ca.pem"],
                        dicom__destinations=[f"SECURE=tls://127.0.0.1:{dest_port}"],
                        dicom__network_timeout_s=20.0, server__tls_cert=pki["node.pem"],
                        server__tls_key=pki["node.key"])
    listener = harness.app.extensions["sivr_dimse"]
    harness.dicom_port, harness.tls_port = listener.port, listener.tls_port
    folder = tmp_path / "received"
    folder.mkdir()
    scp = subprocess.Popen(["storescp", "-aet", "SECURE", *pki.dcmtk("dest"), "+xv", "+B", "-od", str(folder),
                            str(dest_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(dest_port)
    harness.received = folder
    yield harness
    scp.terminate()
    scp.wait(10)
    listener.stop()
    harness.registry.shutdown()
    harness.app.extensions["sivr_view_audit"].close()
    harness.app.extensions["sivr_node"].decoder.close()


def dcmtk(tool: str, port: int, *args: str, caller: str = CALLER, files=()) -> subprocess.CompletedProcess:
    return subprocess.run([tool, "-aet", caller, "-aec", SCP, *args, "127.0.0.1", str(port), *map(str, files)],
                          capture_output=True, text=True, timeout=300)


def pynetdicom_echo(port: int, context: ssl.SSLContext | None, caller: str = CALLER) -> bool:
    ae = AE(ae_title=caller)
    ae.connection_timeout = ae.acse_timeout = 10  # the TLS handshake runs within the connection's timeout
    ae.add_requested_context(Verification)
    tls = {"tls_args": (context, "127.0.0.1")} if context else {}
    assoc = ae.associate("127.0.0.1", port, ae_title=SCP, **tls)
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and status.Status == 0x0000


def test_echo_store_find_and_move_over_tls_with_dcmtk(secure, pki):
    files = sorted(CT.glob("*.dcm"))[:5]
    assert dcmtk("echoscu", secure.tls_port, *pki.dcmtk()).returncode == 0
    stored = dcmtk("storescu", secure.tls_port, *pki.dcmtk(), "-xv", files=files)
    assert stored.returncode == 0, stored.stderr
    header = pydicom.dcmread(files[0], stop_before_pixels=True)
    catalogue = secure.app.extensions["sivr_node"].models.catalogue
    assert catalogue.Instance.select().count() == 5
    found = dcmtk("findscu", secure.tls_port, *pki.dcmtk(), "-S", "-k", "QueryRetrieveLevel=SERIES",
                  "-k", f"SeriesInstanceUID={header.SeriesInstanceUID}", "-k", "NumberOfSeriesRelatedInstances")
    assert found.returncode == 0 and "(0020,1209) IS [5 ]" in found.stdout + found.stderr
    # C-MOVE requested over TLS (pynetdicom: dcmtk's movescu has no TLS), sent to a TLS storescp as stored
    ae = AE(ae_title=CALLER)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", secure.tls_port, ae_title=SCP, tls_args=(pki.context(), "127.0.0.1"))
    assert assoc.is_established
    query = pydicom.Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.StudyInstanceUID, query.SeriesInstanceUID = header.StudyInstanceUID, header.SeriesInstanceUID
    statuses = [status.Status for status, _ in assoc.send_c_move(query, "SECURE",
                                                                  StudyRootQueryRetrieveInformationModelMove)]
    assoc.release()
    assert statuses[-1] == 0x0000
    got, sent = received(secure.received), originals(files)
    assert set(got) == set(sent)
    for uid, path in got.items():  # storescu re-encodes the data set, the stored pixel data travels as is
        moved_ds, sent_ds = pydicom.dcmread(path), pydicom.dcmread(sent[uid])
        assert moved_ds.file_meta.TransferSyntaxUID == sent_ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
        assert moved_ds.PixelData == sent_ds.PixelData
    # the plain listener serves alongside
    assert dcmtk("echoscu", secure.dicom_port).returncode == 0


def test_pynetdicom_over_tls_and_callers_still_checked(secure, pki):
    assert pynetdicom_echo(secure.tls_port, pki.context())
    ae = AE(ae_title=CALLER)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", secure.tls_port, ae_title=SCP, tls_args=(pki.context(), "127.0.0.1"))
    assert assoc.is_established
    query = pydicom.Dataset()
    query.QueryRetrieveLevel, query.StudyInstanceUID = "STUDY", ""
    statuses = [status.Status for status, _ in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)]
    assoc.release()
    assert statuses == [0x0000]  # an empty catalogue: no matches, success
    # a trusted certificate does not make an unknown AE title a caller
    refused = dcmtk("echoscu", secure.tls_port, *pki.dcmtk(), caller="STRANGER")
    assert refused.returncode != 0 and "Calling AE Title Not Recognized" in refused.stdout + refused.stderr


def test_plain_untrusted_and_anonymous_clients_refused(secure, pki):
    # no TLS to the TLS port: no association, and the node still serves
    assert dcmtk("echoscu", secure.tls_port).returncode != 0
    assert not pynetdicom_echo(secure.tls_port, None)
    # a certificate from another CA, or none at all (client certificates are required)
    assert dcmtk("echoscu", secure.tls_port, "+tls", pki["rogue.key"], pki["rogue.pem"], "+cf",
                 pki["ca.pem"]).returncode != 0
    assert not pynetdicom_echo(secure.tls_port, pki.context("rogue"))
    assert dcmtk("echoscu", secure.tls_port, "+tla", "+cf", pki["ca.pem"]).returncode != 0
    assert not pynetdicom_echo(secure.tls_port, pki.context(None))
    assert pynetdicom_echo(secure.tls_port, pki.context())
    audit = secure.app.extensions["sivr_node"].models.AuditEntry
    assert audit.select().where(audit.action == "dicom.associate").count() == 1


def _handshake(port: int, pki: Pki, **settings) -> str:
    """The suite negotiated by a client with the given context settings (ssl.SSLError if refused)."""
    context = pki.context()
    for name, value in settings.items():
        setattr(context, name, value) if name != "ciphers" else context.set_ciphers(value)
    with (socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
          context.wrap_socket(raw, server_hostname="127.0.0.1") as tls):
        return tls.cipher()[0]


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("settings", [
    {"maximum_version": ssl.TLSVersion.TLSv1_2, "ciphers": "ECDHE-ECDSA-AES128-SHA256"},
    {"maximum_version": ssl.TLSVersion.TLSv1_2, "ciphers": "ECDHE-ECDSA-AES256-SHA:AES128-SHA"},
    {"minimum_version": ssl.TLSVersion.TLSv1, "maximum_version": ssl.TLSVersion.TLSv1_1,
     "ciphers": "ALL:@SECLEVEL=0"},
])
def test_old_protocols_and_non_aead_suites_refused(secure, pki, settings):
    with pytest.raises(ssl.SSLError, match="ALERT"):  # the node's refusal, not the client's own
        _handshake(secure.tls_port, pki, **settings)
    assert _handshake(secure.tls_port, pki, maximum_version=ssl.TLSVersion.TLSv1_2,
                      ciphers="ECDHE-ECDSA-AES128-GCM-SHA256") == "ECDHE-ECDSA-AES128-GCM-SHA256"


def test_a_peer_that_never_shakes_hands_blocks_nobody(secure, pki):
    """The handshake runs in the association's thread: a silent connection does not stop the accepting one."""
    with socket.create_connection(("127.0.0.1", secure.tls_port)):
        started = time.monotonic()
        assert pynetdicom_echo(secure.tls_port, pki.context())
        assert time.monotonic() - started < 1.5  # well under dicom.network_timeout_s


def test_tls_settings_checked_at_start(make_node, pki):
    with pytest.raises(ConfigError, match="tls_cert"):
        make_node(dicom__tls_port=free_port(), dicom__allowed_callers=[CALLER], dicom__tls_ca=pki["ca.pem"])
    with pytest.raises(ConfigError, match="tls_ca"):
        make_node(dicom__tls_port=free_port(), dicom__allowed_callers=[CALLER], dicom__tls_cert=pki["node.pem"],
                  dicom__tls_key=pki["node.key"])
    with pytest.raises(ConfigError, match="tls_cert"):
        make_node(dicom__port=free_port(), dicom__allowed_callers=[CALLER],
                  dicom__destinations=["SAFE=tls://127.0.0.1:2762"])
    with pytest.raises(ConfigError, match="unusable"):
        make_node(dicom__tls_port=free_port(), dicom__allowed_callers=[CALLER], dicom__tls_cert=pki["node.pem"],
                  dicom__tls_key=pki["rogue.key"], dicom__tls_ca=pki["ca.pem"])
    with pytest.raises(ConfigError, match="allowed_callers"):
        make_node(dicom__tls_port=free_port(), dicom__allowed_callers=[])


def test_move_to_a_tls_destination_with_an_untrusted_certificate_sends_nothing(make_node, pki, tmp_path):
    """The destination's certificate is verified: one from another CA fails the move, no instance leaves."""
    dest_port, port = free_ports(2)
    harness = make_node(dicom__port=port, dicom__ae_title=SCP, dicom__allowed_callers=[CALLER],
                        dicom__tls_ca=pki["ca.pem"], dicom__destinations=[f"IMPOSTOR=tls://127.0.0.1:{dest_port}"],
                        dicom__tls_cert=pki["node.pem"], dicom__tls_key=pki["node.key"])
    listener = harness.app.extensions["sivr_dimse"]
    folder = tmp_path / "impostor"
    folder.mkdir()
    scp = subprocess.Popen(["storescp", "-aet", "IMPOSTOR", "+tls", pki["rogue.key"], pki["rogue.pem"], "-ic",
                            "+xv", "+B", "-od", str(folder), str(dest_port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(dest_port)
        files = sorted(CT.glob("*.dcm"))[:2]
        assert harness.upload(files).status_code == 201
        header = pydicom.dcmread(files[0], stop_before_pixels=True)
        moved = subprocess.run(["movescu", "-aet", CALLER, "-aec", SCP, "-S", "-aem", "IMPOSTOR",
                                "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={header.StudyInstanceUID}",
                                "127.0.0.1", str(listener.port)], capture_output=True, text=True, timeout=120)
        # 0xA801: the destination "cannot be associated with" (docs/conformance.md)
        assert "MoveDestinationUnknown" in moved.stderr
        assert not list(folder.iterdir())
        audit = harness.app.extensions["sivr_node"].models.AuditEntry
        details = [row.detail for row in audit.select().where(audit.action == "dicom.move")]
        assert details == ["level=STUDY destination=IMPOSTOR instances=2 completed=0 warning=0 failed=2"]
    finally:
        scp.terminate()
        scp.wait(10)
        listener.stop()
        harness.registry.shutdown()
        harness.app.extensions["sivr_view_audit"].close()
        harness.app.extensions["sivr_node"].decoder.close()
