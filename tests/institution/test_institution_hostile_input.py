"""Every field of every body replaced by hostile values: always a 4xx naming the problem, never a 500."""

from __future__ import annotations

import pytest

from .conftest import finding_body, local_link, record_body

HOSTILE_VALUES = [
    None, True, False, 0, -1, 2**63, 1.5, float("inf"), "", " ", "\u0000", "\ud800", "x" * 70_000,
    "' OR 1=1 --", "../../etc/passwd", "<script>alert(1)</script>", [], [None], {}, {"$gt": ""},
]


def _sweep(api, user, method: str, path: str, body: dict) -> list[tuple[str, object, int]]:
    """Send `body` with each field replaced by each hostile value; return the 5xx answers."""
    failures = []
    for field in body:
        for value in HOSTILE_VALUES:
            status, answer = api.call(method, path, user, {**body, field: value})
            if status >= 500 or answer is None or (status >= 400 and "error" not in answer):
                failures.append((field, repr(value)[:40], status))
    return failures


# Some hostile values are legal (a node may be called "' OR 1=1 --"); the point is the answer.

def test_node_bodies(api, users, node):
    admin = users["admin"]
    body = {"name": "n", "url": "https://n.example"}
    assert _sweep(api, admin, "POST", "/api/v1/nodes", body) == []
    assert _sweep(api, admin, "PUT", f"/api/v1/nodes/{node['id']}", body) == []


def test_record_bodies(api, users, node, patient_id):
    body = record_body(node["id"], patient_id, content=b"hostile")
    assert _sweep(api, users["physician"], "POST", "/api/v1/records", body) == []


def test_record_label_corrections(api, users, record):
    body = {"description": "Abdomen CT", "record_type": "CT"}
    assert _sweep(api, users["physician"], "PATCH", f"/api/v1/records/{record['id']}", body) == []


def test_finding_bodies(api, users, record, finding, patient_id):
    author = users["physician"]
    body = finding_body(patient_id, [local_link(record)])
    assert _sweep(api, author, "POST", "/api/v1/findings", body) == []
    assert _sweep(api, author, "PUT", f"/api/v1/findings/{finding['id']}", body) == []
    assert _sweep(api, author, "POST", f"/api/v1/findings/{finding['id']}/records", local_link(record)) == []


@pytest.mark.parametrize("raw", [b"", b"null", b"[]", b"42", b'"text"', b"{", b"\xff\xfe", b"[" * 100])
def test_bodies_that_are_not_json_objects(api, users, raw):
    response = api.client.post("/api/v1/nodes", data=raw, content_type="application/json",
                               headers=users["admin"].headers)
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_json"


@pytest.mark.parametrize("query", ["since=0001-01-01T00:00:00%2B01:00", "until=9999-12-31T23:59:59-01:00"])
def test_an_audit_time_outside_utc_years_is_400(api, users, query):
    """Valid ISO 8601 times that fall before year 1 or after 9999 in UTC: astimezone overflowed, a 500."""
    status, body = api.call("GET", f"/api/v1/audit?{query}", users["admin"])
    assert status == 400 and body["error"]["code"] == "validation_error", body


def test_signed_texts_with_a_lone_surrogate_are_refused_not_500(api, users, node, record, patient_id):
    """A JSON string can carry a lone surrogate, which PyJWT could not encode (UnicodeEncodeError, a
    500) for a patient reference or an upload receipt: each is refused as malformed."""
    rb = record_body(node["id"], patient_id, content=b"surrogate")
    status, body = api.call("POST", "/api/v1/records", users["physician"], {**rb, "receipt": "\ud800"})
    assert status == 422 and body["error"]["code"] == "invalid_receipt", body
    status, body = api.call("POST", "/api/v1/records", users["physician"], {**rb, "patient_reference": "\ud800"})
    assert status == 400 and body["error"]["code"] == "invalid_patient_reference", body
    fb = finding_body(patient_id, [local_link(record)], patient_reference="\ud800")
    status, body = api.call("POST", "/api/v1/findings", users["physician"], fb)
    assert status == 400 and body["error"]["code"] == "invalid_patient_reference", body


@pytest.mark.parametrize("path", ["/api/v1/nodes/%00", "/api/v1/nodes/a%00b%ED%A0%80"])
def test_a_refusal_whose_path_holds_nul_is_audited_not_a_500(api, users, path):
    """A physician's `PUT /api/v1/nodes/%00` is refused (403) before the id is read, and the refusal's
    `access.denied` entry quotes the path: PostgreSQL refused the NUL, the entry was lost and the
    answer was 500. What no database stores is kept as U+FFFD (`shared.audit`)."""
    status, answer = api.call("PUT", path, users["physician"], {"name": "x"})
    assert status == 403 and answer["error"]["code"] == "forbidden", answer
    status, log = api.call("GET", "/api/v1/audit?action=access.denied", users["admin"])
    assert status == 200, log
    entry = log["items"][0]
    assert entry["user_id"] == users["physician"].id
    assert "\x00" not in entry["object_id"] + entry["detail"]
    assert entry["object_id"].startswith("\ufffd") or entry["object_id"].startswith("a\ufffd")
    assert entry["detail"].startswith("PUT /api/v1/nodes/")


def test_a_peer_address_longer_than_the_audit_column_is_audited_cut_not_a_500(api, users, record):
    """gunicorn's `remote_addr` may be longer than the audit's 64 characters (an IPv6 address with a
    zone id, a trusted proxy's X-Forwarded-For value): PostgreSQL refused the entry, which was lost,
    and the answer was 500. It is kept cut, ending in `…` (`shared.audit.stored_address`)."""
    address = "fe80::a00:27ff:fe4e:66a1%" + "veth-a1b2c3d4e5f6-" * 4
    status, body = api.call("GET", f"/api/v1/records/{record['id']}", users["physician"],
                            environ_base={"REMOTE_ADDR": address})
    assert status == 200, body
    status, log = api.call("GET", "/api/v1/audit?action=record.read", users["admin"])
    assert status == 200, log
    assert [entry["client_ip"] for entry in log["items"]] == [address[:63] + "…"]
