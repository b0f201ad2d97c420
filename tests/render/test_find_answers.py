"""C-FIND answers written straight from the catalogue's values (`dimse.find_answers`): the same
bytes pydicom writes, pydicom's own path for what they could not be written as, and peers (pynetdicom
in every transfer syntax the node accepts, with a small maximum PDU, and dcmtk's findscu) that
get every answer as before."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from daemons.render.catalogue.index import InstanceHeader, index_series
from daemons.render.catalogue.matching import Answers
from daemons.render.dimse.find_answers import DRAIN_EVERY, encode_identifier
from tests.render.dimse_peers import CALLER, SCP, close_archive, open_archive

STUDY_KEYS = ["PatientName", "PatientID", "PatientSex", "StudyInstanceUID", "StudyDate", "StudyTime",
              "AccessionNumber", "StudyDescription", "ModalitiesInStudy", "NumberOfStudyRelatedInstances",
              "NumberOfStudyRelatedSeries", "ReferringPhysicianName"]
ROWS = [
    {"PatientName": "DOE^JOHN", "PatientID": "P1", "PatientSex": "M", "StudyInstanceUID": "1.2.3",
     "StudyDate": "20240101", "StudyTime": "101500.5", "AccessionNumber": "A1", "StudyDescription": "CT CHEST",
     "ModalitiesInStudy": "CT\\SR", "NumberOfStudyRelatedInstances": 120, "NumberOfStudyRelatedSeries": 3,
     "ReferringPhysicianName": "WHO^DR"},
    # odd lengths everywhere (a UID pads with NUL, text with a space), empty values, no counts
    {"PatientName": "X", "PatientID": "", "PatientSex": "", "StudyInstanceUID": "1.2.34", "StudyDate": "",
     "StudyTime": "1", "AccessionNumber": "ABC", "StudyDescription": "", "ModalitiesInStudy": "MR",
     "NumberOfStudyRelatedInstances": None, "NumberOfStudyRelatedSeries": 0, "ReferringPhysicianName": ""},
    # other scripts: the answer names UTF-8, and the VRs that follow it are written in it
    {"PatientName": "ÅNGSTRÖM^ÉMILE=山田^太郎", "PatientID": "ÜNI-7", "PatientSex": "F", "StudyInstanceUID": "9.8",
     "StudyDate": "19991231", "StudyTime": "235959", "AccessionNumber": "Ä", "StudyDescription": "Thorax ärztlich",
     "ModalitiesInStudy": "CT", "NumberOfStudyRelatedInstances": 7, "NumberOfStudyRelatedSeries": 1,
     "ReferringPhysicianName": "Müller^Zoë"},
    {"PatientName": "ODD^", "PatientID": "P\\2", "PatientSex": "O", "StudyInstanceUID": "1.2.840.10008.1.2.1.99.1",
     "StudyDate": "20000229", "StudyTime": "0000", "AccessionNumber": "A" * 16, "StudyDescription": "a" * 63,
     "ModalitiesInStudy": "CT\\MR\\PT", "NumberOfStudyRelatedInstances": -1, "NumberOfStudyRelatedSeries": 10 ** 11,
     "ReferringPhysicianName": "^^^"},
]


@pytest.mark.parametrize("implicit_vr", [True, False], ids=["implicit", "explicit"])
@pytest.mark.parametrize("row", ROWS, ids=["plain", "odd-and-empty", "utf8", "multi-valued"])
@pytest.mark.parametrize("level,requested", [("STUDY", STUDY_KEYS), ("STUDY", []), ("PATIENT", ["PatientID"])])
def test_an_identifier_is_the_bytes_pydicom_writes(row, implicit_vr, level, requested):
    answers = Answers(level, requested, [row])
    written = encode_identifier(answers.values(row), implicit_vr)
    assert written is not None
    assert written == encode(answers.dataset(row), implicit_vr, True, False)


@pytest.mark.parametrize("name", ["DOE^JOHN=", "Wang^XiaoDong=王^小東=", "==", "A\\B=", "Yamada^Tarou=山田^太郎=="])
def test_a_person_name_ending_in_an_empty_group_is_left_to_pydicom(name):
    """pydicom drops a person name's trailing empty component groups (`DOE^JOHN=` is written
    `DOE^JOHN`): such an answer is pydicom's to write, so the bytes stay the ones it writes."""
    row = {**ROWS[0], "PatientName": name}
    answers = Answers("STUDY", STUDY_KEYS, [row])
    assert encode_identifier(answers.values(row), False) is None
    ok = {**ROWS[0], "PatientName": name.rstrip("=") + "=X"}  # a group that is not empty: written here
    answers = Answers("STUDY", STUDY_KEYS, [ok])
    assert encode_identifier(answers.values(ok), False) == encode(answers.dataset(ok), False, True, False)


def test_what_pydicom_would_write_otherwise_is_left_to_it():
    """A CS with a letter beyond ASCII: pydicom writes it in Latin-1 whatever the character set,
    so this module writes no such answer (nor one of a VR it does not know)."""
    assert encode_identifier([("PatientSex", "É")], False) is None
    assert encode_identifier([("SpecificCharacterSet", "ISO_IR 192"), ("PatientSex", "É")], True) is None
    assert encode_identifier([("Rows", "12")], False) is None  # US: not text
    assert encode_identifier([("NoSuchKeyword", "x")], False) is None
    assert encode_identifier([("PatientID", "\udc80")], False) is None  # a lone surrogate


def header(index: int, name: str, sex: str = "M") -> InstanceHeader:
    ds = Dataset()
    ds.PatientID, ds.PatientName, ds.PatientSex = f"P{index:04d}", name, sex
    ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = f"1.2.826.0.1.{index}", "20240101", "101500"
    ds.AccessionNumber, ds.StudyDescription = f"A{index}", "x" * (index % 64)
    ds.SeriesInstanceUID, ds.Modality = f"1.2.826.0.1.{index}.1", "CT"
    ds.SOPInstanceUID, ds.SOPClassUID = f"1.2.826.0.1.{index}.1.1", "1.2.840.10008.5.1.4.1.1.2"
    ds.SeriesNumber = 1
    return InstanceHeader(ds, "0" * 64, 0)


STUDIES = 600


@pytest.fixture(scope="module")
def archive(tmp_path_factory, token_keys):
    """A node with STUDIES studies in its catalogue: plain names, one in other scripts, and one whose
    PatientSex (CS) has a letter beyond ASCII (answered through pydicom's path)."""
    from tests.render.conftest import build_node

    def make(**overrides):
        return build_node(tmp_path_factory.mktemp("find-answers"), token_keys, **overrides)

    harness = open_archive(make)
    models = harness.app.extensions["sivr_node"].models
    with models.database.connection_context():
        for index in range(STUDIES):
            name = "ÅNGSTRÖM^ÉMILE=山田^太郎" if index == 7 else f"NAME{index}^GIVEN"
            index_series(models.catalogue, f"r{index:04d}", [header(index, name, "É" if index == 9 else "M")])
    yield harness
    close_archive(harness)


def study_query() -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    for keyword in ("StudyInstanceUID", "PatientName", "PatientID", "PatientSex", "StudyDescription",
                    "AccessionNumber", "NumberOfStudyRelatedInstances"):
        setattr(query, keyword, "")
    return query


def pynetdicom_find(port: int, syntax: str, maximum_pdu: int = 16382) -> tuple[list[int], list[Dataset]]:
    ae = AE(ae_title=CALLER)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind, [syntax])
    assoc = ae.associate("127.0.0.1", port, ae_title=SCP, max_pdu=maximum_pdu)
    assert assoc.acceptor is not None and assoc.requestor.maximum_length == maximum_pdu
    assert assoc.is_established
    statuses, answers = [], []
    for status, identifier in assoc.send_c_find(study_query(), StudyRootQueryRetrieveInformationModelFind):
        statuses.append(status.Status)
        if identifier is not None and status.Status == 0xFF00:
            answers.append(identifier)
    assoc.release()
    return statuses, answers


def check_answers(answers: list[Dataset]) -> None:
    assert len(answers) == STUDIES
    by_uid = {str(answer.StudyInstanceUID): answer for answer in answers}
    assert len(by_uid) == STUDIES
    assert str(by_uid["1.2.826.0.1.7"].PatientName) == "ÅNGSTRÖM^ÉMILE=山田^太郎"
    assert by_uid["1.2.826.0.1.7"].SpecificCharacterSet == "ISO_IR 192"
    assert by_uid["1.2.826.0.1.9"].PatientSex == "É"
    assert by_uid["1.2.826.0.1.63"].StudyDescription == "x" * 63
    assert by_uid["1.2.826.0.1.12"].PatientName == "NAME12^GIVEN"
    assert by_uid["1.2.826.0.1.12"].QueryRetrieveLevel == "STUDY"
    assert all(answer.NumberOfStudyRelatedInstances == 1 for answer in answers)


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian])
def test_every_answer_arrives_in_each_syntax(archive, syntax):
    """Each syntax of the query contexts (not Deflated: test_dimse_hostile, the deflate bombs)."""
    statuses, answers = pynetdicom_find(archive.dicom_port, syntax)
    assert statuses == [0xFF00] * STUDIES + [0x0000]
    check_answers(answers)


@pytest.mark.parametrize("maximum_pdu", [240, 0], ids=["240-bytes", "unlimited"])
def test_answers_larger_than_the_peers_pdus_are_fragmented(archive, maximum_pdu, monkeypatch):
    """A peer taking PDUs of 240 bytes: the answers whose command and identifier do not fit one (a
    study description longer than about 30 characters) go through pynetdicom's fragmentation, in
    their place among the others. A peer that sets no limit (0) gets one PDU per answer."""
    fragmented = []
    send_msg = DIMSEServiceProvider.send_msg
    monkeypatch.setattr(DIMSEServiceProvider, "send_msg", lambda self, primitive, context_id: (
        fragmented.append(primitive.Status), send_msg(self, primitive, context_id))[1])
    statuses, answers = pynetdicom_find(archive.dicom_port, ExplicitVRLittleEndian, maximum_pdu=maximum_pdu)
    assert statuses == [0xFF00] * STUDIES + [0x0000]
    check_answers(answers)
    # pynetdicom sent the final response and, with 240 bytes, the answers too long for one PDU
    pending = fragmented.count(0xFF00)
    assert (0 < pending < STUDIES - 1) if maximum_pdu else pending == 1  # 1: the Latin-1 answer


@pytest.mark.skipif(shutil.which("findscu") is None, reason="dcmtk's findscu absent")
def test_findscu_gets_every_answer_and_a_cancel_leaves_the_association_usable(archive, tmp_path):
    keys = [arg for keyword in ("StudyInstanceUID", "PatientName", "StudyDescription")
            for arg in ("-k", keyword)]
    done = subprocess.run(["findscu", "-S", "-aet", CALLER, "-aec", SCP, "-v", "-X", "-od", str(tmp_path),
                           "-k", "QueryRetrieveLevel=STUDY", *keys, "127.0.0.1", str(archive.dicom_port)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert len(list(tmp_path.glob("rsp*.dcm"))) == STUDIES
    assert "Received Final Find Response (Success)" in done.stdout + done.stderr
    # a C-CANCEL after 3 answers ends the search at the node's next pause for its network thread
    # to read (every DRAIN_EVERY answers; several here, so that a findscu slowed by a busy machine
    # still cancels before the last); the same query again on that association (--repeat 2) succeeds
    assert STUDIES > 4 * DRAIN_EVERY
    done = subprocess.run(["findscu", "-S", "-aet", CALLER, "-aec", SCP, "-v", "--cancel", "3", "--repeat", "2",
                           "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID", "127.0.0.1",
                           str(archive.dicom_port)], capture_output=True, text=True, timeout=60)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    finals = [line for line in log.splitlines() if "Received Final Find Response" in line]
    assert len(finals) == 2 and "Cancel" in finals[0] and "Success" in finals[1], log
