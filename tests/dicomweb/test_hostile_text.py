"""Text that no database holds (NUL, lone surrogates), in the paths and the instances DICOMweb takes,
on SQLite and on PostgreSQL: PostgreSQL refuses a NUL in any text parameter, so what SQLite answered
was a 500 there. Every such request is a 4xx (or the instance's own failure in a STOW-RS answer), and
the two databases answer alike.
"""

from __future__ import annotations

import pytest

from tests.dicomweb.conftest import synthetic_series, uids
from tests.dicomweb.test_stow_wado import body_of, stow


@pytest.fixture(params=["sqlite", "postgresql"])
def node_on(request, make_node):
    """A node whose catalogue is on SQLite, then on PostgreSQL."""
    overrides = {}
    if request.param == "postgresql":
        overrides["database__url"] = request.getfixturevalue("pg_database_factory")()
    return make_node(**overrides)


def test_path_uids_no_database_holds_are_404_not_500(node_on):
    """`/studies/1%00` was a 500 on PostgreSQL (the UID went to the query), a 404 on SQLite: a path
    naming what is no UID is 404 before any query (`dicomweb.resolve`), for every resource."""
    files = synthetic_series(1)
    assert stow(node_on, body_of(files)).status_code == 200
    study, series, sop = uids(files[0])
    for uid in ("1%00", "%00", "1.2%00.3"):
        paths = [f"/dicomweb/studies/{uid}", f"/dicomweb/studies/{uid}/metadata", f"/dicomweb/studies/{uid}/series",
                 f"/dicomweb/studies/{uid}/instances", f"/dicomweb/studies/{uid}/rendered",
                 f"/dicomweb/studies/{study}/series/{uid}", f"/dicomweb/studies/{study}/series/{uid}/instances",
                 f"/dicomweb/studies/{study}/series/{uid}/thumbnail",
                 f"/dicomweb/studies/{study}/series/{series}/instances/{uid}/metadata",
                 f"/dicomweb/studies/{study}/series/{series}/instances/{uid}/rendered"]
        for path in paths:
            reply = node_on.client.get(path, headers=node_on.headers())
            assert reply.status_code == 404, (path, reply.get_data(as_text=True))
            assert reply.get_json()["error"]["code"] == "not_found"
    assert node_on.client.get(f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/metadata",
                              headers=node_on.headers()).status_code == 200
