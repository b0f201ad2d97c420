"""An instance is stored only with a SOP Class UID that is a UID (daemons.render.uids): one without
(or with `not-a-uid`) was stored and QIDO-RS answered it with an empty or junk (0008,0016), which a
C-MOVE or C-GET cannot send on (no presentation context names such a class). Every door refuses it
with the same reason (upload: HTTP 422 `invalid_attribute`; STOW-RS: FailureReason 0xC000, the
status the ingest's refusal gets over DIMSE; C-STORE: 0xA900, the data set is not of the Affected
SOP Class it was sent as, checked first), and nothing of it is stored. The data set's (0008,0016) is
the one checked: a file meta's Media Storage SOP Class UID does not stand in for it.
"""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag
from pydicom.uid import generate_uid

from daemons.render.ingest.upload_checks import UploadError
from daemons.render.statuses import status_of
from tests.dicomweb.test_stow_wado import body_of, instance_count, stow

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
DEMO_MR = Path(__file__).resolve().parents[2] / "demo_data" / "mr-head-24"
SOP_CLASS = Tag(0x0008, 0x0016)
FAILED_SOP_SEQUENCE, FAILURE_REASON, SOP_INSTANCE = "00081198", "00081197", "00080018"


def _demo_dataset(study: str, sop_class: bytes | None) -> pydicom.Dataset:
    """A demo MR slice as a new instance of a new series of `study`, its data set's SOP Class UID
    removed (None) or set to the raw value `sop_class` (the file meta's Media Storage SOP Class UID
    left as the demo file has it)."""
    paths = sorted(DEMO_MR.glob("*.dcm"))
    if not paths:
        pytest.skip(f"the demo MR is missing from {DEMO_MR}")
    ds = pydicom.dcmread(paths[0])
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    if sop_class is None:
        del ds[SOP_CLASS]
    else:  # raw: pydicom would warn about the value as it is set
        ds[SOP_CLASS] = RawDataElement(SOP_CLASS, "UI", len(sop_class), sop_class, 0, False, True)
    return ds


def _demo(study: str, sop_class: bytes | None) -> tuple[bytes, str]:
    """`_demo_dataset` as a file, and its SOP Instance UID."""
    ds = _demo_dataset(study, sop_class)
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue(), str(ds.SOPInstanceUID)


BAD_CLASSES = [pytest.param(None, id="missing"), pytest.param(b"not-a-uid ", id="not-a-uid"),
               pytest.param(b"", id="empty")]


@pytest.mark.parametrize("sop_class", BAD_CLASSES)
def test_stow_fails_that_part_with_the_ingest_status_and_stores_nothing_of_it(node, sop_class):
    study = generate_uid()
    bad, bad_uid = _demo(study, sop_class)
    good, good_uid = _demo(study, MR_IMAGE_STORAGE.encode())
    reply = stow(node, body_of([bad, good]))
    assert reply.status_code == 202, reply.get_data(as_text=True)
    [failed] = reply.get_json()[FAILED_SOP_SEQUENCE]["Value"]
    expected = status_of(UploadError(422, "invalid_attribute", "SOPClassUID"))
    assert failed[FAILURE_REASON]["Value"] == [expected] == [0xC000]
    assert failed["00081155"]["Value"] == [bad_uid]
    listed = node.client.get(f"/dicomweb/studies/{study}/instances", headers=node.headers())
    assert listed.status_code == 200, listed.get_data(as_text=True)
    assert [answer[SOP_INSTANCE]["Value"][0] for answer in listed.get_json()] == [good_uid]


@pytest.mark.parametrize("sop_class", BAD_CLASSES)
def test_an_upload_is_422_and_stores_nothing(node, sop_class):
    bad, _ = _demo(generate_uid(), sop_class)
    reply = node.upload([("bad.dcm", bad)])
    assert reply.status_code == 422, reply.json
    assert reply.json["error"]["code"] == "invalid_attribute" and "SOPClassUID" in reply.json["error"]["message"]
    assert instance_count(node) == 0


@pytest.mark.parametrize("sop_class", BAD_CLASSES)
def test_c_store_is_refused_and_stores_nothing(make_node, sop_class):
    from tests.render.dimse_peers import close_archive, open_archive
    from tests.render.test_dimse_hostile import associate, exchange, models, store_request

    harness = open_archive(make_node)
    try:
        bad = _demo_dataset(generate_uid(), sop_class)
        assoc = associate(harness.dicom_port, (MR_IMAGE_STORAGE, [str(bad.file_meta.TransferSyntaxUID)]))
        try:
            assert exchange(assoc, store_request(bad, implicit=False), MR_IMAGE_STORAGE) == [0xA900]
        finally:
            assoc.release()
        assert models(harness).catalogue.Instance.select().count() == 0
    finally:
        close_archive(harness)
