"""The server's patient comparison (shared.patient_identity) answers as the viewer's (identity.js) does.

One rule, two languages: both are run on the same table of cases, identity.js by Node.js.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from shared.patient_identity import compare_patients

IDENTITY_JS = Path(__file__).resolve().parents[2] / "webviewer" / "static" / "js" / "identity.js"
JANE = {"first_name": "Jane", "last_name": "Doe", "birth_date": "1970-01-01"}
MULLER = {"first_name": "Jürgen Karl", "last_name": "Müller-Lüdenscheidt", "birth_date": "1955-12-31"}
# (SIVR patient, DICOM PatientName, DICOM PatientBirthDate, differs, unknown)
CASES = [
    (JANE, "DOE^JANE", "19700101", [], []),
    (JANE, "Doe^Jane^Mary", "1970-01-01", [], []),
    (JANE, "DOE^JANE=ドウ^ジェーン", "19700101", [], []),
    (JANE, "JANE DOE", "19700101", [], []),
    (JANE, "DOE JANE", "19700101", [], []),
    (JANE, "DOE^JOHN", "19700101", ["name"], []),
    (JANE, "ROE^JANE", "19700102", ["name", "birth date"], []),
    (JANE, "DOE^JANE", "", [], ["birth date"]),
    (JANE, "^", "19700101", [], ["name"]),
    (JANE, "", "", [], ["name", "birth date"]),
    (JANE, "CMB-CRC-MSB-01068", "", ["name"], ["birth date"]),
    (JANE, "DOE^JANE", "1970", [], ["birth date"]),
    (MULLER, "MULLER LUDENSCHEIDT^JURGEN", "19551231", [], []),
    (MULLER, "Müller-Lüdenscheidt^Jürgen^Karl", "19551231", [], []),
    (MULLER, "MULLER^JURGEN", "19551231", ["name"], []),
    # a character the node could not keep (U+FFFD; NUL or a lone surrogate from an older node) may be a letter
    (JANE, "DOE\ufffd^JANE", "19700101", ["name"], []),
    (JANE, "DOE^JANE\ufffd", "19700101", ["name"], []),
    (JANE, "JANE DOE\x00", "19700101", ["name"], []),
    (JANE, "DOE\ud800^JANE", "19700101", ["name"], []),
    (JANE, "\ufffd", "19700101", ["name"], []),
]


def test_the_server_rule_answers_the_table():
    for patient, name, born, differs, unknown in CASES:
        found = compare_patients(patient["first_name"], patient["last_name"], patient["birth_date"], name, born)
        assert (found.differs, found.unknown) == (differs, unknown), (patient, name, born)


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed: identity.js cannot be run here")
def test_identity_js_answers_the_same_table(tmp_path):
    script = tmp_path / "compare.mjs"
    script.write_text(
        "const { comparePatients } = await import(process.argv[2]);\n"
        "const cases = JSON.parse(process.argv[3]);\n"
        "console.log(JSON.stringify(cases.map(([p, name, born]) =>"
        " comparePatients(p, { patient_name: name, patient_birth_date: born }))));\n")
    table = json.dumps([[p, name, born] for p, name, born, _, _ in CASES])
    out = subprocess.run(["node", str(script), IDENTITY_JS.as_uri(), table],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    answers = json.loads(out)
    assert [(a["differs"], a["unknown"]) for a in answers] == [(c[3], c[4]) for c in CASES]
