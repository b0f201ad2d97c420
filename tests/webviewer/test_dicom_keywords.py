"""The tag browser's keyword table (webviewer/static/dicom-keywords.json) is the one
webviewer.dicom_keywords makes from the DICOM data dictionary (regenerate it with
`python -m webviewer.dicom_keywords` when pydicom's dictionary changes)."""

from __future__ import annotations

import json

from webviewer import dicom_keywords


def test_the_committed_table_is_the_generated_one():
    assert dicom_keywords.FILE.read_text(encoding="utf-8") == dicom_keywords.text()


def test_it_names_the_tags_a_reader_looks_for():
    table = json.loads(dicom_keywords.FILE.read_text(encoding="utf-8"))
    assert table["tags"]["00100020"] == "PatientID"
    assert table["tags"]["00080060"] == "Modality"
    assert table["repeating"]["60xx3000"] == "OverlayData"
