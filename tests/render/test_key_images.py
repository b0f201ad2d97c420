"""Key images of a record (daemons.render.api.key_images): marked, listed and unmarked on the node
that holds the record, with the stack a reformat cuts and the time point shown; read by the
record's read rule, changed by users of its institution only; bad planes, indexes, stacks and time
points are 400 when malformed, 404 when they name nothing the record has (an unknown record too);
audited; and the table arrives, then gains its stack and time point, by schema migrations from the
previous schemas."""

from __future__ import annotations

import sqlite3
import uuid

import numpy as np
import pytest
from pydicom.uid import generate_uid

from daemons.render.models import MIGRATIONS, upgrade
from daemons.render.settings import KEYS
from shared.config import build_config
from shared.db import schema_target
from tests.render import synthetic_stacks as synth
from tests.render.conftest import close_node
from tests.render.synthetic import dataset, to_bytes
from tests.render.test_refusals import _modality_lut_file
from tests.render.test_stored_only import private_bytes, private_slice, record_of, stow

SLICES = 4
POSITIONS = 6   # of the synthetic files that hold several stacks or time points


def _record(node) -> str:
    files = [(f"{i}.dcm", to_bytes(dataset(16, 16, series="1.2.826.0.1.3680043.8.498.15.9", position=float(i))))
             for i in range(SLICES)]
    reply = node.upload(files)
    assert reply.status_code == 201, reply.json
    return reply.json["id"]


@pytest.fixture
def record_id(node) -> str:
    return _record(node)


def _url(record_id: str, tail: str = "") -> str:
    return f"/api/v1/records/{record_id}/key-images{tail}"


def test_mark_list_and_unmark(node, record_id):
    assert node.client.get(_url(record_id), headers=node.headers()).json == {"items": []}
    for tail in ("/native/2", "/axial/1", "/native/0", "/native/2"):   # marking twice changes nothing
        reply = node.client.put(_url(record_id, tail), headers=node.headers())
        assert reply.status_code == 200, reply.json
    items = node.client.get(_url(record_id), headers=node.headers()).json["items"]
    assert [(i["plane"], i["index"]) for i in items] == [("native", 0), ("native", 2), ("axial", 1)]
    # a reformat names the stack it cuts (the first, by default); the stored slices none
    assert [(i["stack"], i["phase"]) for i in items] == [(None, None), (None, None), ("1", None)]
    assert items[0]["marked_by"] == "physician-user" and items[0]["marked_at"].endswith("Z")
    assert node.client.delete(_url(record_id, "/native/2"), headers=node.headers()).status_code == 204
    items = node.client.get(_url(record_id), headers=node.headers()).json["items"]
    assert [(i["plane"], i["index"]) for i in items] == [("native", 0), ("axial", 1)]
    audit = node.app.extensions["sivr_node"].models.AuditEntry
    entries = {(e.action, e.detail) for e in audit.select().where(audit.object_id == record_id)}
    assert {("record.key_image.mark", "native:2"), ("record.key_image.unmark", "native:2"),
            ("record.key_image.mark", "axial:1:stack=1"), ("record.key_images.read", "")} <= entries


def test_reading_follows_the_record_and_changing_is_for_its_institution(node, record_id):
    other = node.headers(institution_id=str(uuid.uuid4()))
    node.client.put(_url(record_id, "/native/1"), headers=node.headers())
    # images are read across institutions (audited): their key images too
    assert node.client.get(_url(record_id), headers=other).status_code == 200
    for method in (node.client.put, node.client.delete):
        reply = method(_url(record_id, "/native/1"), headers=other)
        assert reply.status_code == 403 and reply.json["error"]["code"] == "forbidden"
    assert node.client.get(_url(record_id)).status_code == 401


@pytest.mark.parametrize("tail", [f"/native/{SLICES}", "/native/-1", "/axial/99"])
def test_an_index_outside_the_view_names_no_image(node, record_id, tail):
    """As at the image routes (`query.check_index`: a frame or plane index outside the record is 404
    `not_found` naming the range); it was 400 here, while an unknown stack or time point was 404."""
    for method in (node.client.put, node.client.delete):
        reply = method(_url(record_id, tail), headers=node.headers())
        assert reply.status_code == 404 and reply.json["error"]["code"] == "not_found", reply.json
        assert "0.." in reply.json["error"]["message"], reply.json
    image = node.client.get(f"/api/v1/records/{record_id}/frames/{SLICES}", headers=node.headers())
    assert image.status_code == 404 and image.json["error"]["code"] == "not_found"
    assert node.client.get(_url(record_id), headers=node.headers()).json == {"items": []}


@pytest.mark.parametrize("tail", ["/oblique/0", "/native/x"])
def test_a_bad_plane_or_index_is_refused(node, record_id, tail):
    reply = node.client.put(_url(record_id, tail), headers=node.headers())
    if tail == "/native/x":   # not an index at all: no such route (as at the image routes)
        assert reply.status_code == 404 and "error" in reply.json
        return
    assert reply.status_code == 400 and reply.json["error"]["code"] == "validation_error"


def test_an_unknown_record_is_not_found(node):
    unknown = "0" * 64
    for method, tail in ((node.client.get, ""), (node.client.put, "/native/0"), (node.client.delete, "/native/0")):
        reply = method(_url(unknown, tail), headers=node.headers())
        assert reply.status_code == 404 and reply.json["error"]["code"] == "not_found"


def test_deleting_the_record_deletes_its_key_images(node, record_id):
    node.client.put(_url(record_id, "/native/1"), headers=node.headers())
    assert node.client.delete(f"/api/v1/records/{record_id}", headers=node.headers()).status_code == 204
    model = node.app.extensions["sivr_node"].models.KeyImage
    assert model.select().where(model.record_id == record_id).count() == 0


def _upload(node, files) -> str:
    reply = node.upload(files)
    assert reply.status_code == 201, reply.json
    return reply.json["id"]


def _listed(node, record_id: str) -> list[tuple]:
    items = node.client.get(_url(record_id), headers=node.headers()).json["items"]
    return [(i["plane"], i["index"], i["stack"], i["phase"]) for i in items]


def test_a_reformat_keeps_its_stack_and_each_stack_is_its_own_key_image(node):
    record_id = _upload(node, [("fieldmap.dcm", synth.field_map(POSITIONS))])   # stacks 1 and 2
    for tail in ("/coronal/3?stack=2", "/coronal/3", "/coronal/3?stack=1", "/coronal/3?stack=2"):
        reply = node.client.put(_url(record_id, tail), headers=node.headers())
        assert reply.status_code == 200, reply.json
    assert _listed(node, record_id) == [("coronal", 3, "1", None), ("coronal", 3, "2", None)]
    assert node.client.delete(_url(record_id, "/coronal/3?stack=2"), headers=node.headers()).status_code == 204
    assert _listed(node, record_id) == [("coronal", 3, "1", None)]
    # the index range is the stack's own: POSITIONS axial slices, not the record's 2 * POSITIONS frames
    beyond = node.client.put(_url(record_id, f"/axial/{POSITIONS}?stack=2"), headers=node.headers())
    assert beyond.status_code == 404 and beyond.json["error"]["code"] == "not_found", beyond.json
    assert node.client.put(_url(record_id, f"/native/{2 * POSITIONS - 1}"), headers=node.headers()).status_code == 200


def test_a_time_point_is_kept_and_each_time_point_is_its_own_key_image(node):
    record_id = _upload(node, [("dynamic.dcm", synth.dynamic(times=2, positions=POSITIONS))])
    for tail in ("/axial/2?phase=1", "/axial/2?phase=0", f"/native/{POSITIONS + 2}?phase=1", "/axial/2?phase=1"):
        reply = node.client.put(_url(record_id, tail), headers=node.headers())
        assert reply.status_code == 200, reply.json
    assert _listed(node, record_id) == [("native", POSITIONS + 2, None, 1), ("axial", 2, "1", 0), ("axial", 2, "1", 1)]
    assert node.client.delete(_url(record_id, "/axial/2?phase=1"), headers=node.headers()).status_code == 204
    assert _listed(node, record_id) == [("native", POSITIONS + 2, None, 1), ("axial", 2, "1", 0)]


def test_a_stored_slice_is_marked_at_its_own_time_point_only(node):
    """A stored slice shows one time point: `native/0?phase=2` of a cine whose frame 0 is time point
    0 named no image, yet was kept beside the slice's own mark (listed "Slice 1 · Time 3")."""
    record_id = _upload(node, synth.classic_cine(positions=4, times=3))
    reply = node.client.get(f"/api/v1/records/{record_id}", headers=node.headers())
    phases = reply.json["stacks"][0]["phases"]
    first, later = phases[0][0], phases[2][0]   # the first position at time points 0 and 2
    for tail in (f"/native/{first}?phase=2", f"/native/{later}?phase=0"):
        for method in (node.client.put, node.client.delete):
            refused = method(_url(record_id, tail), headers=node.headers())
            assert refused.status_code == 404 and refused.json["error"]["code"] == "not_found", refused.json
            assert "is time point" in refused.json["error"]["message"]
    for tail in (f"/native/{first}?phase=0", f"/native/{later}?phase=2", f"/native/{later}"):
        assert node.client.put(_url(record_id, tail), headers=node.headers()).status_code == 200
    assert _listed(node, record_id) == [("native", first, None, 0), ("native", later, None, None),
                                        ("native", later, None, 2)]


@pytest.mark.parametrize(("tail", "status"), [
    ("/coronal/0?stack=9", 404), ("/coronal/0?stack=x", 400), ("/native/0?stack=1", 400),
    ("/axial/0?phase=2", 404), ("/native/0?phase=2", 404), ("/axial/0?phase=-1", 404), ("/axial/0?phase=one", 400),
])
def test_a_bad_stack_or_time_point_is_refused(node, tail, status):
    record_id = _upload(node, [("dynamic.dcm", synth.dynamic(times=2, positions=POSITIONS))])
    for method in (node.client.put, node.client.delete):
        reply = method(_url(record_id, tail), headers=node.headers())
        assert reply.status_code == status and reply.json["error"]["code"] == (
            "not_found" if status == 404 else "validation_error"), reply.json
    assert _listed(node, record_id) == []


def test_a_stack_without_a_volume_has_no_reformat_to_mark(node):
    record_id = _upload(node, synth.oblique_series(5))
    reply = node.client.put(_url(record_id, "/axial/0"), headers=node.headers())
    assert reply.status_code == 422 and reply.json["error"]["code"] == "no_volume"
    assert node.client.put(_url(record_id, "/native/4"), headers=node.headers()).status_code == 200


def _colour_series() -> list[tuple[str, bytes]]:
    files = []
    for k in range(SLICES):
        ds = dataset(16, 12, series="1.2.826.0.1.3680043.8.498.15.10", position=float(k))
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = np.full((16, 12, 3), 40 * k, np.uint8).tobytes()
        files.append((f"{k}.dcm", to_bytes(ds)))
    return files


@pytest.mark.parametrize(("files", "refused", "allowed"), [
    (_colour_series, "/axial/0", "/native/0"),
    (lambda: [("lut.dcm", _modality_lut_file("US"))], "/axial/0", "/native/0"),
], ids=["colour", "modality_lut"])
def test_a_reformat_the_image_routes_refuse_cannot_be_marked(node, files, refused, allowed):
    """A colour record or one read through a Modality LUT has no reformat (400 unsupported_record):
    marking one is refused as its image is; its stored slices are still marked."""
    record_id = _upload(node, files())
    assert node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers()).status_code == 202
    assert node.registry.get_loaded(record_id).wait_complete(30)
    image = node.client.get(f"/api/v1/records/{record_id}/mpr{refused}", headers=node.headers())
    assert image.status_code == 400 and image.json["error"]["code"] == "unsupported_record", image.json
    for method in (node.client.put, node.client.delete):
        reply = method(_url(record_id, refused), headers=node.headers())
        assert (reply.status_code, reply.json["error"]["code"]) == (400, "unsupported_record"), reply.json
    assert node.client.put(_url(record_id, allowed), headers=node.headers()).status_code == 200
    assert _listed(node, record_id) == [("native", 0, None, None)]


@pytest.mark.parametrize("tail", ["/native/0", "/axial/0", "/coronal/0"])
def test_a_series_stored_only_has_no_image_to_mark(node, tail):
    kept = private_slice(generate_uid(), 0.0)
    assert stow(node, [private_bytes(kept)]).status_code == 200
    record_id = record_of(node, kept.SeriesInstanceUID)
    image = node.client.get(f"/api/v1/records/{record_id}/mpr/coronal/0", headers=node.headers())
    assert image.status_code == 415 and image.json["error"]["code"] == "stored_only", image.json
    reply = node.client.put(_url(record_id, tail), headers=node.headers())
    assert (reply.status_code, reply.json["error"]["code"]) == (415, "stored_only"), reply.json
    assert _listed(node, record_id) == []


def _config(root, institution):
    return build_config("render", KEYS, {
        "database": {"url": f"sqlite:///{root}/render.db"}, "node": {"institution_id": institution},
        "storage": {"dir": str(root / "store"), "key_file": str(root / "store.key")}}, None)


def test_migration_from_schema_3_adds_the_table(make_node):
    harness = make_node()
    record_id = _record(harness)
    root, institution = harness.root, harness.institution_id
    close_node(harness)
    with sqlite3.connect(root / "render.db") as db:   # back to schema 3, as the release before key images made it
        db.execute("DROP TABLE key_image")
        db.execute("UPDATE schema_version SET version = 3 WHERE layer = 'render'")
    assert upgrade(_config(root, institution)) == schema_target(MIGRATIONS) == 7
    with sqlite3.connect(root / "render.db") as db:
        assert {"record_id", "plane", "image_index", "stack", "phase"} <= {
            row[1] for row in db.execute("PRAGMA table_info(key_image)")}
    harness = make_node(root=root, institution_id=institution)
    try:
        assert harness.client.put(_url(record_id, "/native/0"), headers=harness.headers()).status_code == 200
    finally:
        close_node(harness)


# the key_image table as schema 4 made it (peewee's DDL of that release)
SCHEMA_4_KEY_IMAGE = (
    ('CREATE TABLE "key_image" ("id" INTEGER NOT NULL PRIMARY KEY, "record_id" VARCHAR(64) NOT NULL, '
     '"plane" VARCHAR(16) NOT NULL, "image_index" INTEGER NOT NULL, "marked_by" VARCHAR(36) NOT NULL, '
     '"marked_by_name" VARCHAR(150) NOT NULL, "marked_at" DATETIME NOT NULL)'),
    'CREATE INDEX "keyimage_record_id" ON "key_image" ("record_id")',
    'CREATE UNIQUE INDEX "keyimage_record_id_plane_image_index" ON "key_image" ("record_id", "plane", "image_index")',
)


def test_migration_from_schema_4_keeps_the_marks_and_adds_stack_and_time_point(make_node):
    harness = make_node()
    record_id = _record(harness)
    root, institution = harness.root, harness.institution_id
    close_node(harness)
    with sqlite3.connect(root / "render.db") as db:   # a store written at schema 4, with two marks
        db.execute("DROP TABLE key_image")
        for statement in SCHEMA_4_KEY_IMAGE:
            db.execute(statement)
        for plane, index in (("native", 1), ("axial", 2)):
            db.execute("INSERT INTO key_image (record_id, plane, image_index, marked_by, marked_by_name, marked_at) "
                       "VALUES (?, ?, ?, 'u-1', 'dr-four', '2026-11-01 10:00:00')", (record_id, plane, index))
        db.execute("UPDATE schema_version SET version = 4 WHERE layer = 'render'")
    assert upgrade(_config(root, institution)) == 7  # the later migrations run too
    with sqlite3.connect(root / "render.db") as db:
        indexes = {row[1] for row in db.execute("PRAGMA index_list(key_image)")}
        assert "keyimage_record_id_plane_image_index" not in indexes and "keyimage_record_id" in indexes
    harness = make_node(root=root, institution_id=institution)
    try:
        # the old marks are listed as before, with neither stack nor time point recorded
        listed = harness.client.get(_url(record_id), headers=harness.headers()).json["items"]
        assert [(i["plane"], i["index"], i["stack"], i["phase"], i["marked_by"]) for i in listed] == [
            ("native", 1, None, None, "dr-four"), ("axial", 2, None, None, "dr-four")]
        assert harness.client.put(_url(record_id, "/native/1"), headers=harness.headers()).status_code == 200
        assert harness.client.put(_url(record_id, "/axial/2?stack=1"), headers=harness.headers()).status_code == 200
        assert _listed(harness, record_id) == [("native", 1, None, None), ("axial", 2, None, None),
                                               ("axial", 2, "1", None)]
        assert harness.client.delete(_url(record_id, "/native/1"), headers=harness.headers()).status_code == 204
        assert _listed(harness, record_id) == [("axial", 2, None, None), ("axial", 2, "1", None)]
    finally:
        close_node(harness)
