"""The upload page's reading of a file's DICOM patient (webviewer/static/js/dicom_header.js), run by
Node.js on files pydicom writes: explicit and implicit VR, sequences of undefined length before the
patient module, UTF-8 names, a compressed demo file, and files it must not read."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian

ROOT = Path(__file__).resolve().parents[2]
READER = ROOT / "webviewer" / "static" / "js" / "dicom_header.js"
DEMO_CT = ROOT / "demo_data" / "ct-chest-100" / "1-001.dcm"
pytestmark = pytest.mark.skipif(shutil.which("node") is None,
                                reason="Node.js is not installed: the reader cannot be run")


def read(paths: list[Path], tmp_path: Path) -> list:
    script = tmp_path / "read.mjs"
    script.write_text(
        'import { readFileSync } from "node:fs";\n'
        "const { readDicomPatient } = await import(process.argv[2]);\n"
        "const out = [];\n"
        "for (const f of process.argv.slice(3)) out.push(await readDicomPatient(new Blob([readFileSync(f)])));\n"
        "console.log(JSON.stringify(out));\n")
    done = subprocess.run(["node", str(script), READER.as_uri(), *map(str, paths)],
                          capture_output=True, text=True, check=True, timeout=60)
    return json.loads(done.stdout)


def test_it_reads_the_patient_of_every_encoding(tmp_path):
    ds = pydicom.dcmread(DEMO_CT)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName, ds.PatientBirthDate, ds.IssuerOfPatientID = "Müller^Jürgen^Karl", "19551231", "HOSP-A"
    code = Dataset()
    code.CodeValue = "CT-1"
    ds.ProcedureCodeSequence = [code]   # group 0008, undefined length: stepped over
    ds.save_as(tmp_path / "utf8.dcm", enforce_file_format=True)
    implicit = pydicom.dcmread(DEMO_CT, stop_before_pixels=True)
    implicit.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    implicit.ReferencedImageSequence = [code]
    implicit.PatientName, implicit.PatientSex = "DOE^JANE", "F"
    implicit.save_as(tmp_path / "implicit.dcm", enforce_file_format=True, implicit_vr=True, little_endian=True)
    found = read([DEMO_CT, tmp_path / "utf8.dcm", tmp_path / "implicit.dcm"], tmp_path)
    assert found[0] == {"name": "CMB-CRC-MSB-01068", "patient_id": "CMB-CRC-MSB-01068", "issuer": "",
                        "birth_date": "", "sex": "O"}
    assert found[1] == {"name": "Müller^Jürgen^Karl", "patient_id": "CMB-CRC-MSB-01068", "issuer": "HOSP-A",
                        "birth_date": "19551231", "sex": "O"}
    assert found[2]["name"] == "DOE^JANE" and found[2]["sex"] == "F"


def test_bidirectional_controls_in_the_files_patient_are_shown_as_replacement_characters(tmp_path):
    """A PatientID ending in U+202E showed the issuer after it reversed in the upload's confirmation
    dialog: the file's values are shown as every server answer is (`api.js asShown`)."""
    ds = pydicom.dcmread(DEMO_CT, stop_before_pixels=True)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName, ds.PatientID, ds.IssuerOfPatientID = "DOE^JOHN\u202e", "PID-1\u2066", "HOSP-A"
    ds.save_as(tmp_path / "bidi.dcm", enforce_file_format=True)
    [found] = read([tmp_path / "bidi.dcm"], tmp_path)
    assert (found["name"], found["patient_id"], found["issuer"]) == ("DOE^JOHN\ufffd", "PID-1\ufffd", "HOSP-A")


def test_files_it_cannot_read_give_null(tmp_path):
    deflated = pydicom.dcmread(DEMO_CT, stop_before_pixels=True)
    deflated.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    deflated.save_as(tmp_path / "deflated.dcm", enforce_file_format=True)
    (tmp_path / "text.dcm").write_text("not DICOM at all " * 20)
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(DEMO_CT.read_bytes()[:200])
    found = read([tmp_path / "deflated.dcm", tmp_path / "text.dcm"], tmp_path)
    assert found == [None, None]
    # a file cut inside its header names no patient (empty values), never another one
    assert read([truncated], tmp_path)[0] in (None, {"name": "", "patient_id": "", "issuer": "", "birth_date": "",
                                                    "sex": ""})


def _nested(depth: int, implicit: bool) -> bytes:
    """`depth` sequences of undefined length, each holding one item of undefined length, before the
    patient module: (0008,1140) SQ, then (FFFE,E000) item, each level; the delimiters after."""
    tag = b"\x08\x00\x40\x11" + (b"\x00\x00\x00\x00" if implicit else b"SQ\x00\x00")
    opening = tag[:4] + b"\xff\xff\xff\xff" if implicit else tag + b"\xff\xff\xff\xff"
    item, item_end, sequence_end = (b"\xfe\xff\x00\xe0\xff\xff\xff\xff", b"\xfe\xff\x0d\xe0\x00\x00\x00\x00",
                                    b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")
    return (opening + item) * depth + (item_end + sequence_end) * depth


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_sequences_nested_beyond_any_call_stack_are_walked(tmp_path, implicit):
    """A crafted file nesting 200,000 sequences before its patient: the walk recursed once a level
    and ran past the call stack (a RangeError the upload form never showed); it now reads the patient
    after them, or null when they run past what is read."""
    ds = pydicom.dcmread(DEMO_CT, stop_before_pixels=True)
    ds.PatientName = "DOE^JANE"
    syntax = ImplicitVRLittleEndian if implicit else ds.file_meta.TransferSyntaxUID
    ds.file_meta.TransferSyntaxUID = syntax
    plain = tmp_path / "plain.dcm"
    ds.save_as(plain, enforce_file_format=True, implicit_vr=implicit, little_endian=True)
    data = plain.read_bytes()
    start = data.index(b"\x10\x00\x10\x00")  # (0010,0010): the nesting goes before the patient module
    paths = []
    for depth in (3, 100_000, 200_000):
        path = tmp_path / f"deep-{depth}.dcm"
        path.write_bytes(data[:start] + _nested(depth, implicit) + data[start:])
        paths.append(path)
    found = read(paths, tmp_path)
    assert found[0]["name"] == found[1]["name"] == "DOE^JANE"
    assert found[2] is None  # 4.8 MB of nesting: beyond what the reader reads (LAST_READ), not a patient
