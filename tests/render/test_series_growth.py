"""A series that grows instance by instance (C-STORE, STOW-RS): cheap appends, the "series complete" rule.

A modality sends a series image by image; each append must cost what the new image costs, and the
series must end exactly as one upload of the same files would have made it.
"""

from __future__ import annotations

import io
import random
import threading
import time

import numpy as np
import psycopg
import pydicom
import pytest
from pydicom.dataset import Dataset

from daemons.render.ingest.service import INGEST_EXTENSION, Actor, Ingest
from daemons.render.ingest.upload_checks import UploadError
from tests.render.synthetic import dataset, to_bytes

SERIES = "1.2.826.0.1.3680043.99.7"
PEER = Actor("dicom:MODALITY", "MODALITY", "127.0.0.1")


def ct_slice(index: int, series: str = SERIES) -> Dataset:
    """A 16x16 slice whose values grow with its position, so the middle frame decides the automatic window."""
    ds = dataset(rows=16, cols=16, series=series, position=2.5 * index)
    ds.InstanceNumber = index + 1
    ds.PixelData = (np.arange(256, dtype=np.int16) * (index + 1)).tobytes()
    return ds


def series_files(count: int, series: str = SERIES) -> list[tuple[str, bytes]]:
    return [(f"{index:03d}.dcm", to_bytes(ct_slice(index, series))) for index in range(count)]


def ingest_of(harness) -> Ingest:
    return harness.app.extensions[INGEST_EXTENSION]


def add(harness, files: list[tuple[str, bytes]]):
    """One C-STORE's or STOW-RS's call of the ingest service (in the app context, as the doors make it)."""
    with harness.app.app_context():
        return ingest_of(harness).add(files, PEER)


def stored_manifest(harness, record_id: str) -> dict:
    """The manifest every reader gets (`Node.manifest`: a series grown since its last analysis is
    analysed first; the store itself holds the last analysis and a journal of the appends)."""
    manifest = harness.app.extensions["sivr_node"].manifest(record_id).to_json()
    for entry in manifest["files"]:
        entry.pop("blob")  # where each file lies in the store depends on the order they came in
    return manifest


def catalogue_rows(harness, record_id: str) -> dict:
    cat = harness.app.extensions["sivr_node"].models.catalogue
    series = cat.Series.get_by_id(record_id)
    stored = harness.app.extensions["sivr_node"].models.StoredRecord.get_by_id(record_id)
    return {
        "instances": sorted((i.sop_instance_uid, i.sha256, i.instance_number, i.sop_class_uid)
                            for i in cat.Instance.select().where(cat.Instance.series == record_id)),
        "series": (series.series_uid, series.instance_count, series.modality),
        "study": (series.study.study_uid, series.study.series_count, series.study.instance_count),
        "stored_record": (stored.files, stored.frames, stored.size_bytes, stored.rows, stored.columns),
    }


@pytest.fixture
def pair(make_node):
    """Two nodes of one institution (so the same series gets the same record id on both)."""
    first = make_node(dicom__series_complete_s=3600.0)
    second = make_node(institution_id=first.institution_id, dicom__series_complete_s=3600.0)
    yield first, second
    close_nodes(first, second)


def close_nodes(*harnesses) -> None:
    """Stop what each node runs in the background (ingest, registry, view audit, decoder)."""
    for harness in harnesses:
        ingest_of(harness).close()
        harness.registry.shutdown()
        harness.app.extensions["sivr_view_audit"].close()
        harness.app.extensions["sivr_node"].decoder.close()


def test_instance_by_instance_ends_as_one_bulk_upload(pair):
    bulk_node, grown_node = pair
    files = series_files(12)
    bulk = add(bulk_node, files)
    assert bulk.created and bulk.added == 12
    shuffled = files[:]
    random.Random(7).shuffle(shuffled)
    ingest = ingest_of(grown_node)
    results = [add(grown_node, [one]) for one in shuffled]
    assert {r.record_id for r in results} == {bulk.record_id}
    assert [r.created for r in results] == [True] + [False] * 11
    # while it grows, everything but the automatic window (sampled again when complete) is exact
    assert ingest.growing() == [bulk.record_id]
    growing, final = stored_manifest(grown_node, bulk.record_id), stored_manifest(bulk_node, bulk.record_id)
    assert growing["render"].pop("auto_window") != final["render"]["auto_window"]
    assert growing["meta"] == final["meta"] and growing["files"] == final["files"]
    assert growing["render"] == {k: v for k, v in final["render"].items() if k != "auto_window"}
    assert ingest.complete_due(time.monotonic() + 3600) == [bulk.record_id]
    assert ingest.growing() == []
    assert stored_manifest(grown_node, bulk.record_id) == final
    assert catalogue_rows(grown_node, bulk.record_id) == catalogue_rows(bulk_node, bulk.record_id)
    # the grown series renders like the bulk one
    for harness in pair:
        headers = harness.headers()
        assert harness.client.post(f"/api/v1/records/{bulk.record_id}/load", headers=headers).status_code == 202
        frame = harness.client.get(f"/api/v1/records/{bulk.record_id}/frames/6?format=png", headers=headers)
        assert frame.status_code == 200
    assert ingest_of(bulk_node).growing() == []  # one bulk upload is complete as it is stored


def test_an_append_reads_no_more_headers_as_the_series_grows(pair, monkeypatch):
    """The work of one append does not grow with the series (it was quadratic over a whole series)."""
    _, harness = pair
    files = series_files(61)
    for one in files[:60]:
        add(harness, [one])
    reads = {"count": 0}
    original = Dataset.get

    def counting_get(self, *args, **kwargs):
        reads["count"] += 1
        return original(self, *args, **kwargs)

    def reads_of(one: tuple[str, bytes]) -> int:
        reads["count"] = 0
        monkeypatch.setattr(Dataset, "get", counting_get)
        try:
            add(harness, [one])
        finally:
            monkeypatch.setattr(Dataset, "get", original)
        return reads["count"]

    small = series_files(11, series="1.2.826.0.1.3680043.99.8")
    for one in small[:10]:
        add(harness, [one])
    at_ten, at_sixty = reads_of(small[10]), reads_of(files[60])
    assert at_sixty - at_ten < 10, (at_ten, at_sixty)  # it was about 15 more per stored instance


def test_series_complete_rule_fires_once_after_the_stable_age(make_node, monkeypatch):
    harness = make_node(dicom__series_complete_s=1.5)
    ingest = ingest_of(harness)
    completed: list[str] = []
    original = Ingest._complete

    def spy(self, record_id, series_uid, now):
        done = original(self, record_id, series_uid, now)
        if done and self is ingest:  # nodes of earlier tests may still be completing their own series
            completed.append(record_id)
        return done

    def wait_for(count: int) -> None:
        deadline = time.monotonic() + 15
        while len(completed) < count and time.monotonic() < deadline:
            time.sleep(0.05)

    monkeypatch.setattr(Ingest, "_complete", spy)
    try:
        files = series_files(7)
        record_id = add(harness, files[:1]).record_id
        for one in files[1:6]:
            add(harness, [one])  # instances keep arriving faster than the stable age: not complete yet
        assert completed == [] and ingest.growing() == [record_id]
        wait_for(1)
        time.sleep(2.0)  # several more ticks of the watcher: nothing more happens
        assert completed == [record_id] and ingest.growing() == []
        add(harness, files[6:])  # it grows again later: complete again, once
        assert ingest.growing() == [record_id]
        wait_for(2)
        assert completed == [record_id, record_id]
    finally:
        ingest.close()
        harness.registry.shutdown()
        harness.app.extensions["sivr_view_audit"].close()
        harness.app.extensions["sivr_node"].decoder.close()


def test_conflicts_refused_and_resends_are_no_ops_while_growing(pair):
    _, harness = pair
    files = series_files(4)
    record_id = add(harness, files[:1]).record_id
    add(harness, files[1:3])
    again = add(harness, [files[1]])
    assert (again.added, again.unchanged) == (0, 1)
    changed = ct_slice(1)
    original = pydicom.dcmread(io.BytesIO(files[1][1]))
    changed.SOPInstanceUID = original.SOPInstanceUID
    changed.file_meta.MediaStorageSOPInstanceUID = original.SOPInstanceUID
    changed.PixelData = bytes(len(changed.PixelData))
    with pytest.raises(UploadError) as refused:
        add(harness, [("changed.dcm", to_bytes(changed))])
    assert refused.value.status == 409 and refused.value.code == "instance_conflict"
    audit = harness.app.extensions["sivr_node"].models.AuditEntry
    assert audit.select().where(audit.action == "instance.conflict").count() == 1
    cat = harness.app.extensions["sivr_node"].models.catalogue
    assert cat.Instance.select().where(cat.Instance.series == record_id).count() == 3
    # a new instance together with a re-sent one: the new one is added, the other left as it is
    both = add(harness, [files[0], files[3]])
    assert (both.added, both.unchanged) == (1, 1)
    assert cat.Series.get_by_id(record_id).instance_count == 4


def test_a_sop_instance_uid_stored_in_another_series_is_refused(pair):
    """A SOP Instance UID names one instance: the same UID in another series (sent by a modality that
    re-used it, or a copy re-UIDed at the series level only) is refused and audited, in a new series
    and in a growing one alike, and the request stores nothing of its other files either."""
    _, harness = pair
    files = series_files(3)
    first = add(harness, files[:2]).record_id
    other_series = SERIES + ".2"
    others = series_files(3, other_series)
    grown = add(harness, others[:1]).record_id
    reused = ct_slice(1, other_series)
    reused.SOPInstanceUID = pydicom.dcmread(io.BytesIO(files[1][1])).SOPInstanceUID
    reused.file_meta.MediaStorageSOPInstanceUID = reused.SOPInstanceUID
    cat = harness.app.extensions["sivr_node"].models.catalogue
    audit = harness.app.extensions["sivr_node"].models.AuditEntry
    for sent in ([("reused.dcm", to_bytes(reused))], [others[2], ("reused.dcm", to_bytes(reused))]):
        with pytest.raises(UploadError) as refused:
            add(harness, sent)
        assert (refused.value.status, refused.value.code) == (409, "instance_conflict")
        assert "reused.dcm" in refused.value.message and "another series" in refused.value.message
    assert cat.Instance.select().where(cat.Instance.series == first).count() == 2
    assert cat.Instance.select().where(cat.Instance.series == grown).count() == 1
    conflicts = audit.select().where(audit.action == "instance.conflict")
    assert [entry.object_id for entry in conflicts] == [first, first]
    # a new series of its own: the same refusal when the reused UID is its first instance
    alone = ct_slice(0, SERIES + ".3")
    alone.SOPInstanceUID = reused.SOPInstanceUID
    alone.file_meta.MediaStorageSOPInstanceUID = reused.SOPInstanceUID
    with pytest.raises(UploadError):
        add(harness, [("alone.dcm", to_bytes(alone))])
    assert cat.Series.select().where(cat.Series.series_uid == SERIES + ".3").count() == 0
    # the rest of the other series still grows
    assert add(harness, others[1:]).added == 2


def test_a_failed_append_leaves_the_series_as_it_was(pair, monkeypatch):
    _, harness = pair
    node = harness.app.extensions["sivr_node"]
    files = series_files(3)
    record_id = add(harness, files[:2]).record_id
    before = node.store.read_manifest(record_id)

    def disk_fails(*args, **kwargs):
        raise OSError("the disk went away")

    monkeypatch.setattr(node.store, "append_files", disk_fails)
    with pytest.raises(OSError):
        add(harness, files[2:])
    monkeypatch.undo()
    assert node.store.read_manifest(record_id) == before
    cat = node.models.catalogue
    assert cat.Series.get_by_id(record_id).instance_count == 2
    assert add(harness, files[2:]).added == 1  # the same instance again, once the store works
    assert cat.Series.get_by_id(record_id).instance_count == 3


def test_a_complete_series_has_its_dicomweb_metadata_built(make_node, monkeypatch):
    """The series-complete rule builds derived data: the first WADO-RS /metadata after it is served
    from RAM (the store is not read again), instead of parsing every file of the series then. The
    rule builds it from the files the ingest parsed as they arrived, not read back from the store
    (that was three quarters of the work, beside the C-STOREs of the next series), and the answer
    is the one the stored files give."""
    from daemons.render.dicomweb.metadata import EXTENSION as METADATA

    harness = make_node(dicom__series_complete_s=3600)
    files = series_files(4)
    record_id = add(harness, files[:1]).record_id
    add(harness, files[1:])
    ingest = ingest_of(harness)

    def no_store_reads(*args, **kwargs):
        raise AssertionError("the metadata of a complete series must not be read from the store again")

    monkeypatch.setattr(harness.app.extensions["sivr_node"].store, "read_file", no_store_reads)
    assert ingest.complete_due(float("inf")) == [record_id]
    assert len(harness.app.extensions[METADATA]._entries) == 4
    study = pydicom.dcmread(io.BytesIO(files[0][1])).StudyInstanceUID
    answer = harness.client.get(f"/dicomweb/studies/{study}/series/{SERIES}/metadata",
                                headers={**harness.headers(), "Accept": "application/dicom+json"})
    assert answer.status_code == 200
    monkeypatch.undo()
    harness.app.extensions[METADATA]._entries.clear()
    from_the_store = harness.client.get(f"/dicomweb/studies/{study}/series/{SERIES}/metadata",
                                        headers={**harness.headers(), "Accept": "application/dicom+json"})
    assert from_the_store.status_code == 200 and len(from_the_store.get_json()) == 4
    assert answer.get_json() == from_the_store.get_json()


def test_an_append_rereads_the_manifest_only_when_another_node_grew_the_series(make_node, tmp_path, monkeypatch):
    """A C-STORE append does not decode the series' manifest again (it grows with the series) while
    the store holds the version this node wrote; when another node sharing the store grew the series,
    the append follows it and loses none of its instances."""
    first = make_node(root=tmp_path, dicom__series_complete_s=3600.0)
    second = make_node(root=tmp_path, institution_id=first.institution_id, dicom__series_complete_s=3600.0)
    try:
        files = series_files(7)
        for one in files[:3]:
            record_id = add(first, [one]).record_id
        store = first.app.extensions["sivr_node"].store
        reads = {"count": 0}
        original = store.read_manifest_versioned

        def counting(*args, **kwargs):
            reads["count"] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(store, "read_manifest_versioned", counting)
        assert add(first, [files[3]]).added == 1
        assert reads["count"] == 0  # nothing changed behind this node: no manifest read
        assert add(second, files[4:6]).added == 2  # another node grows the series
        assert add(first, [files[6]]).added == 1
        assert reads["count"] >= 1  # this node followed the store
        manifest = store.read_manifest(record_id)
        assert len(manifest.files) == 7 and len({entry.blob for entry in manifest.files}) == 7
        node = first.app.extensions["sivr_node"]
        assert node.models.catalogue.Series.get_by_id(record_id).instance_count == 7
    finally:
        close_nodes(first, second)


def sized_slice(index: int, rows: int, series: str) -> Dataset:
    """A slice of `rows` x `rows` pixels at position `index` (its values grow with the position)."""
    ds = dataset(rows=rows, cols=rows, series=series, position=2.5 * index)
    ds.InstanceNumber = index + 1
    ds.PixelData = (np.arange(rows * rows, dtype=np.int16) * (index + 1)).tobytes()
    return ds


@pytest.mark.parametrize("count", [56, 127])
def test_a_series_of_two_sizes_arriving_one_by_one_shuffled_is_analysed_as_one_upload(pair, monkeypatch, count):
    """A series (three quarters at 16x16, the rest at 12x12: two stacks) sent one instance at a time
    in shuffled order: no append analyses the series, a reader during growth gets the analysis of
    what has arrived, the journal is folded into the base at its bound, and the end is exactly one
    upload of the same files."""
    import daemons.render.ingest.series_analysis as analysis
    import daemons.render.ingest.service as ingest_module

    bulk_node, grown_node = pair
    series = "1.2.826.0.1.3680043.99.9"
    files = [(f"{i:03d}.dcm", to_bytes(sized_slice(i, 16 if i < count * 3 // 4 else 12, series)))
             for i in range(count)]
    bulk = add(bulk_node, files)
    shuffled = files[:]
    random.Random(11).shuffle(shuffled)
    monkeypatch.setattr(ingest_module, "JOURNAL_BOUND", 20)
    analysed: list[int] = []
    original = analysis._analyse_files
    test_thread = threading.current_thread()

    def counting(unique, limits, provisional):
        # the appends and the reader run on this thread; a node of an earlier test in this process
        # may still complete its own series on its watcher's thread
        if threading.current_thread() is test_thread:
            analysed.append(len(unique))
        return original(unique, limits, provisional)

    monkeypatch.setattr(analysis, "_analyse_files", counting)
    node = grown_node.app.extensions["sivr_node"]
    store = node.store
    record_id = add(grown_node, shuffled[:1]).record_id
    for count, one in enumerate(shuffled[1:], start=2):
        add(grown_node, [one])
        if count == 30:  # a reader in the middle of the series: the analysis of the 30 files here
            seen = stored_manifest(grown_node, record_id)
            assert seen["meta"]["files"] == 30 and len(seen["render"]["stacks"]) == 2
    # each append checked its one new file; the series was analysed only at the bound (20 appends
    # since the last analysis) and for the reader, never per append
    series_sized = [n for n in analysed if n > 1]
    assert len(series_sized) <= count // 20 + 1, analysed
    assert store.read_manifest(record_id).pending > 0  # the journal holds the last appends
    growing, final = stored_manifest(grown_node, record_id), stored_manifest(bulk_node, bulk.record_id)
    assert store.read_manifest(record_id).pending == 0  # the reader's analysis is the new base
    assert growing["render"].pop("auto_window") != final["render"]["auto_window"]
    assert growing["meta"] == final["meta"] and growing["files"] == final["files"]
    assert growing["render"] == {k: v for k, v in final["render"].items() if k != "auto_window"}
    assert ingest_of(grown_node).complete_due(time.monotonic() + 3600) == [record_id]
    assert stored_manifest(grown_node, record_id) == final
    assert catalogue_rows(grown_node, record_id) == catalogue_rows(bulk_node, bulk.record_id)


def test_an_append_is_refused_as_an_upload_of_the_grown_series_would_be(make_node):
    """An append checks only its new files, yet refuses what the analysis of the whole grown series
    refuses: another patient, another pixel format, more frames than the node's limit."""
    harness = make_node(dicom__series_complete_s=3600.0, limits__max_frames=5)
    try:
        files = series_files(6)
        record_id = add(harness, files[:2]).record_id
        add(harness, files[2:4])
        other_patient = ct_slice(4)
        other_patient.PatientID = "SOMEONE-ELSE"
        other_format = ct_slice(4)
        other_format.BitsStored, other_format.HighBit = 12, 11
        for refused_file, status, code in ((other_patient, 422, "inconsistent_series"),
                                           (other_format, 422, "inconsistent_series")):
            with pytest.raises(UploadError) as refused:
                add(harness, [("bad.dcm", to_bytes(refused_file))])
            assert (refused.value.status, refused.value.code) == (status, code)
        add(harness, files[4:5])
        with pytest.raises(UploadError) as refused:
            add(harness, files[5:6])  # the sixth frame: over the limit of five
        assert (refused.value.status, refused.value.code) == (413, "over_limits")
        node = harness.app.extensions["sivr_node"]
        assert len(node.manifest(record_id).files) == 5
        assert node.models.catalogue.Series.get_by_id(record_id).instance_count == 5
    finally:
        ingest_of(harness).close()
        harness.registry.shutdown()
        harness.app.extensions["sivr_view_audit"].close()
        harness.app.extensions["sivr_node"].decoder.close()


def test_a_node_reading_a_series_another_node_grew_analyses_it_once_for_every_node(make_node, tmp_path):
    """Two nodes share a store: the first appends (journal parts only), the second reads the series
    and gets its analysis, stored as the base both then read (the first analyses nothing again)."""
    first = make_node(root=tmp_path, dicom__series_complete_s=3600.0)
    second = make_node(root=tmp_path, institution_id=first.institution_id, dicom__series_complete_s=3600.0)
    try:
        files = series_files(8)
        record_id = add(first, files[:1]).record_id
        for one in files[1:]:
            add(first, [one])
        store = first.app.extensions["sivr_node"].store
        assert store.read_manifest(record_id).pending == 7
        seen = second.app.extensions["sivr_node"].manifest(record_id)
        assert seen.pending == 0 and len(seen.files) == 8 and seen.meta.frames == 8
        assert store.read_manifest(record_id) == seen  # stored as the base, for every node
        assert first.app.extensions["sivr_node"].manifest(record_id) == seen
        assert [entry.sop_instance_uid for entry in seen.files] == [
            pydicom.dcmread(io.BytesIO(raw)).SOPInstanceUID for _, raw in files]  # in slice order
    finally:
        close_nodes(first, second)


def test_a_series_naming_a_stored_study_of_another_patient_is_refused(pair):
    """A study belongs to one patient: a new series of patient Y carrying patient X's Study Instance
    UID was filed under X, so searches by Y's Patient ID did not find it and X's study listed it."""
    _, harness = pair
    first = ct_slice(0)
    first.PatientID, first.IssuerOfPatientID = "MIX-X", "HOSPITAL"
    add(harness, [("x.dcm", to_bytes(first))])
    cat = harness.app.extensions["sivr_node"].models.catalogue
    audit = harness.app.extensions["sivr_node"].models.AuditEntry
    for patient_id, issuer in (("MIX-Y", "HOSPITAL"), ("MIX-X", "OTHER"), ("", "")):
        other = ct_slice(0, SERIES + ".9")
        other.StudyInstanceUID, other.PatientID, other.IssuerOfPatientID = first.StudyInstanceUID, patient_id, issuer
        with pytest.raises(UploadError) as refused:
            add(harness, [("y.dcm", to_bytes(other))])
        assert (refused.value.status, refused.value.code) == (409, "study_conflict")
        assert "MIX-X" not in refused.value.message  # the other patient is not named
    assert cat.Series.select().count() == 1 and cat.Patient.select().count() == 1
    assert audit.select().where(audit.action == "study.conflict").count() == 3
    # the same patient adds a series to the study
    same = ct_slice(0, SERIES + ".9")
    same.StudyInstanceUID, same.PatientID, same.IssuerOfPatientID = first.StudyInstanceUID, "MIX-X", "HOSPITAL"
    assert add(harness, [("x2.dcm", to_bytes(same))]).added == 1
    assert cat.Study.get().series_count == 2


@pytest.mark.parametrize("clash", ["another patient", "the same SOP Instance UID",
                                   "the same SOP Instance UID in another study"])
def test_two_new_series_sent_at_once_are_checked_one_after_the_other(pair, monkeypatch, clash):
    """The checks against other series ran under each series' own lock: two new series sent at once
    (two associations, two workers) both passed them before either was stored, so two patients'
    series were filed under one study, or one SOP Instance UID under two series (in one study or two).
    Each check here waits (up to a second) for the other request's check to pass, as a scheduler
    may make it: now the second request is checked only once the first is stored."""
    _, harness = pair
    ingest = ingest_of(harness)
    checked = {name: threading.Event() for name in ("x", "y")}
    original = Ingest._refuse_other_series

    def check_then_wait(self, series_uid, incoming, actor):
        original(self, series_uid, incoming, actor)
        mine = "x" if series_uid.endswith(".8") else "y"
        checked[mine].set()
        checked["y" if mine == "x" else "x"].wait(1.0)

    monkeypatch.setattr(Ingest, "_refuse_other_series", check_then_wait)
    x, y = ct_slice(0, SERIES + ".8"), ct_slice(0, SERIES + ".9")
    x.PatientID = "RACE-X"
    y.PatientID = "RACE-Y" if clash == "another patient" else "RACE-X"
    if clash.startswith("the same SOP Instance UID"):
        y.SOPInstanceUID = y.file_meta.MediaStorageSOPInstanceUID = x.SOPInstanceUID
    if clash.endswith("in another study"):
        y.StudyInstanceUID = x.StudyInstanceUID + ".2"
    assert ingest._lock_for(SERIES + ".8") is not ingest._lock_for(SERIES + ".9")  # series of two buckets
    outcomes: dict[str, object] = {}

    def send(name: str, ds: Dataset) -> None:
        try:
            outcomes[name] = add(harness, [(f"{name}.dcm", to_bytes(ds))])
        except UploadError as refused:
            outcomes[name] = refused.code

    threads = [threading.Thread(target=send, args=args) for args in (("x", x), ("y", y))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    refusals = [outcome for outcome in outcomes.values() if isinstance(outcome, str)]
    assert refusals == ["study_conflict" if clash == "another patient" else "instance_conflict"], outcomes
    cat = harness.app.extensions["sivr_node"].models.catalogue
    assert cat.Series.select().count() == 1 and cat.Instance.select().count() == 1
    assert cat.Patient.select().count() == 1 and cat.Study.select().count() == 1


@pytest.mark.parametrize("change", [{"IssuerOfPatientID": "OTHER-HOSPITAL"}, {"IssuerOfPatientID": ""},
                                    {"PatientBirthDate": "19990101"}])
def test_an_instance_of_another_patient_does_not_join_a_stored_series(pair, change):
    """The same PatientID and name with another issuer or birth date is another patient (the
    catalogue keys patients by ID and issuer; the institution's identity rule compares the birth
    date): such an instance joined the series, unseen by the work list, and a birth date sorted first
    became the record's."""
    _, harness = pair
    first = ct_slice(0)
    first.PatientID, first.IssuerOfPatientID, first.PatientBirthDate = "INS-0042", "SIVR-TEST", "19610412"
    record_id = add(harness, [("0.dcm", to_bytes(first))]).record_id
    other = ct_slice(1)
    other.PatientID, other.IssuerOfPatientID, other.PatientBirthDate = "INS-0042", "SIVR-TEST", "19610412"
    for keyword, value in change.items():
        setattr(other, keyword, value)
    with pytest.raises(UploadError) as refused:
        add(harness, [("1.dcm", to_bytes(other))])
    assert (refused.value.status, refused.value.code) == (422, "inconsistent_series")
    cat = harness.app.extensions["sivr_node"].models.catalogue
    assert cat.Instance.select().where(cat.Instance.series == record_id).count() == 1


def test_a_multi_valued_patient_id_is_kept_as_dicom_writes_it(pair):
    """`A\\B` was stored and stated as the text of a Python list, `['A', 'B']`."""
    _, harness = pair
    ds = ct_slice(0)
    ds.PatientID, ds.PatientName = ["A", "B"], ["DOE^JANE", "ROE^RICHARD"]
    record_id = add(harness, [("0.dcm", to_bytes(ds))]).record_id
    cat = harness.app.extensions["sivr_node"].models.catalogue
    patient = cat.Series.get_by_id(record_id).study.patient
    assert (patient.patient_id, patient.name) == ("A\\B", "DOE^JANE\\ROE^RICHARD")
    meta = harness.app.extensions["sivr_node"].manifest(record_id).meta
    assert (meta.patient_id_dicom, meta.patient_name) == ("A\\B", "DOE^JANE\\ROE^RICHARD")


def test_a_series_another_node_deleted_keeps_its_patient(pair):
    """A node sharing the store finds the series gone at its next sync: it keeps whose series it
    was, as the deleting node does, and refuses the same Series Instance UID for another patient."""
    _, harness = pair
    first = ct_slice(0, SERIES + ".77")
    first.PatientID = "PATIENT-P"
    record_id = add(harness, [("p.dcm", to_bytes(first))]).record_id
    the_node = harness.app.extensions["sivr_node"]
    the_node.store.delete(record_id)  # as another node of the store deletes it
    with harness.app.app_context():
        the_node.record_index.sync()
    assert not the_node.models.StoredRecord.select().where(the_node.models.StoredRecord.id == record_id).exists()
    other = ct_slice(1, SERIES + ".77")
    other.PatientID = "PATIENT-Q"
    with pytest.raises(UploadError) as refused:
        add(harness, [("q.dcm", to_bytes(other))])
    assert (refused.value.status, refused.value.code) == (409, "series_conflict")


def test_a_readers_late_notice_of_this_workers_own_append_leaves_the_series_to_be_completed(make_node):
    """A reader of this worker may meet the version an append of this worker just wrote before the
    writer notes it; its notice of a change then comes once the append is over. Taken for a change
    made elsewhere, it stopped the timing of the series' completion (no worker would analyse it
    exactly) and dropped what the worker parsed of it. So did a notice of one of its earlier
    versions, coming after a later append (the reader's catalogue update waits behind the writer's).
    A notice of another version still does both."""
    harness = make_node(dicom__series_complete_s=3600.0)
    ingest, node = ingest_of(harness), harness.app.extensions["sivr_node"]
    try:
        files = series_files(3)
        record_id = add(harness, files[:1]).record_id
        add(harness, files[1:2])
        manifest, version = node.store.read_manifest_versioned(record_id)
        with harness.app.app_context():
            node.record_index.changed(record_id, manifest, version)  # the reader's notice, late
        assert ingest.growing() == [record_id]
        assert ingest._parsed[record_id].current  # kept: the next append parses nothing again
        add(harness, files[2:])
        with harness.app.app_context():
            node.record_index.changed(record_id, manifest, version)  # later still: after the next append
        assert ingest.growing() == [record_id] and ingest._parsed[record_id].current
        with harness.app.app_context():
            node.record_index.changed(record_id, manifest, "another node's version")
        assert ingest.growing() == [] and not ingest._parsed[record_id].current
    finally:
        close_nodes(harness)


@pytest.mark.postgres
def test_completion_goes_on_after_the_database_server_dropped_the_watchers_connection(make_node, pg_database_factory,
                                                                                        monkeypatch):
    """A completion that failed (the store unreachable) after it queried leaves the watcher's
    connection open; the server then restarts. Held for the thread's life, that dead connection
    failed every retry: the series never completed."""
    url = pg_database_factory()
    harness = make_node(dicom__series_complete_s=0.5, database__url=url)
    ingest, database = ingest_of(harness), harness.app.extensions["sivr_node"].models.database
    original, failures = Ingest._complete, []

    def failing_once(self, record_id, series_uid, now):
        database.execute_sql("SELECT 1")  # as the completion's catalogue update would
        if not failures:
            failures.append(record_id)
            with psycopg.connect(url) as connection:  # the server restarts while the store is away
                connection.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                   "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            raise OSError("the store is unreachable")
        return original(self, record_id, series_uid, now)

    monkeypatch.setattr(Ingest, "_complete", failing_once)
    for one in series_files(3):
        add(harness, [one])
        database.close()  # as the door's request or association gives it back
    deadline = time.monotonic() + 20
    while ingest.growing() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert failures and ingest.growing() == []
