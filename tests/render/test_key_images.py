"""Key images of a record (daemons.render.api_keyimages): marked, listed and unmarked on the node
that holds the record; read by the record's read rule, changed by users of its institution only;
bad planes and indexes are 400, an unknown record 404; audited; and the table arrives by a schema
migration from the previous schema."""

from __future__ import annotations

import sqlite3
import uuid

import pytest

from daemons.render.models import MIGRATIONS, upgrade
from daemons.render.settings import KEYS
from shared.config import build_config
from shared.db import schema_target
from tests.render.conftest import close_node
from tests.render.synthetic import dataset, to_bytes

SLICES = 4


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
    assert items[0]["marked_by"] == "physician-user" and items[0]["marked_at"].endswith("Z")
    assert node.client.delete(_url(record_id, "/native/2"), headers=node.headers()).status_code == 204
    items = node.client.get(_url(record_id), headers=node.headers()).json["items"]
    assert [(i["plane"], i["index"]) for i in items] == [("native", 0), ("axial", 1)]
    audit = node.app.extensions["sivr_node"].models.AuditEntry
    entries = {(e.action, e.detail) for e in audit.select().where(audit.object_id == record_id)}
    assert {("record.key_image.mark", "native:2"), ("record.key_image.unmark", "native:2"),
            ("record.key_images.read", "")} <= entries


def test_reading_follows_the_record_and_changing_is_for_its_institution(node, record_id):
    other = node.headers(institution_id=str(uuid.uuid4()))
    node.client.put(_url(record_id, "/native/1"), headers=node.headers())
    # images are read across institutions (audited): their key images too
    assert node.client.get(_url(record_id), headers=other).status_code == 200
    for method in (node.client.put, node.client.delete):
        reply = method(_url(record_id, "/native/1"), headers=other)
        assert reply.status_code == 403 and reply.json["error"]["code"] == "forbidden"
    assert node.client.get(_url(record_id)).status_code == 401


@pytest.mark.parametrize("tail", [f"/native/{SLICES}", "/native/-1", "/axial/99", "/oblique/0", "/native/x"])
def test_a_bad_plane_or_index_is_refused(node, record_id, tail):
    reply = node.client.put(_url(record_id, tail), headers=node.headers())
    if tail == "/native/x":   # not an index at all: no such route
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


def test_migration_from_the_previous_schema_adds_the_table(make_node):
    harness = make_node()
    record_id = _record(harness)
    root, institution = harness.root, harness.institution_id
    close_node(harness)
    with sqlite3.connect(root / "render.db") as db:   # back to schema 3, as the previous release made it
        db.execute("DROP TABLE key_image")
        db.execute("UPDATE schema_version SET version = 3 WHERE layer = 'render'")
    config = build_config("render", KEYS, {
        "database": {"url": f"sqlite:///{root}/render.db"}, "node": {"institution_id": institution},
        "storage": {"dir": str(root / "store"), "key_file": str(root / "store.key")}}, None)
    assert upgrade(config) == schema_target(MIGRATIONS) == 4
    with sqlite3.connect(root / "render.db") as db:
        assert {"record_id", "plane", "image_index"} <= {row[1] for row in db.execute("PRAGMA table_info(key_image)")}
    harness = make_node(root=root, institution_id=institution)
    try:
        assert harness.client.put(_url(record_id, "/native/0"), headers=harness.headers()).status_code == 200
    finally:
        close_node(harness)
