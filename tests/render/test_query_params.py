"""Image query parameters mean the same at frames, MPR and 3D (declared once: daemons.render.api.query),
and the OpenAPI document lists them from the same declarations."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from daemons.render.api import query
from tests.render.synthetic import dataset, to_bytes

SLICES = 4


@pytest.fixture
def record_id(node) -> str:
    files = []
    for i in range(SLICES):
        ds = dataset(16, 16, position=float(i))
        ds.PixelSpacing = [1.0, 1.0]
        files.append((f"{i}.dcm", to_bytes(ds)))
    reply = node.upload(files)
    assert reply.status_code == 201, reply.json
    node.client.post(f"/api/v1/records/{reply.json['id']}/load", headers=node.headers())
    assert node.registry.get_loaded(reply.json["id"]).wait_complete(30)
    return reply.json["id"]


ENDPOINTS = ["frames/1", "mpr/axial/1", "volume"]


def _get(node, record_id: str, path: str, params: str):
    return node.client.get(f"/api/v1/records/{record_id}/{path}?{params}", headers=node.headers())


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("params, status, mimetype", [
    ("format=jpg", 200, "image/jpeg"),
    ("format=JPEG", 200, "image/jpeg"),
    ("size=64X48", 200, None),
    ("window=40,1e10", 400, None),
    ("window=1e10,400", 400, None),
    ("window=40,400&voi_function=cubic", 400, None),
    ("format=bmp", 400, None),
    ("format=jpeg&quality=50", 200, "image/jpeg"),  # the encoder's quality, for 3D too
    ("quality=0", 400, None),
    ("quality=interactive", 400, None),
    ("size=0x10", 400, None),
    ("invert=maybe", 400, None),
    ("invert=true&format=png", 200, "image/png"),
])
def test_image_parameters_mean_the_same_everywhere(node, record_id, path, params, status, mimetype):
    reply = _get(node, record_id, path, params)
    assert reply.status_code == status, (path, params, reply.json)
    if status == 400:
        assert reply.json["error"]["code"] == "validation_error"
    if mimetype:
        assert reply.mimetype == mimetype


@pytest.mark.parametrize("mode", query.VOLUME_MODES)
@pytest.mark.parametrize("window", ["garbage", "40", "40,1e10"])
def test_a_malformed_window_is_refused_by_3d_views_in_every_mode(node, record_id, mode, window):
    """DVR does not use the window, but a malformed one is still bad input, as in the projections."""
    reply = _get(node, record_id, "volume", f"mode={mode}&window={window}")
    assert reply.status_code == 400 and reply.json["error"]["code"] == "validation_error", (mode, reply.json)


def test_dvr_takes_a_well_formed_window_and_its_own_presets(node, record_id):
    """A transfer-function preset that names no window (`ct_angio`) is DVR's `preset`, not a window's."""
    for params in ("mode=dvr&window=40,400", "mode=dvr&preset=ct_angio", "mode=dvr&preset=ct_angio&window=40,400"):
        assert _get(node, record_id, "volume", params).status_code == 200, params


@pytest.mark.parametrize("path", ["mpr/axial/1", "volume"])
def test_overlays_are_a_frames_parameter_only(node, record_id, path):
    """Overlay planes belong to stored frames: reformats and 3D views do not declare `overlays` and,
    as any undeclared parameter, ignore it (frames refuse a bad value of it)."""
    assert query.OVERLAYS in query.FRAME_PARAMS
    assert query.OVERLAYS not in query.MPR_PARAMS and query.OVERLAYS not in query.VOLUME_PARAMS
    assert _get(node, record_id, "frames/1", "overlays=yes").status_code == 400
    plain = _get(node, record_id, path, "format=png")
    assert plain.status_code == 200
    assert _get(node, record_id, path, "format=png&overlays=yes").data == plain.data


@pytest.mark.parametrize("path", ["frames/1", "mpr/axial/1"])
@pytest.mark.parametrize("region", ["0,0,1", "0,0,1,1,1", "0.5,0,0.5,1", "a,b,c,d"])
def test_a_malformed_region_is_refused_by_frames_and_reformats(node, record_id, path, region):
    reply = _get(node, record_id, path, f"region={region}")
    assert reply.status_code == 400 and reply.json["error"]["code"] == "validation_error"


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("params", [
    "quality=\u0665\u0660",  # Arabic-Indic 50: int() reads it
    "window=\u0664\u0660,400",  # float() too
    "window=40,4_00",  # and digit separators
    "size=\uff16\uff14x48",  # fullwidth 64: `\\d` matches it
    "window=nan,400",
    "window=40,inf",
])
def test_numbers_are_ascii_digits_only(node, record_id, path, params):
    """A number another script writes (or with `_` separators) is refused, not served as the
    number Python reads in it: the access log and the image cache key would show another value."""
    reply = _get(node, record_id, path, params)
    assert reply.status_code == 400 and reply.json["error"]["code"] == "validation_error", (params, reply.json)


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("params", ["window=40,400&window=nan,1", "format=png&format=png", "size=8x8&size=64x64",
                                    "invert=true&invert=false", "quality=50&quality=0"])
def test_a_parameter_given_twice_is_refused(node, record_id, path, params):
    """One value per parameter: the first of two was used and the second, even malformed, went unread."""
    reply = _get(node, record_id, path, params)
    assert reply.status_code == 400 and reply.json["error"]["code"] == "validation_error", (params, reply.json)
    name = params.split("=")[0]
    assert f"query parameter {name} is given 2 times" in reply.json["error"]["message"]


def test_a_dicomweb_rendered_parameter_given_twice_is_refused(node, record_id):
    """The rendered resources read their parameters through the same declarations (`query.Param`)."""
    uids = node.client.get("/dicomweb/instances?limit=1", headers=node.headers("sysadmin")).json[0]
    study, series, sop = (uids[tag]["Value"][0] for tag in ("0020000D", "0020000E", "00080018"))
    reply = node.client.get(f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/rendered"
                            "?viewport=8,8&viewport=100000,1", headers=node.headers())
    assert reply.status_code == 400 and "viewport is given 2 times" in reply.json["error"]["message"], reply.json


def test_a_window_may_have_spaces_after_its_comma(node, record_id):
    assert _get(node, record_id, "frames/1", "window=40,%20400&format=png").status_code == 200


@pytest.mark.parametrize("path", ["frames/\u0661", "mpr/axial/\u0661", "frames/\uff11/value?x=1&y=1"])
def test_an_index_in_the_path_is_ascii_digits_only(node, record_id, path):
    """`/frames/١` (Arabic-Indic 1) names no frame: werkzeug's own int converter matched it as 1."""
    reply = node.client.get(f"/api/v1/records/{record_id}/{path}", headers=node.headers())
    assert reply.status_code == 404 and reply.json["error"]["code"] == "not_found", reply.json


@pytest.mark.parametrize("path", [f"frames/{SLICES}", "frames/-1", f"mpr/axial/{SLICES}", "mpr/axial/-1"])
def test_an_index_outside_the_record_is_not_found_for_frames_and_reformats(node, record_id, path):
    reply = _get(node, record_id, path, "")
    assert reply.status_code == 404 and reply.json["error"]["code"] == "not_found"
    assert f"0..{SLICES - 1}" in reply.json["error"]["message"]


def test_frame_and_axial_reformat_agree_on_shared_parameters(node, record_id):
    params = "window=0,300&voi_function=sigmoid&size=32x32&region=0.25,0.25,0.75,0.75&format=png"
    frame = _get(node, record_id, "frames/2", params)
    mpr = _get(node, record_id, "mpr/axial/2", params)
    assert frame.status_code == mpr.status_code == 200
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(frame.data))),
                                  np.asarray(Image.open(io.BytesIO(mpr.data))))


@pytest.mark.parametrize("path", ENDPOINTS)
def test_invert_turns_the_display_values_over(node, record_id, path):
    """The viewer's Invert tool is rendered by the node: 255 - value of the same image, pixel for
    pixel, for frames, reformats and 3D (one declaration, daemons.render.api.query.INVERT)."""
    params = "window=0,300&size=32x32&format=png"
    plain = _get(node, record_id, path, params)
    flipped = _get(node, record_id, path, params + "&invert=true")
    assert plain.status_code == flipped.status_code == 200
    assert plain.headers["ETag"] != flipped.headers["ETag"]
    a = np.asarray(Image.open(io.BytesIO(plain.data))).astype(int)
    b = np.asarray(Image.open(io.BytesIO(flipped.data))).astype(int)
    assert a.std() > 0
    np.testing.assert_array_equal(b, 255 - a)


def test_the_openapi_parameters_are_the_declared_ones(node):
    paths = node.client.get("/api/v1/openapi.json").json["paths"]
    documented = {
        "frames": paths["/api/v1/records/{id}/frames/{index}"]["get"]["parameters"],
        "mpr": paths["/api/v1/records/{id}/mpr/{plane}/{index}"]["get"]["parameters"],
        "volume": paths["/api/v1/records/{id}/volume"]["get"]["parameters"],
    }
    declared = {"frames": query.FRAME_PARAMS, "mpr": query.MPR_PARAMS, "volume": query.VOLUME_PARAMS}
    for name, params in declared.items():
        assert documented[name] == [p.openapi() for p in params]
    shared = ("window", "voi_function", "format", "size")
    for key in shared:
        schemas = [next(p for p in documented[n] if p["name"] == key) for n in documented]
        assert all(s == schemas[0] for s in schemas), key


@pytest.mark.parametrize("kind", ["instance", "mpr/axial/1", "volume"])
def test_dicomweb_rendered_resources_invert_as_the_viewer_api_does(node, record_id, kind):
    """The same `invert` declaration at the DICOMweb rendered resources: 255 - value, 400 when bad."""
    meta = node.client.get(f"/api/v1/records/{record_id}", headers=node.headers()).json
    base = f"/dicomweb/studies/{meta['study_uid']}/series/{meta['series_uid']}"
    url = (f"{base}/instances/{meta['slices'][1]['sop_instance_uid']}/rendered" if kind == "instance"
           else f"{base}/rendered/{kind}")
    params = "accept=image/png&window=0,300,linear&viewport=32,32"
    plain = node.client.get(f"{url}?{params}", headers=node.headers())
    flipped = node.client.get(f"{url}?{params}&invert=true", headers=node.headers())
    assert plain.status_code == flipped.status_code == 200, flipped.data[:300]
    a = np.asarray(Image.open(io.BytesIO(plain.data))).astype(int)
    b = np.asarray(Image.open(io.BytesIO(flipped.data))).astype(int)
    assert a.std() > 0
    np.testing.assert_array_equal(b, 255 - a)
    bad = node.client.get(f"{url}?{params}&invert=maybe", headers=node.headers())
    assert bad.status_code == 400 and bad.json["error"]["code"] == "validation_error"
