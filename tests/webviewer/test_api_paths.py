"""The viewer's API paths (webviewer/static/js/api.js `apiPath`), run by Node.js: ids from servers'
answers were put into paths as they came, so an id such as `../users` or `x?y=1` named another
resource of that server, requested with the viewer's token for it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

API = Path(__file__).resolve().parents[2] / "webviewer" / "static" / "js" / "api.js"
pytestmark = pytest.mark.skipif(shutil.which("node") is None,
                                reason="Node.js is not installed: the module cannot be run")


def urls(ids: list[str], tmp_path: Path) -> list[str]:
    """What the viewer requests for record `id` on a node (or the error it refuses it with)."""
    script = tmp_path / "paths.mjs"
    script.write_text(
        "const { apiPath, buildUrl } = await import(process.argv[2]);\n"
        "const out = [];\n"
        "for (const id of JSON.parse(process.argv[3])) {\n"
        "  try { out.push(buildUrl('https://node.example:8443/', apiPath`api/v1/records/${id}/frames/${3}`)); }\n"
        "  catch (err) { out.push(`${err.code}: ${err.message}`); }\n"
        "}\n"
        "console.log(JSON.stringify(out));\n")
    done = subprocess.run(["node", str(script), API.as_uri(), json.dumps(ids)],
                          capture_output=True, text=True, check=True, timeout=60)
    return json.loads(done.stdout)


def test_an_id_from_a_server_is_one_path_segment_or_refused(tmp_path):
    record = "ab" * 32
    assert urls([record, "../../users/x", "x?y=1#z", "%2e%2e", "a b", "..", ".", ""], tmp_path) == [
        f"https://node.example:8443/api/v1/records/{record}/frames/3",
        "https://node.example:8443/api/v1/records/..%2F..%2Fusers%2Fx/frames/3",
        "https://node.example:8443/api/v1/records/x%3Fy%3D1%23z/frames/3",
        "https://node.example:8443/api/v1/records/%252e%252e/frames/3",
        "https://node.example:8443/api/v1/records/a%20b/frames/3",
        'invalid_id: not an id: ".."',
        'invalid_id: not an id: "."',
        'invalid_id: not an id: ""',
    ]
