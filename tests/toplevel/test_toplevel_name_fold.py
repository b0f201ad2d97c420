"""Institution names read as one are one name, also for the lookalikes that NFKC and letter case
leave apart: dashes (U+2011 non-breaking hyphen, en dash, minus sign), characters that show nothing
(zero-width space and joiner, soft hyphen) and spaces beside a mark. The fold lives once, in
`shared.names` (the institution servers' node registry uses it too); the patient search's form of it,
stored in `Patient.name_key`, is unchanged."""

from __future__ import annotations

import pytest

from daemons.toplevel import models
from shared import names

from .support import Api

LOOKALIKES = {
    "non-breaking hyphen": "Clinic\u2011North",
    "en dash": "Clinic\u2013North",
    "minus sign": "clinic\u2212north",
    "spaces around the dash": "Clinic - North",
    "zero-width space": "Clinic-North\u200b",
    "zero-width joiner": "Cli\u200dnic-North",
    "soft hyphen": "Cli\u00adnic-North",
    "full width": "\uff23\uff4c\uff49\uff4e\uff49\uff43\uff0d\uff2e\uff4f\uff52\uff54\uff48",
}


@pytest.mark.parametrize("kind", list(LOOKALIKES))
def test_lookalike_institution_names_are_one(api: Api, tokens, seed, db_state, kind):
    status, first, _ = api.call("POST", "/api/v1/institutions", tokens["admin"], {"name": "Clinic-North"})
    assert status == 201, first
    before = db_state()
    status, body, _ = api.call("POST", "/api/v1/institutions", tokens["admin"], {"name": LOOKALIKES[kind]})
    assert status == 409 and body["error"]["code"] == "conflict", (kind, body)
    assert "'Clinic-North'" in body["error"]["message"] and first["id"] in body["error"]["message"]
    status, body, _ = api.call("PUT", f"/api/v1/institutions/{seed.institution_a['id']}", tokens["admin"],
                               {"name": LOOKALIKES[kind]})
    assert status == 409, (kind, body)
    assert db_state() == before


def test_names_that_read_differently_stay_two(api: Api, tokens, seed):
    for name in ("Clinic-North", "Clinic North", "ClinicNorth", "Clinic_North", "Clinic-Nörth"):
        status, body, _ = api.call("POST", "/api/v1/institutions", tokens["admin"], {"name": name})
        assert status == 201, (name, body)


def test_the_fold_has_one_definition_and_the_stored_search_key_is_unchanged():
    assert models.name_search_key is names.name_search_key
    # the patient search's key (stored in patient.name_key): the form of before, dashes and all
    assert names.name_search_key("Šimić–Novak\u200b  ANA") == "simic–novak\u200b ana"
    assert names.name_search_key("Müller-Lüdenscheidt  Jörg") == "muller-ludenscheidt jorg"
