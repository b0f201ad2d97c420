"""Person names holding characters that show nothing (Unicode format characters, the fillers).

"Ana Hor<U+200B>vat" was stored (201) and listed as "Ana Horvat", yet a search for "horvat" did not
find her, her own CT ("HORVAT^ANA") was "name differs" at filing, and anyone could create lookalike
duplicates. Such a name is now refused (400 naming the field and the character), on creation and
on every edit, of patients and of users; names already stored are not touched.
"""

from __future__ import annotations

import unicodedata

import pytest

from shared.patient_identity import compare_patients

from .support import Api, patient_body

#: Each one shows nothing where it stands (U+00AD only where a line breaks).
INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u200e", "\u200f", "\u2060", "\ufeff", "\u00ad", "\u180e",
             "\U000e0041", "\u3164", "\u115f", "\u2800"]


def _ids(chars: list[str]) -> list[str]:
    return [f"U+{ord(c):04X}" for c in chars]


def _refused(answer: dict, field: str, char: str) -> bool:
    message = answer["error"]["message"]
    return (answer["error"]["code"] == "validation_error" and message.startswith(f"{field} ")
            and f"U+{ord(char):04X} {unicodedata.name(char)}" in message and "remove it" in message)


def test_a_plain_name_with_an_invisible_character_is_another_name_than_the_ct_shows():
    """Why the rule exists: what the toplevel stored was "name differs" from the patient's own CT."""
    assert compare_patients("Ana", "Horvat", "1970-03-15", "HORVAT^ANA", "19700315").differs == []
    assert compare_patients("Ana", "Hor\u200bvat", "1970-03-15", "HORVAT^ANA", "19700315").differs == ["name"]


@pytest.mark.parametrize("char", INVISIBLE, ids=_ids(INVISIBLE))
@pytest.mark.parametrize("field", ["first_name", "last_name"])
def test_a_new_patient_name_with_an_invisible_character_is_refused(api: Api, tokens, db_state, field, char):
    before = db_state()
    name = {"first_name": "Ana", "last_name": "Horvat"}
    name[field] = name[field][:3] + char + name[field][3:]
    status, answer, _ = api.call("POST", "/api/v1/patients", tokens["physician"],
                                 patient_body(insurance_number="HR-777", **name))
    assert status == 400 and _refused(answer, field, char), answer
    assert db_state() == before


@pytest.mark.parametrize("char", INVISIBLE, ids=_ids(INVISIBLE))
@pytest.mark.parametrize("field", ["first_name", "last_name"])
def test_an_edited_patient_name_with_an_invisible_character_is_refused(api: Api, tokens, db_state, field, char):
    status, created, _ = api.call("POST", "/api/v1/patients", tokens["physician"],
                                  patient_body(first_name="Ana", last_name="Horvat"))
    assert status == 201, created
    before = db_state()
    for value in (f"{char}Horvat", f"Horvat{char}", f"Hor{char}vat"):
        status, answer, _ = api.call("PUT", f"/api/v1/patients/{created['id']}", tokens["physician"],
                                     {field: value})
        assert status == 400 and _refused(answer, field, char), (value, answer)
    assert db_state() == before
    status, found, _ = api.call("GET", "/api/v1/patients?q=ana%20horvat", tokens["physician"])
    assert status == 200 and [p["id"] for p in found["items"]] == [created["id"]]


USER_CASES = ["\u200b", "\u200d", "\ufeff", "\u00ad"]


@pytest.mark.parametrize("char", USER_CASES, ids=_ids(USER_CASES))
def test_a_user_full_name_with_an_invisible_character_is_refused(api: Api, tokens, seed, db_state, char):
    """The same rule for the one other person name the toplevel stores: created, edited by an
    administrator, and edited by its owner."""
    before = db_state()
    body = {"username": "dr.new", "password": "new-user-pass-1", "full_name": f"Gregory{char} House",
            "role": "physician", "institution_id": seed.institution_a["id"]}
    status, answer, _ = api.call("POST", "/api/v1/users", tokens["admin"], body)
    assert status == 400 and _refused(answer, "full_name", char), answer
    status, answer, _ = api.call("PUT", f"/api/v1/users/{seed.users['physician']['id']}", tokens["admin"],
                                 {"full_name": f"Gregory{char} House"})
    assert status == 400 and _refused(answer, "full_name", char), answer
    status, answer, _ = api.call("PUT", "/api/v1/me", tokens["physician"], {"full_name": f"Gregory{char} House"})
    assert status == 400 and _refused(answer, "full_name", char), answer
    assert db_state() == before


@pytest.mark.parametrize("first, last", [
    ("Zoë", "Šimić"),
    ("Zoe\u0308", "S\u030cimic\u0301"),  # the accents typed as combining marks: marks, not format characters
    ("John", "O'Brien-Smith"),
    ("\u0645\u0631\u06cc\u0645", "\u0627\u062d\u0645\u062f\u06cc"),  # Persian, without a joiner
    ("\u0905\u0928\u093f\u0924\u093e", "\u0936\u0930\u094d\u092e\u093e"),  # Devanagari, with its vowel signs
])
def test_names_that_show_every_character_are_still_taken(api: Api, tokens, first, last):
    status, created, _ = api.call("POST", "/api/v1/patients", tokens["physician"],
                                  patient_body(first_name=first, last_name=last))
    assert status == 201 and (created["first_name"], created["last_name"]) == (first, last), created
    status, edited, _ = api.call("PUT", f"/api/v1/patients/{created['id']}", tokens["physician"],
                                 {"first_name": last, "last_name": first})
    assert status == 200 and (edited["first_name"], edited["last_name"]) == (last, first), edited
