"""C-FIND answers say when a key of the identifier was not supported (PS3.4 Table C.4-1): every pending
answer is 0xFF01 ("one or more Optional Keys were not supported for existence and/or matching") when
the identifier holds an attribute the node neither matches nor returns, 0xFF00 otherwise. Before, an
identifier asking InstitutionName=NOPE got every study of the archive as 0xFF00, which tells the peer
the key was matched (Orthanc answers it with no study), and dcmtk's findscu could not tell an absent
return key from one the node does not support."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from daemons.render.catalogue.index import InstanceHeader, index_series
from tests.render.dimse_peers import CALLER, SCP, close_archive, open_archive

STUDIES = 3


def header(index: int) -> InstanceHeader:
    ds = Dataset()
    ds.PatientID, ds.PatientName, ds.PatientSex = f"P{index}", f"NAME{index}^GIVEN", "F"
    ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = f"1.2.826.0.59.{index}", "20240101", "101500"
    ds.SeriesInstanceUID, ds.Modality, ds.SeriesNumber = f"1.2.826.0.59.{index}.1", "CT", 1
    ds.SOPInstanceUID, ds.SOPClassUID = f"1.2.826.0.59.{index}.1.1", "1.2.840.10008.5.1.4.1.1.2"
    return InstanceHeader(ds, "0" * 64, 0)


@pytest.fixture(scope="module")
def archive(tmp_path_factory, token_keys):
    from tests.render.conftest import build_node

    harness = open_archive(lambda **overrides: build_node(tmp_path_factory.mktemp("find-keys"), token_keys,
                                                          **overrides))
    models = harness.app.extensions["sivr_node"].models
    with models.database.connection_context():
        for index in range(STUDIES):
            index_series(models.catalogue, f"r{index}", [header(index)])
    yield harness
    close_archive(harness)


def find(port: int, syntax: str = ImplicitVRLittleEndian, **keys) -> tuple[list[int], list[Dataset]]:
    """pynetdicom's C-FIND at STUDY level with `keys` (keyword or a (tag, VR, value) triple): statuses, answers."""
    ae = AE(ae_title=CALLER)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind, [syntax])
    assoc = ae.associate("127.0.0.1", port, ae_title=SCP)
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel, query.StudyInstanceUID, query.PatientName = "STUDY", "", ""
    for keyword, value in keys.items():
        if isinstance(value, tuple):
            query.add_new(*value)
        else:
            setattr(query, keyword, value)
    statuses, answers = [], []
    for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
        statuses.append(status.Status)
        if identifier is not None:
            answers.append(identifier)
    assoc.release()
    return statuses, answers


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRBigEndian], ids=["written-here", "pydicom"])
def test_supported_keys_only_are_answered_0xff00(archive, syntax):
    statuses, answers = find(archive.dicom_port, syntax, StudyDate="20240101", NumberOfStudyRelatedInstances="",
                             SpecificCharacterSet="ISO_IR 100")
    assert statuses == [0xFF00] * STUDIES + [0x0000]
    assert len(answers) == STUDIES
    # PS3.4 C.4.1.1.3.1 names these beside Specific Character Set as attributes that are no keys
    statuses, answers = find(archive.dicom_port, syntax, TimezoneOffsetFromUTC="", QueryRetrieveView="")
    assert statuses == [0xFF00] * STUDIES + [0x0000]


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRBigEndian], ids=["written-here", "pydicom"])
def test_the_node_returns_its_retrieve_ae_title_and_availability(archive, syntax):
    """PS3.4 C.4.1.1.3.2: the SCP may return Retrieve AE Title and Instance Availability at every level;
    asked for, they were left out (and so, with 0xFF01, flagged as unsupported), where Orthanc and dcm4chee
    name where to C-MOVE from. Given a value, they are not matched: 0xFF01."""
    statuses, answers = find(archive.dicom_port, syntax, RetrieveAETitle="", InstanceAvailability="")
    assert statuses == [0xFF00] * STUDIES + [0x0000]
    assert {(answer.RetrieveAETitle, answer.InstanceAvailability) for answer in answers} == {(SCP, "ONLINE")}
    for everything in ("*", "**", " * "):  # match every value (matching.is_universal): returned, nothing ignored
        statuses, answers = find(archive.dicom_port, syntax, RetrieveAETitle=everything)
        assert statuses == [0xFF00] * STUDIES + [0x0000], everything
    statuses, answers = find(archive.dicom_port, syntax, RetrieveAETitle="ELSEWHERE")
    assert statuses == [0xFF01] * STUDIES + [0x0000]
    assert {answer.RetrieveAETitle for answer in answers} == {SCP}


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRBigEndian], ids=["written-here", "pydicom"])
@pytest.mark.parametrize("keys", [
    {"InstitutionName": "NOPE"},  # a matching key the catalogue does not hold: not matched
    {"InstitutionName": ""},  # a return key it does not hold: not returned
    {"NumberOfStudyRelatedInstances": "5"},  # a count, which PS3.4 gives no matching
    {"private": (0x00091001, "LO", "x")},
], ids=["unsupported-matching-key", "unsupported-return-key", "count-given-a-value", "private"])
def test_an_unsupported_key_makes_every_answer_0xff01(archive, syntax, keys):
    statuses, answers = find(archive.dicom_port, syntax, **keys)
    assert statuses == [0xFF01] * STUDIES + [0x0000]
    assert len(answers) == STUDIES and all("InstitutionName" not in answer for answer in answers)


@pytest.mark.skipif(shutil.which("findscu") is None, reason="dcmtk's findscu absent")
def test_findscu_is_told_which_answers_ignored_a_key(archive):
    def statuses(*keys: str) -> list[str]:
        run = subprocess.run(["findscu", "-d", "-S", "-aet", CALLER, "-aec", SCP, "-k", "QueryRetrieveLevel=STUDY",
                              "-k", "StudyInstanceUID", *[arg for key in keys for arg in ("-k", key)], "127.0.0.1",
                              str(archive.dicom_port)], capture_output=True, text=True, timeout=30,
                             env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"})
        assert run.returncode == 0, run.stderr
        return [line.split(":")[2].strip().split()[0] for line in run.stderr.splitlines()
                if line.startswith("D: DIMSE Status")]

    assert statuses("PatientID") == ["0xff00"] * STUDIES + ["0x0000"]
    assert statuses("InstitutionName=NOPE") == ["0xff01"] * STUDIES + ["0x0000"]
