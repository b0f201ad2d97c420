"""A series' storing put back into the store after the series was deleted (an old backup restored, or
someone with write access to the store volume): the node refuses to serve it (503, audited
`record.rolled_back`: tests/render/test_deleted_series_put_back.py), but its DELETE was refused the same
503, so IT had to remove its folder by hand. An administrator of the institution may now DELETE it
through the API: its folder leaves the store, its storing stays buried (put back once more, it is
refused again), the deletion is audited, and the series sent again is a new storing, served. Its bytes
are never served along the way, and who may delete it is the rule of any delete (`shared.roles`: the
uploader, unknown here, or an administrator of the institution)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from tests.render.synthetic import stack
from tests.render.test_deleted_series_put_back import _refused

ADMIN = "instadmin"
#: one series (its UIDs are made anew by each call of `stack`), sent whole or in part
SLICES = sorted(stack((1, 0, 0, 0, 1, 0), count=3))


def _audit(root: Path, action: str, record_id: str) -> list[str]:
    with sqlite3.connect(root / "render.db") as database:
        return [row[0] for row in database.execute(
            "SELECT detail FROM audit_entry WHERE action = ? AND object_id = ?", (action, record_id))]


def _put_back_after_delete(node) -> tuple[str, Path, Path]:
    """A series stored, copied aside (a backup), DELETEd, then its copy put back: the record's id, its
    folder and the copy."""
    record_id = node.upload(SLICES).json["id"]
    folder = node.root / "store" / record_id
    aside = node.root / "backup"
    shutil.copytree(folder, aside)
    assert node.client.delete(f"/api/v1/records/{record_id}", headers=node.headers()).status_code == 204
    shutil.copytree(aside, folder)
    _refused(node, record_id)
    return record_id, folder, aside


def test_an_administrator_deletes_a_deleted_series_put_back(make_node):
    node = make_node(storage__manifest_refresh_s=0)
    record_id, folder, aside = _put_back_after_delete(node)

    reply = node.client.delete(f"/api/v1/records/{record_id}", headers=node.headers(ADMIN))
    assert reply.status_code == 204, reply.json
    assert not folder.exists()
    assert not [name for name in (node.root / "store").iterdir() if name.name.startswith(".trash")]
    assert len(_audit(node.root, "record.delete", record_id)) == 2  # the first deletion and this one
    assert "put back" in _audit(node.root, "record.delete", record_id)[-1]
    reply = node.client.get(f"/api/v1/records/{record_id}", headers=node.headers())
    assert reply.status_code == 404, reply.json
    reply = node.client.delete(f"/api/v1/records/{record_id}", headers=node.headers(ADMIN))
    assert reply.status_code == 404, reply.json  # gone: a second DELETE finds nothing

    shutil.copytree(aside, folder)  # put back once more: still buried, still refused
    _refused(node, record_id)
    assert node.client.delete(f"/api/v1/records/{record_id}", headers=node.headers(ADMIN)).status_code == 204

    assert node.upload(SLICES[:2]).status_code == 201  # the series sent again: a new storing, served
    reply = node.client.get(f"/api/v1/records/{record_id}", headers=node.headers())
    assert reply.status_code == 200 and reply.json["files"] == 2, reply.json


def test_only_an_administrator_deletes_a_put_back_series_and_nothing_is_served(make_node):
    """The node holds no uploader of a storing it deleted: the physician who stored it is not known
    from the store, so only an administrator of the institution may delete it; the refusal serves
    nothing of it and removes nothing."""
    node = make_node(storage__manifest_refresh_s=0)
    record_id, folder, _ = _put_back_after_delete(node)
    for headers in (node.headers(), node.headers(ADMIN, institution_id="another-institution")):
        reply = node.client.delete(f"/api/v1/records/{record_id}", headers=headers)
        assert reply.status_code == 403, reply.json
        assert set(reply.json["error"]) >= {"code", "message"}
        assert "files" not in reply.json and str(node.root) not in reply.json["error"]["message"]
        assert folder.is_dir()
    _refused(node, record_id)


def test_an_older_copy_of_a_stored_series_is_deleted_with_the_series(make_node):
    """A series deleted and sent again, its first storing then put back in place of the second: the
    node still holds the series' row, and its DELETE removes what the store holds, buried for good."""
    node = make_node(storage__manifest_refresh_s=0)
    record_id, folder, aside = _put_back_after_delete(node)
    assert node.client.delete(f"/api/v1/records/{record_id}", headers=node.headers(ADMIN)).status_code == 204
    assert node.upload(SLICES[:2]).status_code == 201
    second = node.root / "second"
    shutil.copytree(folder, second)
    shutil.rmtree(folder)
    shutil.copytree(aside, folder)  # the first storing in place of the second
    reply = node.client.get(f"/api/v1/records/{record_id}", headers=node.headers())
    assert reply.status_code == 503, reply.json
    message = reply.json["error"]["message"]  # the store is up: it says which series and what to do
    assert message.startswith("this series cannot be read from the render node's store: ") and "shortly" not in message
    reply = node.client.delete(f"/api/v1/records/{record_id}", headers=node.headers(ADMIN))
    assert reply.status_code == 204, reply.json
    assert not folder.exists()
    for copy in (aside, second):  # neither storing comes back
        shutil.copytree(copy, folder)
        assert node.client.get(f"/api/v1/records/{record_id}", headers=node.headers()).status_code == 503
        shutil.rmtree(folder)
    assert node.upload(SLICES).status_code == 201
    assert node.client.get(f"/api/v1/records/{record_id}", headers=node.headers()).json["files"] == 3
