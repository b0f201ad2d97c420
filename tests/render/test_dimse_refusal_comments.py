"""The refusals pynetdicom answers by itself say why, as the node's own do (`identifiers.failure_status`):
a C-MOVE to a destination the node does not know, or one that does not accept the association (0xA801),
and a C-GET whose caller took the instances' storage SOP class without the SCP role (0xA702)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from daemons.deployment import free_port
from tests.render.dimse_peers import CALLER, SCP, c_get, close_archive, echo, open_archive
from tests.render.synthetic import dataset, to_bytes


@pytest.fixture
def archive(make_node):
    """A node with one C-MOVE destination, DOWN, where nothing listens; one study stored."""
    harness = open_archive(make_node, dicom__destinations=[f"DOWN=127.0.0.1:{free_port()}"],
                           dicom__acse_timeout_s=2.0, dicom__network_timeout_s=3.0)
    instance = dataset(series="1.2.3.4.61")
    assert harness.upload([("one.dcm", to_bytes(instance))]).status_code == 201
    harness.study_uid = str(instance.StudyInstanceUID)
    yield harness
    close_archive(harness)


def move(port: int, destination: str, study_uid: str):
    """The final response of a study root C-MOVE by pynetdicom."""
    ae = AE(ae_title=CALLER)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", port, ae_title=SCP)
    assert assoc.is_established
    query = dataset(pixels=False)
    query.clear()
    query.QueryRetrieveLevel, query.StudyInstanceUID = "STUDY", study_uid
    statuses = [status for status, _ in assoc.send_c_move(query, destination,
                                                         StudyRootQueryRetrieveInformationModelMove)]
    assoc.release()
    return statuses[-1]


def test_move_destination_refusals_say_why(archive):
    """Before, both answered a bare 0xA801: the peer could not tell a title the node does not know
    (which the operator must add to dicom.destinations) from a destination that is down."""
    unknown = move(archive.dicom_port, "NOWHERE", archive.study_uid)
    assert unknown.Status == 0xA801
    assert unknown.ErrorComment == "'NOWHERE' not in dicom.destinations: ask to add it"
    down = move(archive.dicom_port, "DOWN", archive.study_uid)
    assert down.Status == 0xA801
    assert down.ErrorComment == "'DOWN' did not accept the association; retry later"
    # the longest AE title still fits LO's 64 characters, whole
    longest = move(archive.dicom_port, "X" * 16, archive.study_uid)
    assert longest.ErrorComment == f"'{'X' * 16}' not in dicom.destinations: ask to add it"
    # the node goes on serving the same caller: a later move on a new association is answered alike
    assert move(archive.dicom_port, "NOWHERE", archive.study_uid).ErrorComment == unknown.ErrorComment


@pytest.mark.skipif(shutil.which("movescu") is None, reason="dcmtk movescu absent")
def test_movescu_reads_the_comment(archive):
    done = subprocess.run(["movescu", "-d", "-S", "-aet", CALLER, "-aec", SCP, "-aem", "NOWHERE",
                           "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={archive.study_uid}",
                           "127.0.0.1", str(archive.dicom_port)], capture_output=True, text=True, timeout=60)
    said = done.stdout + done.stderr
    assert "MoveDestinationUnknown" in said, said
    assert "not in dicom.destinations: ask to add it" in said, said


def test_a_get_without_the_scp_role_says_to_negotiate_it(archive):
    """A C-GET peer that proposes CT Image Storage but no SCP/SCU role selection for it cannot be sent
    the instance (PS3.4 C.4.3.1.3): before, 0xA702 ("out of resources") with nothing to say why."""
    query = dataset(pixels=False)
    query.clear()
    query.QueryRetrieveLevel, query.StudyInstanceUID = "STUDY", archive.study_uid
    ae = AE(ae_title=CALLER)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", archive.dicom_port, ae_title=SCP)  # no ext_neg: no role selection
    assert assoc.is_established
    statuses = [status for status, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)]
    assoc.release()
    assert statuses[-1].Status == 0xA702 and statuses[-1].NumberOfFailedSuboperations == 1
    assert statuses[-1].ErrorComment == f"propose {CTImageStorage} with SCP role selection"
    # with the role, the same C-GET is a success, and carries no comment
    last, arrived = c_get(archive.dicom_port, query, [(CTImageStorage, ["1.2.840.10008.1.2.1"])])
    assert last is not None and last.Status == 0x0000 and "ErrorComment" not in last and len(arrived) == 1
    assert echo(archive.dicom_port)
