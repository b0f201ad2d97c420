"""The catalogue's matching rules as C-FIND uses them (daemons/render/catalogue/matching.py; QIDO-RS shares them)."""

from __future__ import annotations

import io

import peewee
import pytest
from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode, encode

from daemons.render.catalogue import matching
from daemons.render.catalogue.index import InstanceHeader, index_series, make_catalogue_models
from daemons.render.catalogue.matching import QueryError, find, fuzzy_name_match, select, where
from daemons.render.models import _clear_dates_that_are_none
from shared.db import connect_database


def header(study_uid: str, modality: str, date: str, name: str) -> InstanceHeader:
    ds = Dataset()
    ds.PatientID, ds.PatientName = f"P-{study_uid}", name
    ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = study_uid, date, "101500" if date else ""
    ds.SeriesInstanceUID, ds.Modality, ds.SOPInstanceUID = f"{study_uid}.1", modality, f"{study_uid}.1.1"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SeriesNumber = int(study_uid.rsplit(".", 1)[1])
    return InstanceHeader(ds, "0" * 64, 0)


@pytest.fixture(params=["sqlite", "postgresql"])
def cat(request):
    """The catalogue on SQLite and on PostgreSQL (LIKE, GLOB, ESCAPE and || differ between them)."""
    if request.param == "sqlite":
        database = peewee.SqliteDatabase(":memory:")
    else:
        database = connect_database(request.getfixturevalue("pg_database_factory")())
    models = make_catalogue_models(database)
    database.create_tables(models.all)
    index_series(models, "r1", [header("1.2.1", "CT", "20240105", "Müller^Zoë")])
    index_series(models, "r2", [header("1.2.2", "PT", "20230615", "Doe^John")])
    index_series(models, "r3", [header("1.2.3", "CT", "20250101", "Dupont^Zoé")])
    index_series(models, "r4", [header("1.2.4", "MR", "", "ÅNGSTRÖM^ÉMILE=山田^太郎")])
    yield models
    database.close()


#: no bound on the matches (`dicom.max_find_matches` is the listener's)
UNBOUNDED = 1_000_000


def matched(cat, level: str, uid_keyword: str, keys: dict) -> list[str]:
    """The UIDs (`uid_keyword`) of what a C-FIND at `level` with `keys` matches, sorted."""
    identifier = Dataset()
    setattr(identifier, uid_keyword, "")
    for keyword, value in keys.items():
        setattr(identifier, keyword, value)
    return sorted(row[uid_keyword] for row in find(cat, level, identifier, UNBOUNDED).rows)


def study_uids(cat, **keys) -> list[str]:
    return matched(cat, "STUDY", "StudyInstanceUID", keys)


def test_a_list_of_uids_matches_each(cat):
    # pydicom gives a multi-valued UI element as a list: each UID must match (it matched none before)
    assert study_uids(cat, StudyInstanceUID=["1.2.1", "1.2.3"]) == ["1.2.1", "1.2.3"]


def test_modalities_match_whole_values(cat):
    assert study_uids(cat, ModalitiesInStudy="CT") == ["1.2.1", "1.2.3"]
    assert study_uids(cat, ModalitiesInStudy="T") == []  # not a substring match
    assert study_uids(cat, ModalitiesInStudy=["PT", "MX"]) == ["1.2.2"]
    # case and all, as Modality is matched (SQLite's LIKE had `ct` match CT there only)
    assert study_uids(cat, ModalitiesInStudy="ct") == [] and series_uids(cat, Modality="ct") == []
    assert study_uids(cat, ModalitiesInStudy="C*") == ["1.2.1", "1.2.3"]
    assert study_uids(cat, ModalitiesInStudy="?R") == ["1.2.4"]
    assert study_uids(cat, ModalitiesInStudy="C%") == study_uids(cat, ModalitiesInStudy="[C]T") == []


def test_a_modalities_wildcard_matches_within_one_modality(cat, monkeypatch):
    """Matched against the whole list (`\\CT\\MR\\`), the database's `*` and `?` also matched the `\\`
    between two modalities: `C*R` and `CT?MR` found a CT and MR study, though no modality of it
    matches them (docs/conformance.md: whole modalities)."""
    second = header("1.2.5", "MR", "20240105", "Multi^Modal").dataset
    second.SeriesInstanceUID, second.SOPInstanceUID = "1.2.5.2", "1.2.5.2.1"
    index_series(cat, "r5", [header("1.2.5", "CT", "20240105", "Multi^Modal")])
    index_series(cat, "r6", [InstanceHeader(second, "1" * 64, 0)])
    assert cat.Study.get(cat.Study.study_uid == "1.2.5").modalities == "CT\\MR"
    assert study_uids(cat, ModalitiesInStudy="C*R") == study_uids(cat, ModalitiesInStudy="CT?MR") == []
    assert study_uids(cat, ModalitiesInStudy="T*M*") == study_uids(cat, ModalitiesInStudy="C?*R") == []
    assert study_uids(cat, ModalitiesInStudy="C*") == ["1.2.1", "1.2.3", "1.2.5"]
    assert study_uids(cat, ModalitiesInStudy="M?") == study_uids(cat, ModalitiesInStudy="*R") == ["1.2.4", "1.2.5"]
    assert study_uids(cat, ModalitiesInStudy=["C*R", "P?"]) == ["1.2.2"]
    assert study_uids(cat, ModalitiesInStudy=["PT", "?R"]) == ["1.2.2", "1.2.4", "1.2.5"]
    assert study_uids(cat, ModalitiesInStudy="CT\\*") == ["1.2.1", "1.2.2", "1.2.3", "1.2.4", "1.2.5"]
    monkeypatch.setattr(matching, "MODALITY_LISTS_MAX", 1)  # CT, CT\MR: one parameter each
    with pytest.raises(QueryError) as refused:
        study_uids(cat, ModalitiesInStudy="C?")
    assert refused.value.keyword == "ModalitiesInStudy"


def test_person_names_ignore_case_and_text_wildcards_keep_it(cat):
    assert study_uids(cat, PatientName="doe^john") == ["1.2.2"]
    assert study_uids(cat, PatientName="DU*") == ["1.2.3"]
    assert study_uids(cat, PatientID="P-1.2.?") == ["1.2.1", "1.2.2", "1.2.3", "1.2.4"]
    assert study_uids(cat, PatientID="p-1.2.?") == []
    assert study_uids(cat, PatientID="P-1.2.[1]") == []  # "[" is no pattern (GLOB's would be)
    assert study_uids(cat, PatientID="P-1%") == []  # nor "%" (LIKE's)


@pytest.mark.parametrize("keys", [{"StudyDate": "2024-01-05"}, {"StudyDate": "20240230"}, {"StudyTime": "2500"},
                                  {"StudyInstanceUID": "1.2.x"}, {"StudyDate": "-"}])
def test_malformed_values_are_refused_naming_the_key(cat, keys):
    with pytest.raises(QueryError) as refused:
        study_uids(cat, **keys)
    assert refused.value.keyword == next(iter(keys))


@pytest.mark.parametrize(("keys", "named"), [
    ({"StudyDate": "20250101-20240101"}, "ends before it starts"),
    ({"PatientBirthDate": "20250102-20250101"}, "ends before it starts"),
    ({"StudyTime": "1200-1100"}, "ends before it starts"),
    ({"StudyTime": "120100-1200"}, "ends before it starts"),
    ({"StudyTime": "2300-0100"}, "ends before it starts"),
    ({"StudyDate": "2024-01-05"}, "'2024-01-05' is not a calendar date"),
    ({"StudyDate": "2024-0105"}, "'2024-0105' is not a calendar date"),
    ({"StudyTime": "10:15-11:00"}, "'10:15-11:00' is not a time"),
])
def test_a_range_that_cannot_be_one_is_refused_naming_what_was_sent(cat, keys, named):
    """A swapped range (end before start) matched nothing, answered as if no study were in it, and
    `2024-01-05` was refused as "'2024' is not a calendar date": the peer could not tell its mistake."""
    with pytest.raises(QueryError, match=named) as refused:
        study_uids(cat, **keys)
    assert refused.value.keyword == next(iter(keys))


@pytest.mark.parametrize("keys", [{"StudyDate": "20240105-20240105"}, {"StudyTime": "1200-120059"},
                                  {"StudyTime": "120030-1200"}, {"StudyTime": "1200-12"}])
def test_a_range_of_one_day_or_within_one_time_is_no_inverted_range(cat, keys):
    study_uids(cat, **keys)


def series_uids(cat, **keys) -> list[str]:
    return matched(cat, "SERIES", "SeriesInstanceUID", keys)


@pytest.mark.parametrize("value", ["2", "+2", " 2", "02"])
def test_an_integer_key_matches_as_dicom_writes_it(cat, value):
    assert series_uids(cat, SeriesNumber=value) == ["1.2.2.1"]


@pytest.mark.parametrize("value", ["\u0662", "2_0", "1" * 30, "2.0", "1234567890123"])
def test_an_integer_key_that_is_no_is_value_is_refused(cat, value):
    """Other scripts' digits and `_` were read by int() (٢ matched series 2), and 30 digits gave a
    500 (an overflow in SQLite): each is now refused, naming the key."""
    with pytest.raises(QueryError) as refused:
        series_uids(cat, SeriesNumber=value)
    assert refused.value.keyword == "SeriesNumber"


def test_fuzzy_name_matching():
    assert fuzzy_name_match("Müller^Zoë", "zoe mull")
    assert fuzzy_name_match("Doe^John^^Dr", "JOHN")
    assert not fuzzy_name_match("Doe^John", "jon")
    assert fuzzy_name_match("Doe^John", "")  # nothing asked: everything matches


@pytest.mark.parametrize("name", ["ÅNGSTRÖM^ÉMILE=山田^太郎", "ångström^émile=山田^太郎", "ÅngStröm^Émile=山田^太郎",
                                  "ÅNGSTR?M*", "ångs*", "*=山田*", "*^émil?=*"])
def test_person_names_ignore_case_in_every_script(cat, name):
    """SQLite's LOWER folds ASCII letters only, and PostgreSQL's only under a UTF-8 locale: a name
    with upper-case letters outside ASCII was not found even by its own exact value."""
    assert study_uids(cat, PatientName=name) == ["1.2.4"]


def test_a_non_ascii_name_matches_only_itself(cat):
    assert study_uids(cat, PatientName="müller^zoë") == ["1.2.1"]
    assert study_uids(cat, PatientName="MÜLLER^ZOË") == ["1.2.1"]
    assert study_uids(cat, PatientName="Muller^Zoe") == []  # accents are kept (fuzzy matching drops them)
    assert study_uids(cat, PatientName="dupont^zoë") == []
    assert study_uids(cat, PatientName="ÅNGSTRÖM^ÉMILE") == []  # the whole value, not a prefix
    assert study_uids(cat, PatientName="[Åå]NGSTRÖM*") == []  # "[" is no pattern


@pytest.mark.parametrize("stored, asked", [("Οδυσσέας^Νίκος", "ΟΔΥΣΣΈΑΣ^ΝΊΚΟΣ"), ("ΟΔΥΣΣΈΑΣ^ΝΊΚΟΣ", "οδυσσέας^νίκος"),
                                           ("Straße^Anna", "STRAẞE^ANNA"), ("STRAẞE^ANNA", "straße^anna"),
                                           ("Οδυσσέας^Νίκος", "ΟΔΥΣΣ*"), ("Straße^Anna", "strass*")])
def test_letters_whose_cases_go_one_way_still_match_their_other_case(cat, stored, asked):
    """`ς` upper-cases to `Σ`, which lower-cases to `σ`; `ẞ` lower-cases to `ß`, which upper-cases
    to `SS`: a final sigma or an eszett was matched by its own case only."""
    index_series(cat, "r6", [header("1.2.6", "CT", "20240105", stored)])
    expected = [] if asked == "strass*" else ["1.2.6"]  # `ß` is one letter, not `ss`: no accent or spelling folded
    assert study_uids(cat, PatientName=asked) == expected


@pytest.mark.parametrize("stored, asked", [("Roe^Jane^^^", "Roe^Jane"), ("Roe^Jane", "ROE^JANE^^"),
                                           ("Röe^Jane^^=", "RÖE^JANE"), ("Röe^Jane", "röe^jane^=")])
def test_trailing_empty_name_components_are_one_name_with_none(cat, stored, asked):
    """PS3.5 6.2: trailing empty components may be sent or left out; a stored `Doe^John^^^` was not
    found by `Doe^John` (nor the other way round)."""
    index_series(cat, "r5", [header("1.2.5", "CT", "20240105", stored)])
    assert study_uids(cat, PatientName=asked) == ["1.2.5"]
    assert study_uids(cat, PatientName=asked.rstrip("^=") + "*") == ["1.2.5"]
    assert study_uids(cat, PatientName="Roe^Jan") == []
    # a name of delimiters alone is a zero-length one: universal matching (PS3.4 C.2.2.2.3)
    assert study_uids(cat, PatientName="^^^^") == study_uids(cat) == ["1.2.1", "1.2.2", "1.2.3", "1.2.4", "1.2.5"]


@pytest.mark.parametrize("keys", [{"StudyDate": "-20250101"}, {"StudyDate": "19000101-"}, {"StudyTime": "-2359"},
                                  {"StudyTime": "0000-"}, {"PatientBirthDate": "-20990101"}])
def test_a_range_never_matches_an_entity_without_a_value(cat, keys):
    """"" sorts before every date and time: an open range matched the study with none (PS3.4
    C.2.2.2.5: a range matches values in it; only universal matching returns empty ones)."""
    assert "1.2.4" not in study_uids(cat, **keys)
    assert study_uids(cat, **{next(iter(keys)): ""}) == ["1.2.1", "1.2.2", "1.2.3", "1.2.4"]


TIMES = ("0959", "1015", "101500", "101500.000", "101530", "1016")


@pytest.mark.parametrize(("asked", "expected"), [
    ("101500.000000", {"1015", "101500", "101500.000"}),  # the same time, however it is written
    ("101500", {"1015", "101500", "101500.000"}),
    ("1015", {"1015", "101500", "101500.000", "101530"}),  # and every time it begins
    ("101500-101600", {"1015", "101500", "101500.000", "101530", "1016"}),
    ("101500.0-", {"1015", "101500", "101500.000", "101530", "1016"}),
    ("101501-", {"101530", "1016"}),
    ("-101459", {"0959"}),
    ("235960", set()),  # a leap second (PS3.5 6.2: SS is 00-60) is a time
])
def test_a_time_matches_the_same_time_however_it_is_written(cat, asked, expected):
    """PS3.5 6.2 lets a TM leave off trailing components, so `1015` is 10:15:00. Compared as text,
    a study at `1015` was outside the range `101500-101600` and did not match `101500.000000`."""
    for number, time in enumerate(TIMES):
        ds = Dataset()
        ds.PatientID, ds.PatientName = "P-times", "Times^Tom"
        ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = f"1.3.{number}", "20240105", time
        ds.SeriesInstanceUID, ds.Modality, ds.SOPInstanceUID = f"1.3.{number}.1", "CT", f"1.3.{number}.1.1"
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        index_series(cat, f"t{number}", [InstanceHeader(ds, "0" * 64, 0)])
    found = {TIMES[int(uid.rsplit(".", 1)[1])] for uid in study_uids(cat, StudyTime=asked) if uid.startswith("1.3.")}
    assert found == expected


@pytest.mark.parametrize(("date", "time"), [("2024-01-05", "10:15:00"), ("20240230", "2500"), ("2024010", "1015.5")])
def test_a_stored_date_or_time_that_is_none_is_not_indexed(cat, date, time):
    """A file with StudyDate `2024-01-05` was indexed as `2024-01-` (cut to the column): searches
    and answers showed a value that is neither the file's nor a date. Not indexed now, as an IS
    value that is no number; the file itself is kept as it came."""
    ds = Dataset()
    ds.PatientID, ds.PatientName, ds.PatientBirthDate = "P-odd", "Odd^Otto", date
    ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = "1.4.1", date, time
    ds.SeriesInstanceUID, ds.Modality, ds.SOPInstanceUID = "1.4.1.1", "CT", "1.4.1.1.1"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    index_series(cat, "odd", [InstanceHeader(ds, "0" * 64, 0)])
    [row] = find(cat, "STUDY", Dataset.from_json({"0020000D": {"vr": "UI", "Value": ["1.4.1"]},
                                                    "00080020": {"vr": "DA"}, "00080030": {"vr": "TM"},
                                                    "00100030": {"vr": "DA"}}), UNBOUNDED).rows
    assert (row["StudyDate"], row["StudyTime"], row["PatientBirthDate"]) == ("", "", "")
    assert "1.4.1" not in study_uids(cat, StudyDate="19000101-")


def test_schema_7_clears_the_dates_and_times_indexed_before_that_are_none(cat):
    """A catalogue of schema 6 kept `2024-01-` (cut from `2024-01-05`) and `10:15:00`; upgraded, they
    are cleared as today's index leaves them out, and every valid value stays."""
    database = cat.Study._meta.database
    index_series(cat, "odd", [header("1.4.2", "CT", "20240105", "Odd^Otto")])
    cat.Study.update(study_date="2024-01-", study_time="10:15:00").where(cat.Study.study_uid == "1.4.2").execute()
    cat.Patient.update(birth_date="1970-01-").where(cat.Patient.patient_id == "P-1.4.2").execute()
    cat.Study.update(study_time="101500.5").where(cat.Study.study_uid == "1.2.1").execute()
    _clear_dates_that_are_none(database)
    [odd] = find(cat, "STUDY", Dataset.from_json({"0020000D": {"vr": "UI", "Value": ["1.4.2"]},
                                                    "00080020": {"vr": "DA"}, "00080030": {"vr": "TM"},
                                                    "00100030": {"vr": "DA"}}), UNBOUNDED).rows
    assert (odd["StudyDate"], odd["StudyTime"], odd["PatientBirthDate"]) == ("", "", "")
    kept = {row.study_uid: (row.study_date, row.study_time) for row in cat.Study.select()}
    assert kept["1.2.1"] == ("20240105", "101500.5") and kept["1.2.2"] == ("20230615", "101500")
    assert kept["1.2.4"] == ("", "")


def test_a_query_matching_more_than_the_node_answers_at_once_is_refused_as_too_large(cat):
    """An IMAGE-level C-FIND with no key matched every instance of the archive, each row held in memory
    before the first answer went out: past `dicom.max_find_matches` it is Out of Resources (0xA700,
    `QueryTooLarge`), read one row past the bound; the bound itself is answered whole."""
    from daemons.render.catalogue.matching import QueryTooLarge

    everything = Dataset()
    everything.SOPInstanceUID = ""
    count = len(find(cat, "IMAGE", everything, UNBOUNDED).rows)
    assert count >= 4
    assert len(find(cat, "IMAGE", everything, count).rows) == count
    with pytest.raises(QueryTooLarge, match=f"more than {count - 1:,} entities at the IMAGE level"):
        find(cat, "IMAGE", everything, count - 1)


def test_an_answer_with_text_beyond_ascii_names_its_character_set(cat):
    """A C-FIND answer without Specific Character Set is read in the default repertoire: its
    encoder wrote `Ü` in Latin-1 and `山田` as `??`."""
    identifier = Dataset()
    identifier.StudyInstanceUID, identifier.PatientName = "", ""
    found = find(cat, "STUDY", identifier, UNBOUNDED)
    answers = {row["StudyInstanceUID"]: found.dataset(row) for row in found.rows}
    assert answers["1.2.4"].SpecificCharacterSet == "ISO_IR 192"
    assert answers["1.2.1"].SpecificCharacterSet == "ISO_IR 192"
    assert "SpecificCharacterSet" not in answers["1.2.2"]
    sent = decode(io.BytesIO(encode(answers["1.2.4"], False, True)), False, True)
    assert str(sent.PatientName) == "ÅNGSTRÖM^ÉMILE=山田^太郎"


def test_fuzzy_matching_without_a_word_matches_all_and_a_huge_match_is_refused(cat, monkeypatch):
    """Fuzzy matching selects rows by the names that match, one parameter each: more than a
    database takes (SQLite 32,766 or 250,000, PostgreSQL 65,535) was a 500."""
    def fuzzy(value: str) -> list[str]:
        query = where(select(cat, "STUDY", cat.Study.study_uid), cat, [("PatientName", value)], fuzzy=True)
        return sorted(row[0] for row in query.tuples())

    assert fuzzy("^") == fuzzy("") == ["1.2.1", "1.2.2", "1.2.3", "1.2.4"]
    assert fuzzy("zoe") == ["1.2.1", "1.2.3"]
    monkeypatch.setattr(matching, "FUZZY_NAMES_MAX", 1)
    with pytest.raises(QueryError) as refused:
        fuzzy("zoe")
    assert refused.value.keyword == "PatientName"


def test_a_retrieval_holds_only_what_its_sub_operations_need(cat):
    """A C-GET or C-MOVE holds every instance row it retrieves until its last sub-operation: a peewee
    model object each (with its model's state), 107 MiB for 100,000 instances (a UID list of 50,000
    studies retrieves the archive), for the whole of a transfer the peer paces. Now the five columns
    the sub-operations and their audit read, as tuples: under half."""
    import tracemalloc

    headers = []
    for number in range(1, 5001):
        ds = header("1.2.9", "CT", "20240105", "Big^Study").dataset
        ds.SOPInstanceUID, ds.InstanceNumber = f"1.2.826.0.1.3680043.8.498.{number}", number
        headers.append(InstanceHeader(ds, f"{number:064x}", number))
    index_series(cat, "big", headers)
    identifier = Dataset()
    identifier.QueryRetrieveLevel, identifier.StudyInstanceUID = "STUDY", "1.2.9"
    tracemalloc.start()
    try:
        rows = matching.retrieve(cat, "STUDY", identifier)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(rows) == 5000 and [row.blob for row in rows[:3]] == [1, 2, 3]  # in instance order
    first = rows[0]
    assert (first.series_id, first.sop_instance_uid, first.sop_class_uid, first.sha256) == (
        "big", "1.2.826.0.1.3680043.8.498.1", "1.2.840.10008.5.1.4.1.1.2", f"{1:064x}")
    assert held / len(rows) < 600, f"{held / len(rows):.0f} bytes held per instance"  # was 1,092


def test_a_value_longer_than_its_column_matches_nothing_and_is_no_pattern(cat, monkeypatch):
    """A person name beyond ASCII is matched as a pattern (`_person_name`): one of 10,000 letters made
    SQLite refuse the query ("pattern too complex": 0xC000 for the peer, the node's error in its log),
    one of 70,000 kept PostgreSQL compiling its regular expression past the peer's 30 s. Longer than
    any indexed value (the column's length), it matches nothing and no pattern is made of it."""
    made: list[str] = []
    monkeypatch.setattr(matching, "_person_name", lambda field, value: made.append(value) or peewee.SQL("1 = 1"))
    for keyword, value in (("PatientName", "ü" * 10_000), ("ReferringPhysicianName", "σ" * 70_000),
                           ("PatientName", "ü" * 201), ("StudyDescription", "é" * 65)):
        assert study_uids(cat, **{keyword: value}) == [], keyword
    assert made == []
    monkeypatch.undo()
    assert study_uids(cat, PatientName="ü" * 10_000) == study_uids(cat, PatientName="x" * 70_000) == []
    assert study_uids(cat, PatientName="müller^zoë") == ["1.2.1"]  # a name within the column still matches
    assert study_uids(cat, PatientName="*" + "ü?" * 500) == []  # wildcards within WILDCARD_MAX: matched


def test_a_key_holding_nul_is_refused(cat):
    """PostgreSQL refused the query (a DataError: the node's failure); SQLite's GLOB read `Doe\\0*` up
    to the NUL: `Doe`."""
    for keyword in ("PatientName", "PatientID", "StudyDescription", "ModalitiesInStudy"):
        with pytest.raises(QueryError, match="NUL") as refused:
            study_uids(cat, **{keyword: "Doe\x00*"})
        assert refused.value.keyword == keyword
