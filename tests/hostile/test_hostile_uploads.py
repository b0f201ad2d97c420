"""Hostile and malformed DICOM uploaded to a real render node: a clear 4xx, nothing stored, no crash."""

from __future__ import annotations

import pytest

from tests.hostile.corpus import base_dataset, hostile_corpus, to_bytes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def node(deployment):
    if not any(i.layer == "render" for i in deployment.instances):
        pytest.skip("the render layer is not available in this build")
    return deployment.client("physician"), deployment.url("render-1-1"), deployment.client("admin")


def _stored_ids(admin, url) -> set[str]:
    """Every record of the node, as its institution's admin lists them (physicians must name a patient)."""
    return {r["id"] for r in admin.call("GET", f"{url}/api/v1/records").json()["items"]}


def test_corpus_has_at_least_100_cases():
    assert len(hostile_corpus()) >= 100


def test_every_hostile_file_is_refused_and_nothing_is_stored(node):
    client, url, admin = node
    before = _stored_ids(admin, url)
    unexpected = []
    for name, data in hostile_corpus():
        reply = client.session.post(f"{url}/api/v1/records",
                                    files=[("files", (f"{name}.dcm", data, "application/dicom"))], timeout=120)
        error = reply.json().get("error", {}) if reply.headers.get("Content-Type", "").startswith(
            "application/json") else {}
        if not (400 <= reply.status_code < 500 and error.get("code") and error.get("message")):
            unexpected.append(f"{name}: {reply.status_code} {reply.text[:200]}")
    assert not unexpected, "hostile files not refused with a clear 4xx:\n" + "\n".join(unexpected)
    assert _stored_ids(admin, url) == before
    assert client.call("GET", f"{url}/healthz").json()["status"] == "ok"


def test_a_hostile_file_inside_a_good_series_refuses_the_whole_record(node):
    client, url, admin = node
    before = _stored_ids(admin, url)
    good = to_bytes(base_dataset())
    for name, bad in hostile_corpus()[::10]:
        reply = client.session.post(f"{url}/api/v1/records", timeout=120, files=[
            ("files", ("good.dcm", good, "application/dicom")),
            ("files", (f"{name}.dcm", bad, "application/dicom")),
        ])
        assert 400 <= reply.status_code < 500, f"{name}: {reply.status_code} {reply.text[:200]}"
    assert _stored_ids(admin, url) == before
