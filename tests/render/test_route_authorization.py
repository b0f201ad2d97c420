"""Who may call each route of a render node's HTTP doors (its API and DICOMweb), checked route by route.

Why a table: the node's rules are spread over three dozen views, each with its decorator and its
in-view checks (`shared.auth.require_auth`, `shared.access`, `shared.roles`). A route added without
being listed here fails `test_every_route_is_listed`, so a new door is reviewed before it ships;
every other test walks the same table, so a view that copies a role list instead of naming the
shared one, or checks its target before its caller, shows up as the route that answers otherwise.

The attacker here holds a token: refused tokens (none, another server's audience, expired, not yet
valid, another signing key, in the query where only the header is taken) are 401/400 with the JSON
error body and leave nothing behind; a valid token of the wrong role or institution is a 403
`forbidden`, audited `access.denied`, and answers the same whether the record, study or patient it
names exists or not (no existence oracle).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.roles import ADMIN_ROLES, INSTANCE_STORERS, ORIGINAL_FILE_READERS, PHYSICIAN, ROLES
from shared.tokens import MAX_EXCHANGED_TTL_S, TokenIssuer, load_private_key
from tests.dicomweb.conftest import synthetic_series, uids
from tests.render.conftest import NODE_AUDIENCE, NodeHarness, build_node, close_node

PUBLIC = ("/healthz", "/readyz", "/metrics", "/api/v1/openapi.json", "/static/<path:filename>")
#: The node's own institution only (`shared.access.require_own_institution`, `require_admin_of`, or
#: a scope that a named study does not open): a token of another institution gets 403.
OWN = "own"
ANY = "any"


@dataclass(frozen=True)
class Route:
    """One rule of the url_map and method: who may call it, whether it takes `?access_token=`, and
    whether a user of another institution may."""

    rule: str
    method: str
    roles: tuple[str, ...]
    institution: str = ANY
    token_in_query: bool = False


R = "/api/v1/records/<record_id>"
STUDY = "/dicomweb/studies/<study>"
SERIES = f"{STUDY}/series/<series>"
INSTANCE = f"{SERIES}/instances/<sop>"
RSTUDY = "/dicomweb/studies/<study_uid>"
RSERIES = f"{RSTUDY}/series/<series_uid>"
RINSTANCE = f"{RSERIES}/instances/<sop_uid>"
INDEX = "<int(signed=True):index>"

ROUTES = [
    Route("/api/v1/audit", "GET", ADMIN_ROLES, OWN),
    Route("/api/v1/node", "GET", ADMIN_ROLES, OWN),
    Route("/api/v1/presets", "GET", ()),
    Route("/api/v1/records", "POST", INSTANCE_STORERS, OWN),
    Route("/api/v1/records", "GET", ROLES, OWN),  # without a patient: its admins (and sysadmins) only
    Route("/api/v1/worklist", "GET", ROLES, OWN),
    Route(R, "GET", ROLES),
    Route(R, "DELETE", ROLES, OWN),
    Route(f"{R}/filed", "POST", (PHYSICIAN,), OWN),
    Route(f"{R}/filed", "DELETE", (PHYSICIAN,), OWN),
    Route(f"{R}/receipt", "POST", (PHYSICIAN,), OWN),
    Route(f"{R}/frames/{INDEX}", "GET", ROLES, token_in_query=True),
    Route(f"{R}/frames/{INDEX}/stats", "GET", ROLES, token_in_query=True),
    Route(f"{R}/frames/{INDEX}/value", "GET", ROLES, token_in_query=True),
    Route(f"{R}/key-images", "GET", ROLES),
    Route(f"{R}/key-images/<plane>/{INDEX}", "PUT", ROLES, OWN),
    Route(f"{R}/key-images/<plane>/{INDEX}", "DELETE", ROLES, OWN),
    Route(f"{R}/load", "POST", ROLES),
    Route(f"{R}/mpr/<plane>/{INDEX}", "GET", ROLES, token_in_query=True),
    Route(f"{R}/mpr/<plane>/{INDEX}/stats", "GET", ROLES, token_in_query=True),
    Route(f"{R}/mpr/<plane>/{INDEX}/value", "GET", ROLES, token_in_query=True),
    Route(f"{R}/original", "GET", ORIGINAL_FILE_READERS),
    Route(f"{R}/status", "GET", ROLES),
    Route(f"{R}/volume", "GET", ROLES, token_in_query=True),
    Route("/dicomweb/studies", "POST", INSTANCE_STORERS, OWN),
    Route(STUDY, "POST", INSTANCE_STORERS, OWN),
    Route("/dicomweb/studies", "GET", ROLES, OWN),  # no study named: its admins (and sysadmins) only
    Route("/dicomweb/series", "GET", ROLES, OWN),
    Route("/dicomweb/instances", "GET", ROLES, OWN),
    Route(f"{STUDY}/series", "GET", ROLES),
    Route(f"{STUDY}/instances", "GET", ROLES),
    Route(f"{SERIES}/instances", "GET", ROLES),
    Route(STUDY, "GET", ORIGINAL_FILE_READERS),
    Route(SERIES, "GET", ORIGINAL_FILE_READERS),
    Route(INSTANCE, "GET", ORIGINAL_FILE_READERS),
    Route(f"{STUDY}/metadata", "GET", ROLES),
    Route(f"{SERIES}/metadata", "GET", ROLES),
    Route(f"{INSTANCE}/metadata", "GET", ROLES),
    Route(f"{INSTANCE}/frames/<frames>", "GET", ROLES),
    Route(f"{INSTANCE}/bulk/<path:element>", "GET", ROLES),
    Route(f"{STUDY}/pixeldata", "GET", ROLES),
    Route(f"{SERIES}/pixeldata", "GET", ROLES),
    Route(f"{INSTANCE}/pixeldata", "GET", ROLES),
    Route(f"{STUDY}/bulkdata", "GET", ROLES),
    Route(f"{SERIES}/bulkdata", "GET", ROLES),
    Route(f"{INSTANCE}/bulkdata", "GET", ROLES),
    Route(f"{RSTUDY}/rendered", "GET", ROLES),
    Route(f"{RSTUDY}/thumbnail", "GET", ROLES),
    Route(f"{RSERIES}/rendered", "GET", ROLES),
    Route(f"{RSERIES}/thumbnail", "GET", ROLES),
    Route(f"{RSERIES}/rendered/mpr/<plane>/{INDEX}", "GET", ROLES),
    Route(f"{RSERIES}/rendered/volume", "GET", ROLES),
    Route(f"{RINSTANCE}/rendered", "GET", ROLES),
    Route(f"{RINSTANCE}/thumbnail", "GET", ROLES),
    Route(f"{RINSTANCE}/frames/<frame_list>/rendered", "GET", ROLES),
    Route(f"{RINSTANCE}/frames/<frame_list>/thumbnail", "GET", ROLES),
]


@dataclass
class Archive:
    """A node holding one series, and the UIDs that name it."""

    harness: NodeHarness
    record_id: str
    study: str
    series: str
    sop: str
    patient_id: str

    def url(self, route: Route, record_id: str | None = None, study: str | None = None) -> str:
        """A concrete URL of `route` naming this archive's series (or `record_id`/`study` instead)."""
        values = {"<record_id>": record_id or self.record_id, "<study>": study or self.study,
                  "<study_uid>": study or self.study, "<series>": self.series, "<series_uid>": self.series,
                  "<sop>": self.sop, "<sop_uid>": self.sop, f"<plane>/{INDEX}": "axial/0", INDEX: "0",
                  "<frames>": "1", "<frame_list>": "1", "<path:element>": "7FE00010"}
        url = route.rule
        for placeholder, value in values.items():
            url = url.replace(placeholder, value)
        if "/key-images/axial/0" in url:
            url = url.replace("/key-images/axial/0", "/key-images/native/0")
        return url


@pytest.fixture(scope="module")
def archive(tmp_path_factory, token_keys) -> Iterator[Archive]:
    harness = build_node(tmp_path_factory.mktemp("route-authorization"), token_keys)
    files = synthetic_series(count=4)
    reply = harness.upload([(f"{n}.dcm", raw) for n, raw in enumerate(files)])
    assert reply.status_code == 201, reply.json
    study, series, sop = uids(files[0])
    yield Archive(harness, reply.json["id"], study, series, sop, "DW-TEST")
    close_node(harness)


def _call(archive: Archive, route: Route, headers: dict[str, str] | None = None, url: str | None = None):
    return archive.harness.client.open(url or archive.url(route), method=route.method, headers=headers or {})


def _denials(archive: Archive) -> int:
    models = archive.harness.app.extensions["sivr_node"].models
    return models.AuditEntry.select().where(models.AuditEntry.action == "access.denied").count()


def _audit_rows(archive: Archive) -> int:
    models = archive.harness.app.extensions["sivr_node"].models
    return models.AuditEntry.select().count()


def _error(reply) -> tuple[str, str]:
    """An error answer's code and message (its request id differs each time)."""
    return reply.json["error"]["code"], reply.json["error"]["message"]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_every_route_is_listed(archive):
    """Every rule and method of the url_map is here or public: a new route is reviewed before it ships."""
    app = archive.harness.app
    served = {(rule.rule, method) for rule in app.url_map.iter_rules()
              for method in rule.methods - {"HEAD", "OPTIONS"} if rule.rule not in PUBLIC}
    assert served == {(route.rule, route.method) for route in ROUTES}
    for rule in app.url_map.iter_rules():  # the public ones are those: no token read by their views
        if rule.rule in PUBLIC:
            assert not hasattr(app.view_functions[rule.endpoint], "token_in_query"), rule.rule


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.rule}")
def test_the_query_token_is_taken_only_where_declared(archive, route):
    """`token_in_query` is the decorator's flag and only the viewer's image and probe GETs set it."""
    view = archive.harness.app.view_functions[
        next(r.endpoint for r in archive.harness.app.url_map.iter_rules()
             if r.rule == route.rule and route.method in r.methods)]
    assert view.token_in_query is route.token_in_query


def _tokens(archive: Archive, token_keys: tuple[Path, Path]) -> dict[str, tuple[dict[str, str], int, str]]:
    """Refused credentials: headers, status, error code."""
    private = load_private_key(token_keys[0])
    issuer = archive.harness.issuer
    user, inst = str(uuid.uuid4()), archive.harness.institution_id
    other_node = TokenIssuer(private, "sivr-toplevel", "https://render-2.test:5003", MAX_EXCHANGED_TTL_S)
    toplevel = TokenIssuer(private, "sivr-toplevel", "https://toplevel.test:5001", 900)
    stranger = TokenIssuer(Ed25519PrivateKey.generate(), "sivr-toplevel", NODE_AUDIENCE, MAX_EXCHANGED_TTL_S)
    long_lived = TokenIssuer(private, "sivr-toplevel", NODE_AUDIENCE, 3600)
    now = int(time.time())
    return {
        "none": ({}, 401, "missing_token"),
        "basic": ({"Authorization": "Basic dXNlcjpwYXNz"}, 401, "invalid_token"),
        "other node's audience": (_bearer(other_node.issue(user, "p", PHYSICIAN, inst)[0]), 401, "invalid_token"),
        "session token": (_bearer(toplevel.issue(user, "p", PHYSICIAN, inst)[0]), 401, "invalid_token"),
        "expired": (_bearer(issuer.issue(user, "p", PHYSICIAN, inst, now=now - 600)[0]), 401, "token_expired"),
        "not yet valid": (_bearer(issuer.issue(user, "p", PHYSICIAN, inst, now=now + 600)[0]), 401, "invalid_token"),
        "another key": (_bearer(stranger.issue(user, "p", PHYSICIAN, inst)[0]), 401, "invalid_token"),
        "too long-lived": (_bearer(long_lived.issue(user, "p", PHYSICIAN, inst)[0]), 401, "invalid_token"),
    }


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.rule}")
def test_refused_tokens_are_401_with_the_json_body_and_leave_nothing(archive, token_keys, route):
    """No token, another server's (or the toplevel's session) token, an expired, future, foreign-key
    or over-long-lived one: 401 with `WWW-Authenticate` and the error body, before any view runs
    (nothing audited: an anonymous refusal names no one)."""
    before = _audit_rows(archive)
    for name, (headers, status, code) in _tokens(archive, token_keys).items():
        reply = _call(archive, route, headers)
        assert reply.status_code == status, (name, reply.status_code, reply.get_data(as_text=True)[:300])
        assert reply.json["error"]["code"] == code, name
        assert reply.headers["WWW-Authenticate"].startswith("Bearer"), name
        assert reply.mimetype == "application/json", name
    assert _audit_rows(archive) == before


@pytest.mark.parametrize("route", [r for r in ROUTES if not r.token_in_query], ids=lambda r: f"{r.method} {r.rule}")
def test_a_query_token_is_refused_where_only_the_header_is_taken(archive, route):
    """`?access_token=` of a valid token on a header-only route: 400 `invalid_request`, nothing done."""
    token = archive.harness.headers("sysadmin")["Authorization"].split(" ", 1)[1]
    url = archive.url(route)
    before = _audit_rows(archive)
    reply = _call(archive, route, url=f"{url}{'&' if '?' in url else '?'}access_token={token}")
    assert reply.status_code == 400, reply.get_data(as_text=True)[:300]
    assert reply.json["error"]["code"] == "invalid_request"
    assert _audit_rows(archive) == before


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.rule}")
@pytest.mark.parametrize("role", ROLES)
def test_a_role_not_allowed_is_403_audited(archive, route, role):
    """The decorator's roles are the shared definitions (`shared.roles`); a role outside them gets 403
    `forbidden` naming the roles, audited `access.denied`; one inside them is never refused for its role."""
    before = _denials(archive)
    # an allowed role is sent at a series the node does not hold: this test deletes and files nothing
    ghost = archive.url(route, record_id="cd" * 32, study="1.2.999.2")
    reply = _call(archive, route, archive.harness.headers(role), ghost if role in route.roles else None)
    refused_for_role = reply.status_code == 403 and "needs the role" in reply.json["error"]["message"]
    assert refused_for_role == bool(route.roles and role not in route.roles), (reply.status_code, reply.json)
    if refused_for_role:
        assert reply.json["error"]["code"] == "forbidden"
        assert _denials(archive) == before + 1


#: (route, role) of each route that is its institution's alone, with each non-system role it takes
OWN_ROUTES_BY_ROLE = [(route, role) for route in ROUTES if route.institution == OWN
                      for role in ("physician", "instadmin") if not route.roles or role in route.roles]


@pytest.mark.parametrize(("route", "role"), OWN_ROUTES_BY_ROLE, ids=lambda v: v if isinstance(v, str)
                         else f"{v.method} {v.rule}")
def test_another_institution_is_refused_alike_whether_the_target_exists(archive, route, role):
    """A physician or institution admin of another institution, with the role the route takes, is
    refused 403 (audited) on what is the node's institution's alone, and gets the same answer for
    a record or study that does not exist: the refusal is no oracle of what the node holds."""
    headers = archive.harness.headers(role, institution_id=str(uuid.uuid4()))
    before = _denials(archive)
    real = _call(archive, route, headers)
    ghost = _call(archive, route, headers, archive.url(route, record_id="ab" * 32, study="1.2.999.1"))
    assert real.status_code == 403, (real.status_code, real.get_data(as_text=True)[:300])
    assert real.json["error"]["code"] == "forbidden"
    assert (ghost.status_code, _error(ghost)) == (real.status_code, _error(real))
    assert _denials(archive) == before + 2
    assert archive.harness.client.get(f"/api/v1/records/{archive.record_id}",
                                      headers=archive.harness.headers()).status_code == 200



@pytest.mark.parametrize("path", ["/api/v1/worklist", "/api/v1/node", "/api/v1/audit", "/api/v1/records",
                                  "/dicomweb/studies"])
def test_a_system_administrator_of_any_institution_administers_the_node(archive, path):
    """The one rule of `shared.roles.may_administer_institution`: a system administrator administers
    every institution, so the node's institution-only lists are theirs too (docs/API.md), while an
    institution administrator of another institution is refused (above)."""
    sysadmin = archive.harness.headers("sysadmin", institution_id=str(uuid.uuid4()))
    reply = archive.harness.client.get(path, headers={**sysadmin, "Accept": "application/dicom+json"})
    assert reply.status_code == 200, reply.get_data(as_text=True)[:300]

def _qido(archive: Archive, path: str, headers: dict[str, str]):
    return archive.harness.client.get(path, headers={**headers, "Accept": "application/dicom+json"})


@pytest.mark.parametrize("path", [
    "/dicomweb/studies?PatientID={patient}", "/dicomweb/studies?00100020={patient}",
    "/dicomweb/series?PatientID={patient}", "/dicomweb/instances?PatientID={patient}",
    "/api/v1/records?patient_id_dicom={patient}",
])
def test_a_patient_id_named_by_another_institution_is_refused_whether_held(archive, path):
    """A DICOM PatientID is short and guessable: naming one is for the node's institution
    (`shared.access.require_query_scope`). Another institution's physician gets the same 403
    for a PatientID the node holds and for one it does not (no oracle of who is a patient here),
    whichever way the key is spelt; the node's own physician finds the patient."""
    foreign = archive.harness.headers("physician", institution_id=str(uuid.uuid4()))
    held = _qido(archive, path.format(patient=archive.patient_id), foreign)
    absent = _qido(archive, path.format(patient="NOBODY-HERE"), foreign)
    assert held.status_code == 403, held.get_data(as_text=True)[:300]
    assert _error(held) == _error(absent)
    assert held.json["error"]["code"] == "forbidden"
    own = _qido(archive, path.format(patient=archive.patient_id), archive.harness.headers())
    assert own.status_code == 200
    assert archive.study in own.get_data(as_text=True) or archive.record_id in own.get_data(as_text=True)


@pytest.mark.parametrize("value", ["*", "1.2*", "", " ", "%5C*"])
def test_a_study_named_by_pattern_is_no_named_study(archive, value):
    """Only one study named by its UID opens a search to any signed-in user: a wildcard, an empty
    (universal) value or a list holding a wildcard is a listing, for the institution's admins."""
    foreign = archive.harness.headers("physician", institution_id=str(uuid.uuid4()))
    for path in ("/dicomweb/studies", "/dicomweb/series", "/dicomweb/instances"):
        reply = _qido(archive, f"{path}?StudyInstanceUID={value}", foreign)
        assert reply.status_code in (400, 403), (path, value, reply.status_code)
        assert archive.study not in reply.get_data(as_text=True)


def test_a_study_named_by_uid_is_open_to_any_signed_in_user_and_shows_that_study_only(archive):
    """The documented rule (docs/API.md): a StudyInstanceUID, long and unguessable, opens its study
    to a physician of another institution (audited), and nothing else: an empty list of UIDs (`\\`)
    names no study and finds nothing."""
    foreign = archive.harness.headers("physician", institution_id=str(uuid.uuid4()))
    named = _qido(archive, f"/dicomweb/studies?StudyInstanceUID={archive.study}", foreign)
    assert named.status_code == 200 and [a["0020000D"]["Value"] for a in named.json] == [[archive.study]]
    assert _qido(archive, "/dicomweb/studies?StudyInstanceUID=%5C", foreign).status_code in (204, 400, 403)
    assert _qido(archive, "/dicomweb/studies?StudyInstanceUID=1.2.999.3", foreign).status_code == 204


def _last_denial(archive: Archive) -> tuple[str, str | None]:
    models = archive.harness.app.extensions["sivr_node"].models
    entry = (models.AuditEntry.select().where(models.AuditEntry.action == "access.denied")
             .order_by(models.AuditEntry.at.desc()).first())
    return entry.object_type, entry.object_id


def test_a_refused_dicomweb_request_is_audited_against_what_it_names(archive):
    """Before: a refused DICOMweb request (an administrator's WADO-RS retrieve, a physician of
    another institution's STOW-RS) was audited `access.denied` naming no object ("request", None),
    while the same refusal at `/original` named the record: asking the node's audit "who tried to
    take this series out" (`?object_id=<record id>`) missed every DICOMweb attempt. Now it names
    the series' record, as WADO-RS reads are audited, or the study (QIDO-RS audits studies so)."""
    admin = archive.harness.headers("instadmin")
    series = f"/dicomweb/studies/{archive.study}/series/{archive.series}"
    audit = f"/api/v1/audit?object_id={archive.record_id}&action=access.denied"
    before = archive.harness.client.get(audit, headers=admin).json["total"]
    assert archive.harness.client.get(f"/api/v1/records/{archive.record_id}/original",
                                      headers=admin).status_code == 403
    assert _last_denial(archive) == ("record", archive.record_id)
    for path in (series, f"{series}/instances/{archive.sop}"):
        assert archive.harness.client.get(path, headers=admin).status_code == 403
        assert _last_denial(archive) == ("record", archive.record_id), path
    assert archive.harness.client.get(f"/dicomweb/studies/{archive.study}", headers=admin).status_code == 403
    assert _last_denial(archive) == ("study", archive.study)
    foreign = archive.harness.headers("physician", institution_id=str(uuid.uuid4()))
    assert archive.harness.client.post(f"/dicomweb/studies/{archive.study}", headers=foreign).status_code == 403
    assert _last_denial(archive) == ("study", archive.study)
    # a series the node does not hold names its study: the audit says what was asked for
    assert archive.harness.client.get(f"/dicomweb/studies/{archive.study}/series/1.2.999.4",
                                      headers=admin).status_code == 403
    assert _last_denial(archive) == ("study", archive.study)
    assert archive.harness.client.get(audit, headers=admin).json["total"] == before + 3
