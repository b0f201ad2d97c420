"""The stored manifest (daemons.render.store.manifest): round trip, every stored version opens, a newer one
is refused clearly (and kept), and a store written before versions existed still serves."""

from __future__ import annotations

import copy
import json
import sqlite3

import pytest

from daemons.render.ingest.series_analysis import parse_upload
from daemons.render.ingest.upload_checks import Limits
from daemons.render.store import local as storage
from daemons.render.store.manifest import JOURNAL_VERSION, MANIFEST_VERSION, FileEntry, Manifest, ManifestVersionError
from tests.manifests import sample_manifest
from tests.render.conftest import close_node
from tests.render.test_image_description import AXIAL, load, stack, upload

LIMITS = Limits(max_upload_bytes=1 << 30, max_files=100, max_rows=4096, max_columns=4096, max_frames=1000,
                max_decoded_bytes=1 << 31)

# What manifests stored before a key existed lack (the unversioned form, version 1, at its oldest).
LATER_META = ("slices", "stack_direction", "slice_thickness", "patient_birth_date")
LATER_RENDER = ("orientation_known", "frame_vois")
LATER_FILE = ("blob", "sop_instance_uid", "overlays")


def _oldest_form(manifest: Manifest) -> dict:
    """`manifest` as the first nodes stored it: no version, none of the keys added since."""
    data = copy.deepcopy(manifest.to_json())
    del data["version"]
    for key in LATER_META:
        data["meta"].pop(key)
    for key in LATER_RENDER:
        data["render"].pop(key)
    for entry in data["files"]:
        for key in LATER_FILE:
            entry.pop(key)
    return data


def _analysed() -> Manifest:
    return parse_upload(stack(AXIAL, count=3), LIMITS).manifest


def test_round_trip_through_the_stored_bytes_is_exact_and_writes_the_version():
    manifest = _analysed()
    assert manifest.version == MANIFEST_VERSION
    assert json.loads(manifest.encode())["version"] == MANIFEST_VERSION
    assert Manifest.decode(manifest.encode()) == manifest
    assert Manifest.from_json(manifest.to_json()).to_json() == manifest.to_json()
    carried = sample_manifest(stacks=[{"id": 1, "frames": [0, 1]}])  # carried as stored, whoever writes it
    assert Manifest.decode(carried.encode()).render.stacks == ({"id": 1, "frames": [0, 1]},)


def test_an_unversioned_manifest_opens_with_what_its_missing_keys_mean():
    manifest = _analysed()
    old = Manifest.from_json(_oldest_form(manifest))
    assert old.version == 1
    assert old.meta.slices is None and "slices" not in old.meta.to_json()  # RecordMeta leaves it out
    assert old.meta.patient_birth_date is None and old.meta.stack_direction is None
    assert old.render.orientation_known and old.render.known_orientation == old.render.orientation
    assert old.render.frame_vois is None
    assert [(f.blob, f.overlays, f.sop_instance_uid) for f in old.files] == [(0, None, None), (1, None, None),
                                                                            (2, None, None)]
    assert old.meta.rows == manifest.meta.rows and old.render.layout == manifest.render.layout
    assert old.to_json()["version"] == MANIFEST_VERSION  # rewritten in the current form


@pytest.mark.parametrize("version", [JOURNAL_VERSION + 1, 99, 0, "2", 2.0, None])
def test_a_version_this_node_does_not_know_is_refused_clearly(version):
    data = _analysed().to_json()
    data["version"] = version
    with pytest.raises(ManifestVersionError, match="upgrade this node"):
        Manifest.from_json(data)


def test_a_file_entrys_rescale_is_its_own_or_its_frames():
    entry = FileEntry.from_json({"sha256": "0" * 64, "size": 1, "frames": 2, "slope": 2, "intercept": -5,
                                 "frame_rescales": [[1, 0], [3, 4]]}, position=7)
    assert entry.blob == 7 and entry.rescale(1) == (3.0, 4.0)
    assert FileEntry.from_json({"sha256": "0" * 64, "size": 1, "frames": 1, "slope": 2, "intercept": -5},
                               0).rescale(0) == (2.0, -5.0)


def _rewrite_manifest(root, record_id: str, data: dict) -> None:
    """Replace a stored manifest by `data`, sealed as the store seals any manifest."""
    store = storage.RecordStore.open(root / "store", root / "store.key")
    body = json.dumps(data, separators=(",", ":")).encode()
    storage._write_durable(store.path_of(record_id) / storage.MANIFEST, store._seal(record_id, "manifest", body))


def test_a_store_made_before_manifest_versions_still_serves(make_node, tmp_path):
    first = make_node(tmp_path)
    meta = upload(first, stack(AXIAL, count=3))
    record_id, institution = meta["id"], first.institution_id
    stored = first.app.extensions["sivr_node"].store.read_manifest(record_id)
    close_node(first)
    _rewrite_manifest(tmp_path, record_id, _oldest_form(stored))
    # the node's database of that time had no commits either (`store.generations`): its table is new
    with sqlite3.connect(tmp_path / "render.db") as database:
        database.execute("DELETE FROM store_generation")

    node = make_node(tmp_path, institution_id=institution)
    try:
        reply = node.client.get(f"/api/v1/records/{record_id}", headers=node.headers())
        assert reply.status_code == 200, reply.json
        assert reply.json["frames"] == 3 and "slices" not in reply.json and reply.json["planes"]["axial"]
        load(node, record_id)
        frame = node.client.get(f"/api/v1/records/{record_id}/frames/2", headers=node.headers())
        assert frame.status_code == 200 and frame.headers["X-Orientation"]
        original = node.client.get(f"/api/v1/records/{record_id}/original?index=1", headers=node.headers())
        assert original.status_code == 200 and original.data[128:132] == b"DICM"
    finally:
        close_node(node)


def test_a_manifest_of_a_newer_node_is_refused_and_kept_not_quarantined(make_node, tmp_path):
    first = make_node(tmp_path)
    meta = upload(first, stack(AXIAL, count=2))
    record_id, institution = meta["id"], first.institution_id
    newer = first.app.extensions["sivr_node"].store.read_manifest(record_id).to_json()
    close_node(first)
    newer["version"] = JOURNAL_VERSION + 1
    _rewrite_manifest(tmp_path, record_id, newer)

    node = make_node(tmp_path, institution_id=institution)
    try:
        reply = node.client.get(f"/api/v1/records/{record_id}", headers=node.headers())
        assert reply.status_code == 409 and reply.json["error"]["code"] == "manifest_version"
        assert "upgrade this node" in reply.json["error"]["message"]
        assert (tmp_path / "store" / record_id / storage.MANIFEST).exists()  # kept for the newer node
        assert not (tmp_path / "store" / storage.QUARANTINE).exists()
    finally:
        close_node(node)
