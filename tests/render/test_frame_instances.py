"""RecordMeta names the DICOM instance of every frame (daemons.render.catalogue.frame_instances): the viewer's
tag browser reads that instance's DICOMweb metadata, so the UID must be the one of the file the
frame was decoded from, whatever order the files were sent in."""

from __future__ import annotations

from tests.render.synthetic import dataset, to_bytes


def test_each_slice_names_its_instance_and_the_metadata_of_it_is_served(node):
    sent = []
    for i in (3, 0, 2, 1):   # sent out of position order: the record orders frames by position
        ds = dataset(8, 8, series="1.2.826.0.1.3680043.8.498.15.11", position=float(i) * 2)
        ds.InstanceNumber = i + 1
        ds.PatientID = "TAGS-42"
        sent.append((f"{i}.dcm", to_bytes(ds), ds.SOPInstanceUID, i))
    reply = node.upload([(name, data) for name, data, _, _ in sent])
    assert reply.status_code == 201, reply.json
    meta = node.client.get(f"/api/v1/records/{reply.json['id']}", headers=node.headers()).json
    by_position = {i: uid for _, _, uid, i in sent}
    assert [s["sop_instance_uid"] for s in meta["slices"]] == [by_position[i] for i in range(4)]
    assert [s["frame_number"] for s in meta["slices"]] == [1, 1, 1, 1]
    assert [s["instance"] for s in meta["slices"]] == [1, 2, 3, 4]
    sop = meta["slices"][2]["sop_instance_uid"]
    url = f"/dicomweb/studies/{meta['study_uid']}/series/{meta['series_uid']}/instances/{sop}/metadata"
    reply = node.client.get(url, headers=node.headers())
    assert reply.status_code == 200, reply.data[:300]
    (instance,) = reply.json
    assert instance["00100020"]["Value"] == ["TAGS-42"]
    assert instance["00080018"]["Value"] == [sop]
    assert instance["00200013"]["Value"] == [3]
