"""Id and body validation: blank, malformed and wrong-typed input is a 400 naming the field."""

import pytest

from shared.errors import ApiError
from shared.validation import Field, ascii_float, ascii_int, parse_date, parse_record_id, parse_uuid, validate


@pytest.mark.parametrize("value", ["", "   ", None, "not-a-uuid", "1234", 5, "%", "*"])
def test_bad_uuid_is_invalid_id(value):
    with pytest.raises(ApiError) as err:
        parse_uuid(value)
    assert err.value.status == 400 and err.value.code == "invalid_id"


def test_uuid_is_canonicalised_only_when_already_canonical():
    assert parse_uuid("0b9c4d8e-1c2f-4a5b-9c3d-2e1f0a9b8c7d") == "0b9c4d8e-1c2f-4a5b-9c3d-2e1f0a9b8c7d"
    with pytest.raises(ApiError):
        parse_uuid("{0b9c4d8e-1c2f-4a5b-9c3d-2e1f0a9b8c7d}")


def test_record_id_must_be_sha256_hex():
    assert parse_record_id("a" * 64) == "a" * 64
    for bad in ["A" * 64, "a" * 63, "../etc/passwd", "", "a" * 64 + "\n"]:
        with pytest.raises(ApiError):
            parse_record_id(bad)


def test_validate_types_lengths_choices_and_unknown_fields():
    fields = {"name": Field(str, min_len=1, max_len=5), "role": Field(str, choices=("a", "b")),
              "n": Field(int, required=False)}
    assert validate({"name": " ab ", "role": "a"}, fields) == {"name": "ab", "role": "a"}
    for body, needle in [({"role": "a"}, "name is required"),
                         ({"name": "abcdef", "role": "a"}, "longer"),
                         ({"name": "", "role": "a"}, "empty"),
                         ({"name": "x", "role": "c"}, "one of"),
                         ({"name": "x", "role": "a", "n": True}, "n must be of type int"),
                         ({"name": 3, "role": "a"}, "name must be of type str"),
                         ({"name": "x", "role": "a", "extra": 1}, "unknown field")]:
        with pytest.raises(ApiError, match=needle):
            validate(body, fields)


def test_a_value_is_bounded_in_the_form_its_check_stores():
    """`Field.max_len` is the column's: a check that lengthens the value (Unicode lower-casing makes
    `İ` two characters) gave a value that fit as sent and overflowed the column (PostgreSQL: a 500)."""
    fields = {"name": Field(str, max_len=4, check=lambda value, field: value.lower())}
    assert validate({"name": "\u0130\u0130"}, fields) == {"name": "i\u0307i\u0307"}
    with pytest.raises(ApiError, match="name is longer than 4 characters in the form it is stored in"):
        validate({"name": "\u0130" * 3}, fields)


def test_partial_update_needs_at_least_one_field():
    with pytest.raises(ApiError, match="at least one"):
        validate({}, {"name": Field(str)}, partial=True)


def test_dates():
    assert parse_date("2026-02-03", "d") == "2026-02-03"
    with pytest.raises(ApiError):
        parse_date("2026-02-30", "d")


@pytest.mark.parametrize("bad", ["a\x00b", "a\x1bb", "a\ud800b", "line\nbreak",
                                 # bidirectional overrides, embeddings and isolates reorder what follows
                                 "Anna\u202e", "\u202aSmith", "x\u2066y", "x\u2069",
                                 # line and paragraph separators, C1 controls (NEL): a plain-text
                                 # display breaks the line there
                                 "old-ct\u2028\u2028removing it is safe", "a\u2029b", "a\x85b", "a\x9bb"])
def test_control_characters_are_refused_in_single_line_fields(bad):
    with pytest.raises(ApiError, match="control characters"):
        validate({"name": bad}, {"name": Field(str)})


def test_multiline_fields_keep_line_breaks_but_refuse_other_controls():
    fields = {"text": Field(str, multiline=True, max_len=100)}
    assert validate({"text": "one\ntwo\tthree"}, fields) == {"text": "one\ntwo\tthree"}
    with pytest.raises(ApiError):
        validate({"text": "nul\x00"}, fields)
    with pytest.raises(ApiError):
        validate({"text": "one\n\u202etwo"}, fields)
    with pytest.raises(ApiError):
        validate({"text": "one\x85two"}, fields)
    assert validate({"text": "one\u2028two"}, fields) == {"text": "one\u2028two"}  # a line break in a report


@pytest.mark.parametrize("invisible", ["\u200b", "\ufeff", " \u200d\u2060 "])
def test_a_text_of_invisible_characters_alone_is_empty(invisible):
    """str.strip() keeps a zero-width space or a byte order mark: a finding described by one alone
    was stored with a blank description."""
    with pytest.raises(ApiError, match="must not be empty"):
        validate({"text": invisible}, {"text": Field(str, min_len=1, multiline=True)})
    assert validate({"text": invisible}, {"text": Field(str)}) == {"text": invisible.strip()}
    # visible text joined by them (a word joiner in a name, right-to-left marks in Hebrew) is kept
    assert validate({"text": "a\u2060b \u200fשלום"}, {"text": Field(str, min_len=1)}) == {"text": "a\u2060b \u200fשלום"}


def test_deeply_nested_json_is_a_400_not_a_crash():
    from flask import Flask

    from shared.validation import json_body

    app = Flask(__name__)
    with app.test_request_context("/", method="POST", data="[" * 200_000,
                                  content_type="application/json"), pytest.raises(ApiError) as err:
        json_body()
    assert err.value.status == 400 and err.value.code == "invalid_json"


@pytest.mark.parametrize("text, value", [("0", 0), ("-12", -12), ("1234567890123456", 1234567890123456)])
def test_ascii_int_reads_ascii_integers(text, value):
    assert ascii_int(text) == value


@pytest.mark.parametrize("text", ["", "+1", " 1", "1 ", "1_0", "\u0661", "\uff11", "\u00b2", "12345678901234567",
                                  "1.0", "0x1"])
def test_ascii_int_refuses_what_int_alone_would_read_or_the_api_never_sends(text):
    assert ascii_int(text) is None


@pytest.mark.parametrize("text, value", [("40", 40.0), ("-1.5", -1.5), (".5", 0.5), ("5.", 5.0), ("+2", 2.0),
                                         ("1e3", 1000.0), ("2.5E-2", 0.025),
                                         # JavaScript's String(x) near 0 and near 1e21: the viewer sends these
                                         ("0.000033333333333333335", 0.000033333333333333335),
                                         ("0.00000012345678901234567", 1.2345678901234567e-7),
                                         ("123456789012345678901", 1.2345678901234568e20)])
def test_ascii_float_reads_decimal_numbers(text, value):
    assert ascii_float(text) == value


@pytest.mark.parametrize("text", ["", "nan", "inf", "-Infinity", "1_000", " 1", "\u0664\u0660", "1e", ".", "1e9999",
                                  "0x10", "1,5"])
def test_ascii_float_refuses_other_scripts_separators_and_non_numbers(text):
    assert ascii_float(text) is None


@pytest.mark.parametrize(("data", "content_type", "status"), [
    ('{"a": 1}'.encode("utf-8-sig"), "application/json", 400),
    ('{"a": 1}'.encode("utf-16"), "application/json", 400),
    ('{"a": 1}'.encode("utf-16-be"), "application/json", 400),
    ('{"a": 1}'.encode("utf-32-le"), "application/json", 400),
    (b'{"a": "\xe9"}', "application/json", 400),
    (b'{"a": 1}', "application/json; charset=latin-1", 415),
])
def test_json_bodies_are_utf8_only(data, content_type, status):
    """json reads bytes in UTF-16, UTF-32 or after a byte order mark as the same JSON."""
    from flask import Flask

    from shared.validation import json_body

    app = Flask(__name__)
    with app.test_request_context("/", method="POST", data=data, content_type=content_type), \
            pytest.raises(ApiError) as err:
        json_body()
    assert err.value.status == status and "UTF-8" in err.value.message
    for fine in ("application/json", "application/json; charset=utf-8", "application/json; charset=UTF8"):
        with app.test_request_context("/", method="POST", data='{"a": "é"}'.encode(), content_type=fine):
            assert json_body() == {"a": "é"}
