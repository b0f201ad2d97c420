"""An instance is stored only under Study, Series and SOP Instance UIDs that are UIDs
(daemons.render.uids): one stored under another value could be listed but never searched for by it
(C-FIND and QIDO-RS refuse such a key) nor, with a `/`, retrieved by WADO-RS. It is refused at each
door with the same answer (HTTP 422 `invalid_attribute`; C-STORE and STOW-RS 0xC000), and nothing of
it is stored. Leading zeros, which older modalities write, are kept."""

from __future__ import annotations

import pytest
from pydicom.multival import MultiValue
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from daemons.render.uids import is_uid
from tests.dicomweb.test_stow_wado import body_of, instance_count, stow
from tests.render.synthetic import dataset, to_bytes

NOT_UIDS = [
    ("SOPInstanceUID", "1.2.3/4"),  # a path separator: no WADO-RS URL can name it
    ("SeriesInstanceUID", MultiValue(str, ["1.2.3", "1.2.4"])),  # two values
    ("StudyInstanceUID", "1." + "2" * 63),  # 65 characters
    ("StudyInstanceUID", "1.2.3.abc"),
    ("SeriesInstanceUID", "1..2"),
    ("StudyInstanceUID", ""),  # missing
]


def _file(keyword: str, value, series: str = "1.2.826.0.1.77.1") -> bytes:
    ds = dataset(series=series)
    ds.StudyInstanceUID = "1.2.826.0.1.77"
    setattr(ds, keyword, value)
    return to_bytes(ds)


@pytest.mark.parametrize("value, ok", [("1.2.840.10008", True), ("1.2.03.4", True), ("0", True),
                                       ("1.2.3/4", False), ("1..2", False), (".1", False), ("1.", False),
                                       ("", False), ("1.2\\3", False), ("1.2.3\n", False), ("\u0661.2", False),
                                       ("1" * 64, True), ("1" * 65, False)])
def test_the_rule(value, ok):
    assert is_uid(value) is ok


@pytest.mark.parametrize("keyword, value", NOT_UIDS)
def test_an_upload_under_a_value_that_is_no_uid_is_422_and_stores_nothing(node, keyword, value):
    reply = node.upload([("bad.dcm", _file(keyword, value))])
    assert reply.status_code == 422, reply.json
    assert reply.json["error"]["code"] == "invalid_attribute" and keyword in reply.json["error"]["message"]
    assert instance_count(node) == 0


def test_leading_zeros_in_a_component_are_kept(node):
    reply = node.upload([("old.dcm", _file("SeriesInstanceUID", "1.2.826.0.1.077.1"))])
    assert reply.status_code == 201, reply.json


@pytest.mark.parametrize("keyword, value", NOT_UIDS[:3])
def test_stow_fails_that_instance_only_with_cannot_understand(node, keyword, value):
    good = _file("SeriesInstanceUID", "1.2.826.0.1.77.2")
    reply = stow(node, body_of([_file(keyword, value, series="1.2.826.0.1.77.3"), good]))
    assert reply.status_code == 202, reply.get_data(as_text=True)
    [failed] = reply.get_json()["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [0xC000]
    assert instance_count(node) == 1


def test_c_store_is_refused_with_cannot_understand(make_node):
    from tests.render.dimse_peers import close_archive, open_archive
    from tests.render.test_dimse_hostile import associate, exchange, models, store_request

    harness = open_archive(make_node)
    try:
        bad = dataset(series="1.2.826.0.1.77.4")
        bad.StudyInstanceUID = "1.2.3/4"
        assoc = associate(harness.dicom_port, (CTImageStorage, [ExplicitVRLittleEndian]))
        try:
            # another instance than the command names is that refusal first (0xA900), as dcmtk answers
            other = store_request(bad, implicit=False, sop_instance_uid="1.2.826.0.1.77.9")
            assert exchange(assoc, other, CTImageStorage) == [0xA900]
            assert exchange(assoc, store_request(bad, implicit=False), CTImageStorage) == [0xC000]
            bad.StudyInstanceUID = "1.2.826.0.1.77"
            assert exchange(assoc, store_request(bad, implicit=False), CTImageStorage) == [0x0000]
        finally:
            assoc.release()
        assert [row.sop_instance_uid for row in models(harness).catalogue.Instance.select()] == [bad.SOPInstanceUID]
    finally:
        close_archive(harness)
