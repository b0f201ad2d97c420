"""QIDO-RS on a render node (issue 12): matching, includefield, paging, the listing rule, bad input.

The many matching cases run in-process (a real node app with its store and SQLite catalogue, data
stored by upload, tests/render/conftest.py `make_node`); `test_dicomweb_client_*` run
dicomweb-client against the real daemons (gunicorn + TLS) of the session deployment.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pydicom
import pytest
import requests
from dicomweb_client import DICOMwebClient
from pydicom.uid import MRImageStorage, generate_uid

from daemons.demo import upload_record
from shared.errors import EMPTY_SEGMENT_MESSAGE
from tests.render.conftest import NODE_AUDIENCE, build_node, close_node
from tests.render.synthetic import dataset, to_bytes

ROOT = "/dicomweb"
PATIENT_ID, STUDY_UID, SERIES_UID, SOP_UID = "00100020", "0020000D", "0020000E", "00080018"


def series_files(count: int, *, patient: dict, study: dict, series: dict) -> list[tuple[str, bytes]]:
    """`count` synthetic instances of one series with the patient, study and series attributes given."""
    uid = series.get("SeriesInstanceUID") or generate_uid()
    files = []
    for number in range(1, count + 1):
        ds = dataset(series=uid, position=float(number))
        for keyword, value in {**patient, **study, **series}.items():
            setattr(ds, keyword, value)
        ds.InstanceNumber = number
        if ds.Modality == "MR":
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        files.append((f"{uid}-{number}.dcm", to_bytes(ds)))
    return files


ZOE = {"PatientID": "PAT-001", "PatientName": "Müller^Zoë", "PatientBirthDate": "19610412", "PatientSex": "F"}
JOHN = {"PatientID": "PAT-002", "PatientName": "Doe^John^^Dr", "PatientBirthDate": "19700101", "PatientSex": "M"}
STUDY_A = {"StudyInstanceUID": "1.2.826.0.1.3680043.8.498.101", "StudyDate": "20240105", "StudyTime": "101500",
           "AccessionNumber": "ACC-A", "StudyID": "A1", "StudyDescription": "CT CHEST",
           "ReferringPhysicianName": "House^Gregory"}
STUDY_B = {"StudyInstanceUID": "1.2.826.0.1.3680043.8.498.102", "StudyDate": "20230615", "StudyTime": "083000",
           "AccessionNumber": "ACC-B", "StudyID": "B1", "StudyDescription": "CT ABDOMEN",
           "ReferringPhysicianName": "Cuddy^Lisa"}
STUDY_C = {"StudyInstanceUID": "1.2.826.0.1.3680043.8.498.103", "StudyDate": "20250101", "StudyTime": "235959",
           "AccessionNumber": "ACC-C", "StudyID": "C1", "StudyDescription": "HEAD",
           "ReferringPhysicianName": "Wilson^James"}
SERIES_A_CT = {"SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.1011", "Modality": "CT", "SeriesNumber": 2,
               "SeriesDescription": "Lung 1mm"}
SERIES_A_MR = {"SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.1012", "Modality": "MR", "SeriesNumber": 5,
               "SeriesDescription": "T1 axial"}
SERIES_B_CT = {"SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.1021", "Modality": "CT", "SeriesNumber": 1,
               "SeriesDescription": "Abdomen venous"}
SERIES_C_MR = {"SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.1031", "Modality": "MR", "SeriesNumber": 3,
               "SeriesDescription": "FLAIR"}


@pytest.fixture(scope="module")
def archive(tmp_path_factory, token_keys):
    """A node holding three studies of two patients (four series, 11 instances), stored by upload;
    shared by the module's tests, which only read it."""
    node = build_node(tmp_path_factory.mktemp("qido-node"), token_keys)
    for patient, study, series, count in [(ZOE, STUDY_A, SERIES_A_CT, 4), (ZOE, STUDY_A, SERIES_A_MR, 2),
                                          (JOHN, STUDY_B, SERIES_B_CT, 3), (JOHN, STUDY_C, SERIES_C_MR, 2)]:
        reply = node.upload(series_files(count, patient=patient, study=study, series=series),
                            headers=node.headers("physician"))
        assert reply.status_code == 201, reply.get_json()
    yield node
    close_node(node)


def qido(harness, path: str, role: str = "sysadmin", institution_id: str | None = None, **kwargs):
    return harness.client.get(f"{ROOT}{path}", headers=harness.headers(role, institution_id), **kwargs)


def values(answers: list[dict], tag: str) -> list:
    return [a[tag]["Value"][0] if "Value" in a[tag] else None for a in answers]


def uids_of(harness, path: str, tag: str = STUDY_UID, **kwargs) -> list[str]:
    reply = qido(harness, path, **kwargs)
    if reply.status_code == 204:
        return []
    assert reply.status_code == 200, reply.get_json()
    return values(reply.get_json(), tag)


def test_study_search_answers_the_required_attributes_newest_first(archive):
    reply = qido(archive, "/studies")
    assert reply.status_code == 200 and reply.content_type == "application/dicom+json"
    studies = reply.get_json()
    assert values(studies, STUDY_UID) == [STUDY_C["StudyInstanceUID"], STUDY_A["StudyInstanceUID"],
                                          STUDY_B["StudyInstanceUID"]]
    study_a = studies[1]
    for tag in ("00080020", "00080030", "00080050", "00080056", "00080061", "00080090", "00081190", "00100010",
                "00100020", "00100030", "00100040", "0020000D", "00200010", "00201206", "00201208"):
        assert tag in study_a, tag
    assert study_a["00080061"] == {"vr": "CS", "Value": ["CT", "MR"]}
    assert study_a["00201206"]["Value"] == [2] and study_a["00201208"]["Value"] == [6]
    assert study_a["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Müller^Zoë"}]}
    assert study_a["00080005"]["Value"] == ["ISO_IR 192"]  # non-ASCII name: UTF-8 said so
    assert study_a["00081190"]["Value"] == [f"{NODE_AUDIENCE}{ROOT}/studies/{STUDY_A['StudyInstanceUID']}"]
    assert list(study_a) == sorted(study_a)  # attributes in tag order


def test_matching_forms(archive):
    a, b, c = (s["StudyInstanceUID"] for s in (STUDY_A, STUDY_B, STUDY_C))
    assert uids_of(archive, "/studies?PatientID=PAT-002") == [c, b]  # single value
    assert uids_of(archive, "/studies?00100020=PAT-001") == [a]  # by tag
    assert uids_of(archive, "/studies?AccessionNumber=ACC-?") == [c, a, b]  # ? wildcard
    assert uids_of(archive, "/studies?StudyDescription=CT*") == [a, b]  # * wildcard
    assert uids_of(archive, "/studies?StudyDescription=ct*") == []  # text wildcards are case-sensitive
    assert uids_of(archive, "/studies?PatientName=doe*") == [c, b]  # names are not
    assert uids_of(archive, "/studies?PatientName=DOE^JOHN^^DR") == [c, b]
    assert uids_of(archive, f"/studies?StudyInstanceUID={a},{c}") == [c, a]  # UID list
    assert uids_of(archive, "/studies?StudyDate=20240101-20241231") == [a]  # date range
    assert uids_of(archive, "/studies?StudyDate=-20231231") == [b]
    assert uids_of(archive, "/studies?StudyDate=20240105") == [a]
    assert uids_of(archive, "/studies?StudyDate=20240101-&StudyTime=2300-") == [c]  # time range
    assert uids_of(archive, "/studies?StudyTime=1015") == [a]  # a time matches what begins with it
    assert uids_of(archive, "/studies?ModalitiesInStudy=MR") == [c, a]
    assert uids_of(archive, "/studies?ModalitiesInStudy=C") == []  # whole modalities only
    assert uids_of(archive, "/studies?ReferringPhysicianName=house*") == [a]
    assert uids_of(archive, "/studies?PatientBirthDate=19610412&PatientSex=F") == [a]
    assert uids_of(archive, "/studies?PatientName=*") == [c, a, b]  # "*" is universal matching


def test_fuzzy_matching_ignores_case_accents_and_word_order(archive):
    a, b, c = (s["StudyInstanceUID"] for s in (STUDY_A, STUDY_B, STUDY_C))
    assert uids_of(archive, "/studies?PatientName=muller") == []  # literal matching by default
    assert uids_of(archive, "/studies?PatientName=muller&fuzzymatching=true") == [a]
    assert uids_of(archive, "/studies?PatientName=ZOE%20MULL&fuzzymatching=true") == [a]
    assert uids_of(archive, "/studies?PatientName=joh%20do&fuzzymatching=true") == [c, b]
    assert uids_of(archive, "/studies?ReferringPhysicianName=greg&fuzzymatching=true") == [a]
    assert uids_of(archive, "/studies?PatientName=jon&fuzzymatching=true") == []


def test_series_and_instance_resources(archive):
    a = STUDY_A["StudyInstanceUID"]
    reply = qido(archive, f"/studies/{a}/series")
    series = reply.get_json()
    assert values(series, SERIES_UID) == [SERIES_A_CT["SeriesInstanceUID"], SERIES_A_MR["SeriesInstanceUID"]]
    assert values(series, "00200011") == [2, 5] and values(series, "00201209") == [4, 2]
    assert values(series, STUDY_UID) == [a, a] and "00100010" not in series[0]  # no study attributes here
    assert series[0]["00081190"]["Value"][0].endswith(f"/studies/{a}/series/{SERIES_A_CT['SeriesInstanceUID']}")
    # all series: study attributes too, and matching on study and series keys
    everything = qido(archive, "/series?Modality=MR").get_json()
    assert values(everything, SERIES_UID) == [SERIES_C_MR["SeriesInstanceUID"], SERIES_A_MR["SeriesInstanceUID"]]
    assert values(everything, "00100020") == ["PAT-002", "PAT-001"]
    assert uids_of(archive, "/series?StudyDate=20230615&SeriesNumber=1", SERIES_UID) == [
        SERIES_B_CT["SeriesInstanceUID"]]
    # a series' instances, InstanceNumber order, with Rows/Columns/BitsAllocated/NumberOfFrames
    path = f"/studies/{a}/series/{SERIES_A_CT['SeriesInstanceUID']}/instances"
    instances = qido(archive, path).get_json()
    assert values(instances, "00200013") == [1, 2, 3, 4]
    first = instances[0]
    assert first["00280010"]["Value"] == [8] and first["00280011"]["Value"] == [8]
    assert first["00280100"]["Value"] == [16] and first["00280008"]["Value"] == [1]
    assert first["00080016"]["Value"] == [pydicom.uid.CTImageStorage]
    assert first["00081190"]["Value"][0].endswith(f"{path}/{first[SOP_UID]['Value'][0]}")
    assert uids_of(archive, f"{path}?InstanceNumber=3", "00200013") == [3]
    # a study's instances carry series attributes; all instances, study ones too
    study_instances = qido(archive, f"/studies/{a}/instances?Modality=MR").get_json()
    assert len(study_instances) == 2 and values(study_instances, "00080060") == ["MR", "MR"]
    assert len(uids_of(archive, "/instances?PatientID=PAT-002", SOP_UID)) == 5
    assert values(qido(archive, "/instances?PatientID=PAT-002&limit=1").get_json(), "00100020") == ["PAT-002"]


def test_includefield(archive):
    a = STUDY_A["StudyInstanceUID"]
    plain = qido(archive, f"/studies/{a}/series").get_json()[0]
    assert "00100020" not in plain and "00080020" not in plain
    with_study = qido(archive, f"/studies/{a}/series?includefield=PatientID,00080020").get_json()[0]
    assert with_study["00100020"]["Value"] == ["PAT-001"] and with_study["00080020"]["Value"] == ["20240105"]
    repeated = qido(archive, f"/studies/{a}/series?includefield=PatientID&includefield=StudyDate").get_json()[0]
    assert "00100020" in repeated and "00080020" in repeated
    everything = qido(archive, f"/studies/{a}/series?includefield=all").get_json()[0]
    assert "00100021" in everything and "00081030" in everything  # IssuerOfPatientID, StudyDescription
    lower = qido(archive, "/studies?includefield=SOPInstanceUID,Modality").get_json()[0]
    assert SOP_UID not in lower and "00080060" not in lower  # lower levels' attributes are not returned
    unsupported = qido(archive, "/studies?includefield=BodyPartExamined")
    assert unsupported.status_code == 200 and "BodyPartExamined" in unsupported.headers["Warning"]
    assert qido(archive, "/studies?includefield=all&includefield=PatientID").status_code == 400
    assert qido(archive, "/studies?includefield=PatientID&includefield=all").status_code == 400
    # a matching key is no includefield value: dicomweb-client sends the keys first (was a 400)
    for query in ("PatientID=PAT-001&includefield=all", "includefield=all&PatientID=PAT-001"):
        found = qido(archive, f"/studies?{query}")
        assert found.status_code == 200 and "00081030" in found.get_json()[0], query


def test_limit_offset_warning_and_no_content(archive):
    c, a, b = (s["StudyInstanceUID"] for s in (STUDY_C, STUDY_A, STUDY_B))
    first = qido(archive, "/studies?limit=2")
    assert values(first.get_json(), STUDY_UID) == [c, a]
    assert first.headers["Warning"] == (f"299 {NODE_AUDIENCE}{ROOT}: There are 1 additional results that can "
                                        "be requested")
    last = qido(archive, "/studies?limit=2&offset=2")
    assert values(last.get_json(), STUDY_UID) == [b] and "Warning" not in last.headers
    beyond = qido(archive, "/studies?offset=3")
    assert beyond.status_code == 204 and beyond.data == b""
    assert qido(archive, "/studies?offset=123456789012345678").status_code == 204
    capped = qido(archive, "/studies?limit=100000")  # above the node's 1000: capped, not refused
    assert capped.status_code == 200 and len(capped.get_json()) == 3
    assert qido(archive, "/studies?PatientID=nobody").status_code == 204


def test_unsupported_parameters_are_ignored_with_a_warning(archive):
    reply = qido(archive, "/studies?PatientID=PAT-001&BodyPartExamined=CHEST&00091001=x&emptyvaluematching=true")
    assert values(reply.get_json(), STUDY_UID) == [STUDY_A["StudyInstanceUID"]]
    warnings = reply.headers.getlist("Warning")
    assert any("BodyPartExamined" in w and "00091001" in w for w in warnings)
    assert any("emptyvaluematching parameter is not supported" in w for w in warnings)


@pytest.mark.parametrize(("query", "named"), [
    ("PatientNmae=Doe", "PatientNmae"),  # not a DICOM attribute: a misspelt key is not silently ignored
    ("StudyDate=2024-01-05", "StudyDate"),  # bad dates
    ("StudyDate=20241305", "StudyDate"),
    ("StudyTime=25", "StudyTime"),
    ("limit=-1", "limit"),
    ("limit=ten", "limit"),
    ("limit=5%0A", "limit"),  # a trailing newline: no integer
    ("00100020%0A=PAT-001", "00100020"),  # nor a tag
    ("offset=1.5", "offset"),
    ("fuzzymatching=yes", "fuzzymatching"),
    ("StudyInstanceUID=1.2.abc", "StudyInstanceUID"),
    ("SeriesNumber=2", "SeriesNumber"),  # a series key on /studies
    ("Modality=CT", "Modality"),
    ("PatientID=a&PatientID=b", "PatientID"),
    ("limit=5&limit=6", "parameter limit is given 2 times"),  # the image parameters' rule (single_value)
    ("PatientID=a%00b", "PatientID"),
    ("PatientName=" + "x" * 1025, "PatientName"),
    ("offset=1234567890123456789", "offset"),  # beyond what SQL's OFFSET takes
    ("includefield=all,PatientID", "includefield"),
])
def test_bad_query_keys_and_values_get_400_naming_the_key(archive, query: str, named: str):
    reply = qido(archive, f"/studies?{query}")
    assert reply.status_code == 400, reply.data
    error = reply.get_json()["error"]
    assert error["code"] == "validation_error" and error["message"]
    assert named in error["message"]


def test_bad_values_at_series_and_instance_levels(archive):
    a = STUDY_A["StudyInstanceUID"]
    assert qido(archive, f"/studies/{a}/series?SeriesNumber=two").status_code == 400
    assert qido(archive, f"/studies/{a}/instances?InstanceNumber=x").status_code == 400
    assert qido(archive, f"/studies/{a}/series?StudyDate=20240105").status_code == 400  # study key, study fixed
    assert qido(archive, "/studies/1.2.3.999/series").status_code == 404
    assert qido(archive, f"/studies/{a}/series/1.2.3.999/instances").status_code == 404


def test_a_path_with_an_empty_segment_is_a_404_that_says_so(archive):
    """`/dicomweb//studies` (a base URL ending in `/` joined to `/studies`) answered a bare "not
    found", with or without a token, as for a path that names nothing."""
    a = STUDY_A["StudyInstanceUID"]
    for path in ("//studies", f"/studies/{a}//series", "/studies//"):
        for reply in (qido(archive, path), archive.client.get(f"{ROOT}{path}")):
            assert reply.status_code == 404, path
            error = reply.get_json()["error"]
            assert error["code"] == "not_found" and error["message"] == EMPTY_SEGMENT_MESSAGE, path
    assert qido(archive, "/nothing").get_json()["error"]["message"] != EMPTY_SEGMENT_MESSAGE


def test_only_json_answers(archive):
    xml = archive.client.get(f"{ROOT}/studies", headers={
        **archive.headers("sysadmin"), "Accept": 'multipart/related; type="application/dicom+xml"'})
    assert xml.status_code == 406 and xml.get_json()["error"]["code"] == "not_acceptable"
    plain = archive.client.get(f"{ROOT}/studies", headers={**archive.headers("sysadmin"), "Accept": "application/json"})
    assert plain.status_code == 200 and plain.content_type == "application/json"


def test_the_listing_rule(archive):
    a = STUDY_A["StudyInstanceUID"]
    # a physician must name a patient or a study
    refused = qido(archive, "/studies", role="physician")
    assert refused.status_code == 400 and "PatientID" in refused.get_json()["error"]["message"]
    assert qido(archive, "/studies?PatientID=PAT-00*", role="physician").status_code == 400  # a pattern names nobody
    assert qido(archive, "/series?Modality=CT", role="physician").status_code == 400
    assert uids_of(archive, "/studies?PatientID=PAT-001", role="physician") == [a]
    assert uids_of(archive, f"/studies?StudyInstanceUID={a}", role="physician") == [a]
    assert len(uids_of(archive, f"/studies/{a}/series", SERIES_UID, role="physician")) == 2
    # a physician of another institution may read a named study, not search by patient
    other = "4a0e5f5e-0000-4000-8000-000000000001"
    assert uids_of(archive, f"/studies?StudyInstanceUID={a}", role="physician", institution_id=other) == [a]
    assert qido(archive, "/studies?PatientID=PAT-001", role="physician", institution_id=other).status_code == 403
    # an administrator of the node's institution lists everything; one of another institution does not
    assert len(uids_of(archive, "/studies", role="instadmin")) == 3
    assert qido(archive, "/studies", role="instadmin", institution_id=other).status_code == 403
    assert len(uids_of(archive, "/studies", role="sysadmin", institution_id=other)) == 3
    assert qido(archive, "/studies", role="physician").status_code == 400
    assert archive.client.get(f"{ROOT}/studies").status_code == 401


def test_searches_are_audited(archive):
    models = archive.app.extensions["sivr_node"].models
    before = models.AuditEntry.select().where(models.AuditEntry.action == "dicomweb.search").count()
    qido(archive, "/studies?PatientID=PAT-002", role="physician")
    qido(archive, f"/studies/{STUDY_A['StudyInstanceUID']}/series", role="physician")
    qido(archive, "/studies?PatientID=nobody", role="physician")
    entries = list(models.AuditEntry.select().where(models.AuditEntry.action == "dicomweb.search")
                   .order_by(models.AuditEntry.at))[before:]
    assert [(e.object_type, e.object_id) for e in entries[:2]] == [
        ("study", STUDY_C["StudyInstanceUID"]), ("study", STUDY_B["StudyInstanceUID"])]
    assert "PatientID=PAT-002" in entries[0].detail and "results=2" in entries[0].detail
    series_ids = {row.id for row in models.catalogue.Series.select()
                  .where(models.catalogue.Series.series_uid.in_([SERIES_A_CT["SeriesInstanceUID"],
                                                                 SERIES_A_MR["SeriesInstanceUID"]]))}
    assert {e.object_id for e in entries[2:4]} == series_ids and entries[2].object_type == "record"
    assert entries[4].object_id is None and "results=0" in entries[4].detail


# --- dicomweb-client against the real daemons (gunicorn + TLS on loopback) -------------------------------

CT = Path(__file__).resolve().parents[2] / "demo_data" / "ct-chest-100"


def dicomweb_client(deployment, role: str, node_url: str) -> DICOMwebClient:
    """dicomweb-client on a node's root, with the role's logged-in session: the deployment's CA,
    and a bearer token exchanged for that node, renewed as it expires (as tests/dicomweb/conftest.py)."""
    return DICOMwebClient(url=f"{node_url}{ROOT}", session=deployment.client(role).session)


@pytest.fixture(scope="module")
def stored(deployment, tmp_path_factory) -> dict:
    """The demo CT and a synthetic two-study patient, stored by upload on institution 1's node."""
    doctor = deployment.client("physician")
    node_url = deployment.layout.first("render").url
    ct = upload_record(doctor, node_url, sorted(CT.glob("*.dcm")))
    folder = tmp_path_factory.mktemp("qido-synthetic")
    patient = {"PatientID": f"QIDO-{uuid.uuid4().hex[:10]}", "PatientName": "Núñez^José", "PatientSex": "M",
               "PatientBirthDate": "19800229"}
    studies = []
    for date, modality in (("20220301", "CT"), ("20240722", "MR")):
        study = {"StudyInstanceUID": generate_uid(), "StudyDate": date, "StudyTime": "120000",
                 "AccessionNumber": uuid.uuid4().hex[:12], "StudyDescription": f"{modality} study"}
        files = []
        for name, data in series_files(3, patient=patient, study=study,
                                       series={"SeriesInstanceUID": generate_uid(), "Modality": modality,
                                               "SeriesNumber": 1}):
            (folder / name).write_bytes(data)
            files.append(folder / name)
        upload_record(doctor, node_url, files)
        studies.append(study)
    first = pydicom.dcmread(sorted(CT.glob("*.dcm"))[0], stop_before_pixels=True)
    return {"node_url": node_url, "ct": ct, "ct_study": str(first.StudyInstanceUID), "ct_patient": str(first.PatientID),
            "ct_series": str(first.SeriesInstanceUID), "patient": patient, "studies": studies}


def test_dicomweb_client_searches_studies_series_and_instances(deployment, stored):
    web = dicomweb_client(deployment, "physician", stored["node_url"])
    # other modules store copies of the demo CT (new UIDs, same patient) in the session's deployment
    found = web.search_for_studies(search_filters={"PatientID": stored["ct_patient"]})
    assert {s[PATIENT_ID]["Value"][0] for s in found} == {stored["ct_patient"]}
    (study,) = [s for s in found if s[STUDY_UID]["Value"] == [stored["ct_study"]]]
    assert study["00080061"]["Value"] == ["CT"] and study["00201208"]["Value"][0] >= 100
    assert study["00081190"]["Value"] == [f"{stored['node_url']}{ROOT}/studies/{stored['ct_study']}"]
    # the study may hold a series another module stored in it too (the session's deployment is shared)
    of_study = web.search_for_series(stored["ct_study"])
    (series,) = [s for s in of_study if s[SERIES_UID]["Value"] == [stored["ct_series"]]]
    assert series["00080060"]["Value"] == ["CT"]
    page = web.search_for_instances(stored["ct_study"], stored["ct_series"], limit=5, offset=10)
    numbers = [i["00200013"]["Value"][0] for i in page]
    assert len(page) == 5 and numbers == sorted(numbers)
    assert page[0]["00280010"]["Value"] == [stored["ct"]["rows"]]
    everything = web.search_for_instances(stored["ct_study"], stored["ct_series"], get_remaining=True, limit=40)
    assert len({i[SOP_UID]["Value"][0] for i in everything}) == series["00201209"]["Value"][0] >= 100


def test_dicomweb_client_matching_includefield_and_fuzzy_names(deployment, stored):
    web = dicomweb_client(deployment, "physician", stored["node_url"])
    patient_id = stored["patient"]["PatientID"]
    mr, ct = reversed(stored["studies"])
    newest_first = web.search_for_studies(search_filters={"PatientID": patient_id})
    assert [s[STUDY_UID]["Value"][0] for s in newest_first] == [mr["StudyInstanceUID"], ct["StudyInstanceUID"]]
    in_2024 = web.search_for_studies(search_filters={"PatientID": patient_id, "StudyDate": "20240101-20241231"})
    assert [s[STUDY_UID]["Value"][0] for s in in_2024] == [mr["StudyInstanceUID"]]
    by_uids = web.search_for_studies(search_filters={"StudyInstanceUID": [ct["StudyInstanceUID"],
                                                                          mr["StudyInstanceUID"]]})
    assert len(by_uids) == 2
    wildcard = web.search_for_studies(search_filters={"PatientID": patient_id, "ModalitiesInStudy": "MR",
                                                      "StudyDescription": "MR*"})
    assert len(wildcard) == 1
    assert web.search_for_studies(search_filters={"PatientID": patient_id, "PatientName": "nunez"}) == []
    fuzzy = web.search_for_studies(fuzzymatching=True,
                                   search_filters={"PatientID": patient_id, "PatientName": "nunez jo"})
    assert len(fuzzy) == 2
    series = web.search_for_series(search_filters={"StudyInstanceUID": mr["StudyInstanceUID"]},
                                   fields=["PatientName", "AccessionNumber"])
    assert series[0]["00080050"]["Value"] == [mr["AccessionNumber"]]
    assert series[0]["00100010"]["Value"] == [{"Alphabetic": "Núñez^José"}]
    paged = web.search_for_studies(search_filters={"PatientID": patient_id}, limit=1, get_remaining=True)
    assert len(paged) == 2


def test_dicomweb_client_listing_rule_and_bad_keys(deployment, stored):
    doctor = dicomweb_client(deployment, "physician", stored["node_url"])
    with pytest.raises(requests.HTTPError) as refused:
        doctor.search_for_studies()
    assert refused.value.response.status_code == 400
    assert "PatientID" in refused.value.response.json()["error"]["message"]
    admin = dicomweb_client(deployment, "admin", stored["node_url"])
    listed = {s[STUDY_UID]["Value"][0] for s in admin.search_for_studies(get_remaining=True)}
    assert {stored["ct_study"], *(s["StudyInstanceUID"] for s in stored["studies"])} <= listed
    with pytest.raises(requests.HTTPError) as bad:
        admin.search_for_studies(search_filters={"PatientNmae": "x"})
    assert bad.value.response.status_code == 400
    assert "PatientNmae" in bad.value.response.json()["error"]["message"]
    # another institution's node: a named study is searched (there is none), a patient is not
    other_node = deployment.layout.by_layer("render")[1].url
    visitor = dicomweb_client(deployment, "physician", other_node)
    assert visitor.search_for_studies(search_filters={"StudyInstanceUID": stored["ct_study"]}) == []
    with pytest.raises(requests.HTTPError) as foreign:
        visitor.search_for_studies(search_filters={"PatientID": stored["ct_patient"]})
    assert foreign.value.response.status_code == 403


def test_a_swapped_range_is_refused_naming_it(archive):
    """`StudyDate=20241231-20240101` answered 204, as if no study were in the year; `2024-01-05`
    was refused as "'2024' is not a calendar date"."""
    for query, named in (("StudyDate=20241231-20240101", "'20241231-20240101' ends before it starts"),
                         ("StudyDate=2024-01-05", "'2024-01-05' is not a calendar date")):
        reply = qido(archive, f"/studies?{query}")
        assert reply.status_code == 400, (query, reply.status_code)
        assert named in reply.get_json()["error"]["message"]


def test_a_time_range_across_midnight_is_told_how_to_ask(archive):
    """`StudyTime=2300-0100` (a night shift) was refused as a range that "ends before it starts", with
    no word that PS3.4 C.2.2.2.5.2 matches no range across midnight nor how to ask for those studies."""
    reply = qido(archive, "/studies?StudyTime=2300-0100")
    assert reply.status_code == 400
    message = reply.get_json()["error"]["message"]
    assert "across midnight" in message and "'2300-' and '-0100' as two queries" in message, message
    assert "midnight" not in qido(archive, "/studies?StudyDate=20241231-20240101").get_json()["error"]["message"]


@pytest.mark.parametrize("query", [
    "=x", "&&&", "a.b.c=1", "00100010.00100020=x", "OtherPatientIDsSequence.PatientID=x", "ffffffff=1",
    "PatientName=%FF%FE", "PatientName=***", "PatientName=%5B", "StudyDescription=%5B*", "StudyDate=-",
    "StudyDate=20240101-20230101", "StudyTime=1200-1100", "ModalitiesInStudy=%5C%5C", "ModalitiesInStudy=C%25",
    "AccessionNumber=%25%5F!", "StudyInstanceUID=,,,", "includefield=", "includefield=%2C", "limit=", "offset=",
    "fuzzymatching=true&PatientName=***", "fuzzymatching=true&ReferringPhysicianName=%C3%A9",
])
def test_hostile_queries_never_get_a_server_error(archive, query: str):
    for path in ("/studies", "/series", "/instances"):
        reply = qido(archive, f"{path}?{query}")
        assert reply.status_code in (200, 204, 400), (path, query, reply.status_code, reply.data[:300])
        if reply.status_code == 400:
            assert reply.get_json()["error"]["message"]


def test_a_long_list_of_modalities_is_matched_not_a_database_error(archive):
    """`ModalitiesInStudy` with 100 or more values (300 characters: `CT\\CT\\...`) nested its OR once
    per value, past SQLite's parser stack: the search failed at every try."""
    a, c = (s["StudyInstanceUID"] for s in (STUDY_A, STUDY_C))
    repeated = "\\".join(["MR"] * 300)
    distinct = "\\".join([*(f"X{i}" for i in range(100)), "MR"])
    for value in (repeated, distinct, ",".join(["MR"] * 300)):
        assert uids_of(archive, "/studies", query_string={"ModalitiesInStudy": value}) == [c, a]
        assert sorted(uids_of(archive, "/series", SERIES_UID, query_string={"ModalitiesInStudy": value})) == sorted(
            [SERIES_A_CT["SeriesInstanceUID"], SERIES_A_MR["SeriesInstanceUID"], SERIES_C_MR["SeriesInstanceUID"]])
    reply = qido(archive, "/studies", query_string={"ModalitiesInStudy": "\\".join(f"X{i}" for i in range(200))})
    assert reply.status_code == 400, reply.get_data()
    assert "ModalitiesInStudy" in reply.get_json()["error"]["message"]


@pytest.fixture
def writable(tmp_path, token_keys):
    """A node of its own, for the tests that store what `archive`'s readers must not see."""
    node = build_node(tmp_path, token_keys)
    yield node
    close_node(node)


def test_person_name_component_groups_are_split_as_metadata_splits_them(writable):
    """PS3.18 F.2.2: a PN's alphabetic, ideographic and phonetic groups (split on "=") are separate
    members, as /metadata writes them (QIDO gave the whole value as Alphabetic)."""
    patient = {"PatientID": "PN-1", "PatientName": "Yamada^Tarou=山田^太郎=やまだ^たろう",
               "SpecificCharacterSet": "ISO_IR 192"}
    study = {"StudyInstanceUID": generate_uid()}
    reply = writable.upload(series_files(1, patient=patient, study=study, series={"Modality": "CT"}),
                            headers=writable.headers("physician"))
    assert reply.status_code == 201, reply.get_json()
    [answer] = qido(writable, f"/studies?StudyInstanceUID={study['StudyInstanceUID']}").get_json()
    expected = [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}]
    assert answer["00100010"] == {"vr": "PN", "Value": expected}
    series_uid = qido(writable, f"/studies/{study['StudyInstanceUID']}/series").get_json()[0][SERIES_UID]["Value"][0]
    metadata = writable.client.get(f"{ROOT}/studies/{study['StudyInstanceUID']}/series/{series_uid}/metadata",
                                   headers=writable.headers()).get_json()
    assert metadata[0]["00100010"]["Value"] == expected


def test_instances_without_pixels_have_no_image_attributes(writable):
    """A report, alone or in a series of images, has no Rows, Columns, BitsAllocated or
    NumberOfFrames (QIDO gave it 0/0/8, or its series' images' values)."""
    from tests.render.synthetic import new_instance

    def report(uids: dict[str, str]) -> tuple[str, bytes]:
        ds = new_instance("1.2.840.10008.5.1.4.1.1.88.11")  # Basic Text SR
        ds.StudyInstanceUID, ds.SeriesInstanceUID = uids["StudyInstanceUID"], uids["SeriesInstanceUID"]
        ds.PatientID, ds.Modality = "SR-1", uids.get("Modality", "SR")
        return f"{ds.SOPInstanceUID}.dcm", to_bytes(ds)

    alone = {"StudyInstanceUID": generate_uid(), "SeriesInstanceUID": generate_uid()}
    mixed_series = {"SeriesInstanceUID": generate_uid(), "Modality": "CT"}
    mixed = {"StudyInstanceUID": generate_uid(), **mixed_series}
    images = series_files(2, patient={"PatientID": "SR-1"}, study={"StudyInstanceUID": mixed["StudyInstanceUID"]},
                          series=mixed_series)
    for files in ([report(alone)], [*images, report(mixed)]):
        reply = writable.upload(files, headers=writable.headers("physician"))
        assert reply.status_code == 201, reply.get_json()
    image_tags = ("00280010", "00280011", "00280100", "00280008")
    [sr] = qido(writable, f"/studies/{alone['StudyInstanceUID']}/series/{alone['SeriesInstanceUID']}/instances"
                ).get_json()
    assert all("Value" not in sr.get(tag, {}) for tag in image_tags), sr
    answers = qido(writable, f"/studies/{mixed['StudyInstanceUID']}/series/{mixed['SeriesInstanceUID']}/instances"
                   ).get_json()
    by_class = {a["00080016"]["Value"][0]: a for a in answers}
    assert all("Value" not in by_class["1.2.840.10008.5.1.4.1.1.88.11"].get(tag, {}) for tag in image_tags)
    ct = by_class[pydicom.uid.CTImageStorage]
    assert ct["00280010"]["Value"] == [8] and ct["00280008"]["Value"] == [1]
