"""Store files the node cannot read (missing, a wrong owner or mode) and a quarantine on a full disk:
the record concerned answers with what is wrong and the fix, the node's paths stay in its log, the
other records and the lists keep working, and the node starts."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import pathlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.render.conftest import NodeHarness, close_node
from tests.render.synthetic import stack

IDENTITY = (1, 0, 0, 0, 1, 0)
CAPABILITY_VERSION_3 = 0x20080522
DAC_CAPABILITIES = (1 << 1) | (1 << 2)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH: root reads any file


def _capabilities(call: str, data: ctypes.Array) -> None:
    header = (ctypes.c_uint32 * 2)(CAPABILITY_VERSION_3, 0)  # pid 0: this thread
    if getattr(ctypes.CDLL(None, use_errno=True), call)(header, data) != 0:
        pytest.skip(f"file modes cannot be enforced as root here ({call}: {os.strerror(ctypes.get_errno())})")


@contextlib.contextmanager
def _file_modes_enforced() -> Iterator[None]:
    """Run as root, this test process reads any file whatever its mode: the capabilities that allow it are
    taken from this thread's effective set (kept permitted, given back after), as the reviewer ran the
    node under `setpriv --inh-caps=-dac_override,-dac_read_search`. Requests of the Flask test client
    and `create_app` run in this thread."""
    if os.geteuid() != 0:
        yield
        return
    caps = (ctypes.c_uint32 * 6)()
    _capabilities("capget", caps)
    saved = list(caps)
    caps[0] &= ~DAC_CAPABILITIES
    caps[3] &= ~(DAC_CAPABILITIES >> 32)
    _capabilities("capset", caps)
    try:
        yield
    finally:
        _capabilities("capset", (ctypes.c_uint32 * 6)(*saved))


@contextlib.contextmanager
def _mode(path: Path, mode: int) -> Iterator[None]:
    """`path` chmod'ed to `mode` while the node may not override it (given back its mode after)."""
    before = path.stat().st_mode & 0o777
    with _file_modes_enforced():
        path.chmod(mode)
        try:
            yield
        finally:
            path.chmod(before)


def _two_records(node: NodeHarness) -> tuple[str, str]:
    first = node.upload(stack(IDENTITY, count=4)).json["id"]
    return first, node.upload(stack(IDENTITY, count=3)).json["id"]


def _error(reply, status: int, code: str, root: Path) -> str:
    assert reply.status_code == status, reply.json
    assert reply.json["error"]["code"] == code
    message = reply.json["error"]["message"]
    assert str(root) not in message  # the node's paths go to its log, not to clients
    return message


def test_a_missing_blob_is_a_damaged_file_named_without_the_nodes_path(node):
    record_id, _ = _two_records(node)
    (node.root / "store" / record_id / "000002.bin").unlink()
    reply = node.client.get(f"/api/v1/records/{record_id}/original?index=2", headers=node.headers())
    assert record_id in _error(reply, 422, "store_corrupt", node.root)
    assert node.client.get(f"/api/v1/records/{record_id}/original?index=1", headers=node.headers()).status_code == 200
    assert node.client.post(f"/api/v1/records/{record_id}/load", headers=node.headers()).status_code == 202
    assert node.registry.get_loaded(record_id).wait_complete(60)
    errors = node.client.get(f"/api/v1/records/{record_id}/status", headers=node.headers()).json["errors"]
    assert len(errors) == 1 and "missing from the store" in errors[0]["message"]
    assert str(node.root) not in errors[0]["message"]


def test_an_unreadable_blob_answers_503_with_the_fix(node):
    record_id, _ = _two_records(node)
    with _mode(node.root / "store" / record_id / "000001.bin", 0):
        reply = node.client.get(f"/api/v1/records/{record_id}/original?index=1", headers=node.headers())
        message = _error(reply, 503, "store_unavailable", node.root)
        assert f"{record_id}/000001.bin" in message and "chown" in message
        assert node.client.get(f"/api/v1/records/{record_id}/original?index=0",
                               headers=node.headers()).status_code == 200


def test_an_unreadable_manifest_is_one_records_503_and_the_list_goes_on(make_node, tmp_path):
    node = make_node(tmp_path)
    record_id, other = _two_records(node)
    close_node(node)
    with _mode(tmp_path / "store" / record_id / "manifest.bin", 0):
        node = make_node(tmp_path)
        reply = node.client.get(f"/api/v1/records/{record_id}", headers=node.headers())
        assert "manifest.bin" in _error(reply, 503, "store_unavailable", tmp_path)
        listed = node.client.get("/api/v1/records", headers=node.headers("instadmin"))
        assert listed.status_code == 200 and [item["id"] for item in listed.json["items"]] == [other]
        assert node.client.get(f"/api/v1/records/{other}", headers=node.headers()).status_code == 200
    assert node.client.get(f"/api/v1/records/{record_id}", headers=node.headers()).status_code == 200


def test_an_unreadable_record_folder_neither_stops_the_node_nor_its_lists(make_node, tmp_path):
    node = make_node(tmp_path)
    record_id, other = _two_records(node)
    folder = tmp_path / "store" / record_id
    with _mode(folder, 0):
        for path in (f"/api/v1/records/{record_id}", f"/api/v1/records/{record_id}/original?index=1"):
            message = _error(node.client.get(path, headers=node.headers()), 503, "store_unavailable", tmp_path)
            assert record_id in message and "chown" in message
        assert node.client.get("/api/v1/worklist", headers=node.headers()).status_code == 200
        close_node(node)
        node = make_node(tmp_path)  # raised PermissionError: the node did not start
        listed = node.client.get("/api/v1/records", headers=node.headers("instadmin"))
        assert listed.status_code == 200 and [item["id"] for item in listed.json["items"]] == [other]
        assert node.client.get("/api/v1/worklist", headers=node.headers()).status_code == 200
    assert folder.is_dir()  # neither removed as a leftover nor quarantined
    assert node.client.get(f"/api/v1/records/{record_id}", headers=node.headers()).status_code == 200


def test_a_record_quarantined_on_a_full_disk_leaves_the_catalogue(make_node, monkeypatch):
    """The folder is moved aside, then its reason.txt cannot be written (ENOSPC): the catalogue row
    stayed, and every record list read the damaged record again (500)."""
    node = make_node(storage__manifest_refresh_s=0)  # the damage is read at once, not from the cache
    record_id, other = _two_records(node)
    manifest = node.root / "store" / record_id / "manifest.bin"
    damaged = bytearray(manifest.read_bytes())
    damaged[-1] ^= 1
    manifest.write_bytes(bytes(damaged))
    write_text = pathlib.Path.write_text

    def disk_full(path: Path, *args, **kwargs) -> int:
        if path.name == "reason.txt":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return write_text(path, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", disk_full)
    reply = node.client.get(f"/api/v1/records/{record_id}", headers=node.headers())
    assert reply.status_code == 422 and reply.json["error"]["code"] == "store_corrupt"
    listed = node.client.get("/api/v1/records", headers=node.headers("instadmin"))
    assert listed.status_code == 200 and [item["id"] for item in listed.json["items"]] == [other]
    assert [p.name.rpartition("-")[0] for p in (node.root / "store" / ".quarantine").iterdir()] == [record_id]


def test_a_series_whose_folder_the_node_may_not_write_answers_503_with_the_fix_and_stores_nothing(node):
    """A series grows by later uploads (and C-STORE, STOW-RS). Its folder restored as root, mode
    0555: the append's journal could not be made (PermissionError) and the upload was a 500 naming
    nothing. Now 503 `store_unavailable` naming the record's folder in the store and the fix, and
    the series is as it was."""
    slices = stack(IDENTITY, count=6)
    record_id = node.upload(slices[:4]).json["id"]
    folder = node.root / "store" / record_id
    with _mode(folder, 0o555):
        reply = node.upload(slices[4:])
        message = _error(reply, 503, "store_unavailable", node.root)
        assert record_id in message and "chown" in message and "writ" in message
    assert node.client.get(f"/api/v1/records/{record_id}", headers=node.headers()).json["files"] == 4
    assert node.upload(slices[4:]).status_code == 201  # once writable, the same upload grows it


def test_a_new_series_in_a_store_folder_the_node_may_not_write_answers_503_with_the_fix(node):
    """The store folder restored as root (or mounted read-only): a new series' folder could not be made,
    a 500 naming nothing. Now 503 `store_unavailable` with the fix, the path in the log only."""
    with _mode(node.root / "store", 0o555):
        message = _error(node.upload(stack(IDENTITY, count=2)), 503, "store_unavailable", node.root)
        assert "not writable by the node's user" in message
    assert node.upload(stack(IDENTITY, count=2)).status_code == 201
