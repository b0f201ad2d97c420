"""Text that no database holds (NUL) in what DICOM peers send, on SQLite and on PostgreSQL: a C-STORE
whose names or Patient ID hold NUL, and C-FIND keys holding it. PostgreSQL refuses a NUL in any text
parameter: the store was 0x0110 and the find 0xC000, each logged as the node's own failure. And
C-FIND names beyond ASCII longer than any stored one."""

from __future__ import annotations

import logging

import pytest
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from tests.render.conftest import database_overrides
from tests.render.dimse_peers import CALLER, SCP, close_archive, open_archive
from tests.render.synthetic import dataset
from tests.render.test_dimse_hostile import audit_rows, models, send_store


@pytest.fixture(params=["sqlite", "postgresql"])
def archive(request, make_node):
    harness = open_archive(make_node, **database_overrides(request, request.param))
    yield harness
    close_archive(harness)


def with_raw(ds: Dataset, **values: bytes) -> Dataset:
    """`ds` with each keyword's value the bytes given, as a peer's data set carries them."""
    for keyword, value in values.items():
        tag = tag_for_keyword(keyword)
        ds[tag] = RawDataElement(tag, dictionary_VR(tag), len(value), value, 0, False, True)
    return ds


def instance(**values: bytes) -> Dataset:
    ds = dataset(series=generate_uid())
    ds.StudyInstanceUID, ds.PatientID, ds.PatientName = generate_uid(), "P-TEXT", "Doe^Jane"
    return with_raw(ds, **values)


def find(port: int, identifier: Dataset) -> list[tuple[int, Dataset | None]]:
    ae = AE(ae_title=CALLER)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title=SCP)
    assert assoc.is_established
    answers = [(status.Status, answer) for status, answer in
               assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind) if status]
    assoc.release()
    return answers


def test_a_store_with_nul_in_its_patient_id_is_refused_and_in_its_names_indexed_as_u_fffd(archive):
    port = archive.dicom_port
    assert send_store(port, instance(PatientID=b"P\x00TEXT ")) == 0xC000  # "Cannot understand", as the upload's 422
    assert send_store(port, instance(IssuerOfPatientID=b"I\x00SS ")) == 0xC000
    assert models(archive).catalogue.Instance.select().count() == 0
    assert send_store(port, instance(PatientName=b"Doe\x00^Jane ", StudyDescription=b"Head\x00CT ")) == 0x0000
    identifier = Dataset()
    identifier.QueryRetrieveLevel, identifier.PatientName, identifier.StudyDescription = "STUDY", "doe*", ""
    (status, answer), (final, _) = find(port, identifier)
    assert (status, final) == (0xFF00, 0x0000)
    assert str(answer.PatientName) == "Doe\ufffd^Jane" and answer.StudyDescription == "Head\ufffdCT"


@pytest.mark.parametrize(("level", "keyword", "value"), [
    ("STUDY", "PatientName", b"Doe\x00*"), ("STUDY", "AccessionNumber", b"A\x00*"),
    ("STUDY", "StudyDescription", b"Head\x00CT"), ("STUDY", "ModalitiesInStudy", b"C\x00T"),
    ("SERIES", "Modality", b"C\x00T")])
def test_find_keys_holding_nul_are_refused_as_the_peers_error(archive, caplog, level, keyword, value):
    """0xA900 (identifier does not match), audited with the reason and logged as information. SQLite
    read a GLOB pattern only up to the NUL: `Doe\\0*` matched every name beginning `Doe`."""
    assert send_store(archive.dicom_port, instance(PatientName=b"Doe^Jane ")) == 0x0000
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    with caplog.at_level(logging.INFO):
        assert find(archive.dicom_port, with_raw(identifier, **{keyword: value})) == [(0xA900, None)]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("daemons")]
    [(_, detail)] = audit_rows(archive, "dicom.find_refused")
    assert keyword in detail and "NUL" in detail


def test_a_name_beyond_ascii_longer_than_any_stored_is_answered_not_the_nodes_failure(archive, caplog):
    """10,000 letters beyond ASCII: SQLite refused the pattern made of them (0xC000, the node's error
    in its log); 70,000 kept PostgreSQL busy past the peer's DIMSE timeout. Longer than any name the
    catalogue holds, it matches nothing (`matching._condition`)."""
    assert send_store(archive.dicom_port, instance()) == 0x0000
    for keyword, value in (("PatientName", "ü" * 10_000), ("ReferringPhysicianName", "σ" * 70_000)):
        identifier = Dataset()
        identifier.QueryRetrieveLevel, identifier.SpecificCharacterSet = "STUDY", "ISO_IR 192"
        setattr(identifier, keyword, value)
        assert find(archive.dicom_port, identifier) == [(0x0000, None)], keyword
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("daemons")]
