"""DICOMweb rendered resources, thumbnails and SIVR's MPR/3D extensions (issue 12).

Two halves: the node app in-process (Flask test client, real store and SQLite) for every
parameter rule, and the real daemons (gunicorn + TLS) with `dicomweb-client` for the client calls.
Either way the pixels of a rendered resource must equal the node's own
`/api/v1/records/{id}/frames/{i}` (or `/mpr`, `/volume`) output for the same window and size.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from PIL import Image
from pydicom.uid import generate_uid

from shared.tokens import generate_signing_keypair
from tests.render.conftest import NodeHarness, build_node, close_node
from tests.render.synthetic import as_new_series

REPO = Path(__file__).resolve().parents[2]
DEMO_CT = REPO / "demo_data" / "ct-chest-100"
FILES = 24  # enough for reformats, quick to upload


def _pixels(body: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(body)))


def _demo_files() -> list[Path]:
    files = sorted(DEMO_CT.glob("*.dcm"))
    if not files:
        pytest.skip(f"the demo CT is missing from {DEMO_CT}")
    return files[:FILES]


class Uids:
    """The study, series and instances (by record frame) of an uploaded demo series."""

    def __init__(self, record: dict, files: list[Path]):
        self.record_id = record["id"]
        headers = {}
        for path in files:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            headers[int(ds.InstanceNumber)] = ds
        first = next(iter(headers.values()))
        self.study, self.series = first.StudyInstanceUID, first.SeriesInstanceUID
        # record frame i -> SOP Instance UID, from the node's slice list (position order)
        self.by_frame = [headers[s["instance"]].SOPInstanceUID for s in record["slices"]]
        numbers = [s["instance"] for s in record["slices"]]
        ordered = sorted(numbers)  # the catalogue's instance order (InstanceNumber)
        self.first_instance_frame = numbers.index(ordered[0])
        self.middle_instance_frame = numbers.index(ordered[(len(ordered) - 1) // 2])

    @property
    def base(self) -> str:
        return f"/studies/{self.study}/series/{self.series}"

    def instance(self, frame: int) -> str:
        return f"{self.base}/instances/{self.by_frame[frame]}"


# --- in-process: parameters, media types, errors -------------------------------------------------

@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> tuple[NodeHarness, Uids]:
    """One node with the demo series stored, shared by the module's in-process tests."""
    root = tmp_path_factory.mktemp("dicomweb-rendered")
    keys = root / "token.pem", root / "token.pub"
    generate_signing_keypair(*keys)
    harness = build_node(root, keys)
    files = _demo_files()
    created = harness.upload(files)
    assert created.status_code in (200, 201), created.get_data(as_text=True)
    record_id = created.get_json()["id"]
    record = harness.client.get(f"/api/v1/records/{record_id}", headers=harness.headers()).get_json()
    yield harness, Uids(record, files)
    close_node(harness)


@pytest.fixture
def ct(stored) -> tuple[NodeHarness, Uids]:
    return stored


def _get(node: NodeHarness, path: str, media: str | None = None, **params):
    headers = node.headers()
    if media is not None:
        headers["Accept"] = media
    return node.client.get(path, query_string=params, headers=headers)


def _native(node: NodeHarness, uids: Uids, frame: int, **params) -> np.ndarray:
    reply = _get(node, f"/api/v1/records/{uids.record_id}/frames/{frame}", format="png", **params)
    assert reply.status_code == 200, reply.get_data(as_text=True)
    return _pixels(reply.get_data())


def test_rendered_instance_loads_on_demand_and_equals_the_frame_api(ct):
    node, uids = ct
    node.registry.unload(uids.record_id)  # a DICOMweb client never POSTs /load
    reply = _get(node, f"/dicomweb{uids.instance(5)}/rendered", "image/png")
    assert reply.status_code == 200 and reply.mimetype == "image/png"
    assert np.array_equal(_pixels(reply.get_data()), _native(node, uids, 5))
    assert reply.headers["X-Window"]  # the frame's own default window, as the frame API says


@pytest.mark.parametrize(("dicomweb", "function"), [("linear", "linear"), ("linear-exact", "linear_exact"),
                                                    ("sigmoid", "sigmoid")])
def test_window_functions_map_to_the_voi_functions(ct, dicomweb, function):
    node, uids = ct
    reply = _get(node, f"/dicomweb{uids.instance(3)}/frames/1/rendered", "image/png",
                 window=f"40,400,{dicomweb}")
    assert reply.status_code == 200
    assert np.array_equal(_pixels(reply.get_data()),
                          _native(node, uids, 3, window="40,400", voi_function=function))


def test_viewport_crop_size_and_flip(ct):
    node, uids = ct
    plain = _get(node, f"/dicomweb{uids.instance(2)}/rendered", "image/png", viewport="256,256")
    assert _pixels(plain.get_data()).shape == (256, 256)
    assert np.array_equal(_pixels(plain.get_data()), _native(node, uids, 2, size="256x256"))
    crop = _get(node, f"/dicomweb{uids.instance(2)}/rendered", "image/png", viewport="128,128,128,0,256,256")
    expected = _native(node, uids, 2, size="128x128", region="0.25,0,0.75,0.5")
    assert np.array_equal(_pixels(crop.get_data()), expected)
    flipped = _get(node, f"/dicomweb{uids.instance(2)}/rendered", "image/png", viewport="128,128,128,0,-256,256")
    assert np.array_equal(_pixels(flipped.get_data()), expected[:, ::-1])
    assert flipped.headers["ETag"] != crop.headers["ETag"]
    to_edge = _get(node, f"/dicomweb{uids.instance(2)}/rendered", "image/png", viewport="128,128,256,256,,")
    assert np.array_equal(_pixels(to_edge.get_data()),
                          _native(node, uids, 2, size="128x128", region="0.5,0.5,1,1"))


def test_media_types_by_accept_and_the_accept_parameter(ct):
    node, uids = ct
    path = f"/dicomweb{uids.instance(1)}/rendered"
    assert _get(node, path).mimetype == "image/jpeg"  # the standard's default
    assert _get(node, path, "image/*").mimetype == "image/jpeg"
    assert _get(node, path, "image/webp").mimetype == "image/webp"
    assert _get(node, path, "image/jp2;q=0.9, image/png").mimetype == "image/png"
    gif = _get(node, path, "image/gif")
    assert gif.mimetype == "image/gif" and gif.get_data()[:4] == b"GIF8"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(gif.get_data())).convert("L")),
                          _pixels(_get(node, path, "image/png").get_data()))  # lossless for grey
    assert _get(node, path, "image/jpeg", accept="image/png").mimetype == "image/png"
    jpeg = _get(node, path, "image/jpeg", quality="20").get_data()
    assert len(jpeg) < len(_get(node, path, "image/jpeg", quality="95").get_data())
    for refused in ("application/dicom", "image/png;q=0", "text/html"):
        reply = _get(node, path, refused)
        assert reply.status_code == 406 and reply.get_json()["error"]["code"] == "not_acceptable"


def _multiframe_instance(node: NodeHarness, frames: int = 4) -> str:
    """The DICOMweb path of a new synthetic instance of `frames` 4x4 frames, each of its own values."""
    from tests.render.synthetic import dataset, to_bytes

    ds = dataset(4, 4, series=generate_uid(), pixels=False)
    ds.StudyInstanceUID = generate_uid()
    ds.NumberOfFrames = frames
    ds.PixelData = np.arange(frames * 16, dtype=np.int16).tobytes()
    assert node.upload([("multiframe.dcm", to_bytes(ds))]).status_code == 201
    return f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def test_several_frames_are_multipart(ct):
    node, _ = ct
    instance = _multiframe_instance(node)
    path = f"{instance}/frames/3,1/rendered"
    refused = _get(node, path, "image/png")
    assert refused.status_code == 406 and "multipart/related" in refused.get_json()["error"]["message"]
    reply = _get(node, path, 'multipart/related; type="image/png"')
    assert reply.status_code == 200 and reply.mimetype == "multipart/related"
    parts = _multipart(reply.headers["Content-Type"], reply.get_data())
    assert [p[0] for p in parts] == ["image/png", "image/png"]
    for (_, body), frame in zip(parts, (3, 1), strict=True):
        assert np.array_equal(_pixels(body), _pixels(_get(node, f"{instance}/frames/{frame}/rendered", "image/png")
                                                     .get_data()))


def test_a_frame_listed_twice_is_400_on_every_frames_resource(ct):
    """A 4 kB path of `1,1,1,...` asked for 1,800 copies of one rendered 2048x2048 frame: 2.4 GB of
    answer for one request. PS3.18 frame lists name each frame once."""
    node, _ = ct
    instance = _multiframe_instance(node)
    for resource, media in (("/rendered", 'multipart/related; type="image/png"'), ("/thumbnail", "image/png"),
                            ("", "multipart/related; type=application/octet-stream")):
        reply = _get(node, f"{instance}/frames/1,2,1{resource}", media)
        assert reply.status_code == 400, (resource, reply.status_code)
        error = reply.get_json()["error"]
        assert error["code"] == "validation_error" and "frame 1 more than once" in error["message"]


def test_a_multipart_answer_of_more_pixels_than_its_budget_is_400_before_rendering(ct, monkeypatch):
    """A series at viewport=2048,2048 was 128 MB of PNG and 5 s of a worker per request, a study of
    long series minutes: the pixels a multipart answer may render are bounded, counted before any."""
    from daemons.render.dicomweb import rendered

    node, uids = ct
    multipart = 'multipart/related; type="image/jpeg"'
    monkeypatch.setattr(rendered, "MAX_MULTIPART_PX", FILES * 64 * 64)
    fits = _get(node, f"/dicomweb{uids.base}/rendered", multipart, viewport="64,64")
    assert fits.status_code == 200 and len(_multipart(fits.headers["Content-Type"], fits.get_data())) == FILES
    for path, params in ((f"{uids.base}/rendered", {"viewport": "64,65"}),
                         (f"/studies/{uids.study}/rendered", {"viewport": "128,128"}),
                         (f"{uids.base}/rendered", {})):  # without a viewport: each frame at its 512x512
        reply = _get(node, f"/dicomweb{path}", multipart, **params)
        assert reply.status_code == 400, (path, params, reply.status_code)
        error = reply.get_json()["error"]
        assert error["code"] == "validation_error" and "multipart answer" in error["message"]
        assert f"{FILES} images" in error["message"]
    one = _get(node, f"/dicomweb{uids.base}/rendered", "image/jpeg", viewport="2048,2048")
    assert one.status_code == 200  # one image is no multipart answer


def _multipart(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    boundary = content_type.split("boundary=")[1].split(";")[0].strip('"').encode()
    parts = []
    for chunk in body.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, payload = chunk.partition(b"\r\n\r\n")
        kind = next(line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-type"))
        parts.append((kind, payload[:-2]))
    return parts


def test_series_and_study_rendered_and_multipart(ct):
    node, uids = ct
    series = _get(node, f"/dicomweb{uids.base}/rendered", "image/png")
    study = _get(node, f"/dicomweb/studies/{uids.study}/rendered", "image/png")
    assert series.status_code == study.status_code == 200
    assert np.array_equal(_pixels(series.get_data()), _pixels(study.get_data()))
    assert np.array_equal(_pixels(series.get_data()), _native(node, uids, uids.first_instance_frame))
    everything = _get(node, f"/dicomweb{uids.base}/rendered", 'multipart/related; type="image/jpeg"')
    parts = _multipart(everything.headers["Content-Type"], everything.get_data())
    assert len(parts) == FILES and {p[0] for p in parts} == {"image/jpeg"}


def test_thumbnails_are_small_middle_frames(ct):
    node, uids = ct
    series = _get(node, f"/dicomweb{uids.base}/thumbnail", "image/png")
    assert series.status_code == 200
    image = _pixels(series.get_data())
    assert max(image.shape) == 128
    assert np.array_equal(image, _native(node, uids, uids.middle_instance_frame, size="128x128"))
    for path in (f"/dicomweb/studies/{uids.study}/thumbnail", f"/dicomweb{uids.instance(4)}/thumbnail",
                 f"/dicomweb{uids.instance(4)}/frames/1/thumbnail"):
        reply = _get(node, path, viewport="64,64")
        assert reply.status_code == 200 and reply.mimetype == "image/jpeg"
        assert max(_pixels(reply.get_data()).shape) == 64
    frame = _get(node, f"/dicomweb{uids.instance(4)}/frames/1/thumbnail", "image/png")
    assert np.array_equal(_pixels(frame.get_data()), _native(node, uids, 4, size="128x128"))


def test_annotation_burns_text_into_the_corners_only(ct):
    node, uids = ct
    plain = _pixels(_get(node, f"/dicomweb{uids.instance(6)}/rendered", "image/png").get_data())
    noted = _pixels(_get(node, f"/dicomweb{uids.instance(6)}/rendered", "image/png",
                         annotation="patient,technique").get_data())
    changed = np.argwhere(plain != noted)
    assert len(changed) > 100
    rows = changed[:, 0]
    assert ((rows < 128) | (rows > 512 - 128)).all()  # top (patient) and bottom (technique) bands
    assert (changed[:, 1] < 400).all()  # left-aligned


@pytest.mark.parametrize(("params", "named"), [
    ({"window": "40,400"}, "window"), ({"window": "40,0,linear"}, "window"), ({"window": "a,b,linear"}, "window"),
    ({"window": "40,400,cubic"}, "window"), ({"window": "40,1e12,linear"}, "window"),
    ({"viewport": "0,1"}, "viewport"), ({"viewport": "10"}, "viewport"), ({"viewport": "10,10,-1,0,5,5"}, "viewport"),
    ({"viewport": "100,100,600,0,5,5"}, "viewport"), ({"viewport": "9999999,10"}, "viewport"),
    ({"quality": "0"}, "quality"), ({"quality": "high"}, "quality"), ({"annotation": "everything"}, "annotation"),
])
def test_bad_parameters_are_400_naming_the_parameter(ct, params, named):
    node, uids = ct
    reply = _get(node, f"/dicomweb{uids.instance(0)}/rendered", **params)
    assert reply.status_code == 400, reply.get_data(as_text=True)
    error = reply.get_json()["error"]
    assert error["code"] == "validation_error" and named in error["message"]


@pytest.mark.parametrize("frames", ["0", "a", "1,,2", "-1", "1;2"])
def test_bad_frame_lists_are_400(ct, frames):
    node, uids = ct
    reply = _get(node, f"/dicomweb{uids.instance(0)}/frames/{frames}/rendered")
    assert reply.status_code == 400 and "frame list" in reply.get_json()["error"]["message"]


def test_unknown_uids_and_frames_are_404(ct):
    node, uids = ct
    for path in ("/studies/1.2.3/rendered", f"/studies/{uids.study}/series/1.2.3/thumbnail",
                 f"{uids.base}/instances/1.2.3/rendered", f"{uids.instance(0)}/frames/2/rendered",
                 "/studies/1.2.3/series/1.2.4/rendered/mpr/axial/0", f"{uids.base}/rendered/mpr/axial/{FILES}"):
        reply = _get(node, f"/dicomweb{path}")
        assert reply.status_code == 404 and reply.get_json()["error"]["code"] == "not_found", path


def test_rendered_needs_a_token(ct):
    node, uids = ct
    assert node.client.get(f"/dicomweb{uids.instance(0)}/rendered").status_code == 401


def test_mpr_and_volume_extensions_equal_the_node_api(ct):
    node, uids = ct
    ext = _get(node, f"/dicomweb{uids.base}/rendered/mpr/coronal/256", "image/png",
               window="40,400,linear", viewport="256,256", slab="5", slab_mode="mip")
    assert ext.status_code == 200, ext.get_data(as_text=True)
    own = _get(node, f"/api/v1/records/{uids.record_id}/mpr/coronal/256", format="png", window="40,400",
               size="256x256", slab="5", slab_mode="mip")
    assert np.array_equal(_pixels(ext.get_data()), _pixels(own.get_data()))
    axial = _get(node, f"/dicomweb{uids.base}/rendered/mpr/axial/3", "image/png", window="40,400,sigmoid")
    assert np.array_equal(_pixels(axial.get_data()),
                          _native(node, uids, 3, window="40,400", voi_function="sigmoid"))
    volume = _get(node, f"/dicomweb{uids.base}/rendered/volume", "image/png", mode="mip", azimuth="30",
                  viewport="200,160", window="300,1500,linear")
    assert volume.status_code == 200, volume.get_data(as_text=True)
    own_volume = _get(node, f"/api/v1/records/{uids.record_id}/volume", format="png", mode="mip", azimuth="30",
                      size="200x160", window="300,1500")
    assert np.array_equal(_pixels(volume.get_data()), _pixels(own_volume.get_data()))
    dvr = _get(node, f"/dicomweb{uids.base}/rendered/volume", mode="dvr", viewport="128,128")
    assert dvr.status_code == 200 and dvr.mimetype == "image/jpeg"


@pytest.mark.parametrize(("path", "params", "named"), [
    ("rendered/mpr/oblique/1", {}, "plane"), ("rendered/mpr/axial/1", {"slab": "-1"}, "slab"),
    ("rendered/mpr/axial/1", {"annotation": "patient"}, "annotation"),
    ("rendered/volume", {"viewport": "100,100,0,0,10,10"}, "viewport"),
    ("rendered/volume", {"mode": "xray"}, "mode"), ("rendered/volume", {"zoom": "100"}, "zoom"),
])
def test_extension_bad_parameters_are_400(ct, path, params, named):
    node, uids = ct
    reply = _get(node, f"/dicomweb{uids.base}/{path}", **params)
    assert reply.status_code == 400, reply.get_data(as_text=True)
    assert named in reply.get_json()["error"]["message"]


def test_extension_refuses_multipart_only(ct):
    node, uids = ct
    reply = _get(node, f"/dicomweb{uids.base}/rendered/volume", 'multipart/related; type="image/png"')
    assert reply.status_code == 406


# --- the real daemons and dicomweb-client ------------------------------------------------------

@pytest.fixture(scope="module")
def served(deployment, tmp_path_factory):
    """(dicomweb-client, the physician's ApiClient, node URL, Uids) of the demo CT on the real node."""
    from dicomweb_client import DICOMwebClient

    from daemons.demo import upload_record

    if not any(i.layer == "render" for i in deployment.instances):
        pytest.skip("the render layer is not available in this build")
    client = deployment.client("physician")
    url = deployment.url("render-1-1")
    files = as_new_series(_demo_files(), tmp_path_factory.mktemp("rendered-series"))
    meta = upload_record(client, url, files)
    record = client.call("GET", f"{url}/api/v1/records/{meta['id']}").json()
    web = DICOMwebClient(url=f"{url}/dicomweb", headers={"Authorization": f"Bearer {client.token_for(url)}"})
    web._session.trust_env = False
    web._session.verify = deployment.ca_cert
    return web, client, url, Uids(record, files)


def _node_png(client, url: str, path: str, **params) -> np.ndarray:
    return _pixels(client.call("GET", f"{url}/api/v1/records/{path}", params={"format": "png", **params}).content)


@pytest.mark.slow
def test_dicomweb_client_rendered_instance_and_frames(served):
    web, client, url, uids = served
    sop = uids.by_frame[7]
    png = web.retrieve_instance_rendered(uids.study, uids.series, sop, media_types=("image/png",),
                                         params={"window": "40,400,linear", "viewport": "256,256"})
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.array_equal(_pixels(png), _node_png(client, url, f"{uids.record_id}/frames/7",
                                                  window="40,400", size="256x256"))
    jpeg = web.retrieve_instance_frames_rendered(uids.study, uids.series, sop, [1], media_types=("image/jpeg",),
                                                 params={"quality": 90})
    assert jpeg[:3] == b"\xff\xd8\xff"
    exact = web.retrieve_instance_frames_rendered(uids.study, uids.series, sop, [1], media_types=("image/png",),
                                                  params={"window": "-600,1500,linear-exact"})
    assert np.array_equal(_pixels(exact), _node_png(client, url, f"{uids.record_id}/frames/7", window="-600,1500",
                                                    voi_function="linear_exact"))
    series = web.retrieve_series_rendered(uids.study, uids.series, media_types=("image/png",))
    assert _pixels(series).ndim == 2


@pytest.mark.slow
def test_dicomweb_client_thumbnails_study_and_bad_input_over_tls(served):
    web, client, url, uids = served
    session = web._session
    for path in (f"/studies/{uids.study}/rendered", f"/studies/{uids.study}/thumbnail",
                 f"{uids.base}/thumbnail", f"{uids.instance(3)}/thumbnail", f"{uids.instance(3)}/frames/1/thumbnail"):
        reply = session.get(f"{url}/dicomweb{path}", headers={"Accept": "image/png"}, timeout=60)
        assert reply.status_code == 200 and reply.headers["Content-Type"] == "image/png", path
    thumb = session.get(f"{url}/dicomweb{uids.instance(3)}/frames/1/thumbnail", headers={"Accept": "image/png"},
                        timeout=60)
    assert np.array_equal(_pixels(thumb.content), _node_png(client, url, f"{uids.record_id}/frames/3",
                                                            size="128x128"))
    with pytest.raises(requests.HTTPError) as bad:
        web.retrieve_instance_rendered(uids.study, uids.series, uids.by_frame[0], media_types=("image/png",),
                                       params={"window": "40,400"})
    assert bad.value.response.status_code == 400
    assert bad.value.response.json()["error"]["code"] == "validation_error"
    with pytest.raises(requests.HTTPError) as missing:
        web.retrieve_instance_rendered(uids.study, uids.series, "1.2.3.4", media_types=("image/png",))
    assert missing.value.response.status_code == 404


@pytest.mark.slow
def test_dicomweb_mpr_and_volume_extensions_over_tls(served):
    web, client, url, uids = served
    session = web._session
    mpr = session.get(f"{url}/dicomweb{uids.base}/rendered/mpr/sagittal/250",
                      params={"window": "40,400,linear", "slab": "10", "slab_mode": "mip"},
                      headers={"Accept": "image/png"}, timeout=120)
    assert mpr.status_code == 200, mpr.text
    assert np.array_equal(_pixels(mpr.content), _node_png(client, url, f"{uids.record_id}/mpr/sagittal/250",
                                                          window="40,400", slab="10", slab_mode="mip"))
    volume = session.get(f"{url}/dicomweb{uids.base}/rendered/volume",
                         params={"mode": "minip", "elevation": "20", "viewport": "160,160"},
                         headers={"Accept": "image/png"}, timeout=120)
    assert volume.status_code == 200, volume.text
    assert np.array_equal(_pixels(volume.content), _node_png(client, url, f"{uids.record_id}/volume", mode="minip",
                                                             elevation="20", size="160x160"))


def test_openapi_documents_the_rendered_routes_with_the_declared_parameters(ct):
    import re

    from daemons.render.api import query

    node, _ = ct
    paths = node.client.get("/api/v1/openapi.json").get_json()["paths"]
    routes = {re.sub(r"<[^>]+>", "{}", rule.rule) for rule in node.app.url_map.iter_rules()
              if rule.endpoint.startswith("dicomweb.") and rule.endpoint.split(".")[1] in {
                  "study_rendered", "series_rendered", "instance_rendered", "frames_rendered", "study_thumbnail",
                  "series_thumbnail", "instance_thumbnail", "frames_thumbnail", "series_mpr", "series_volume"}}
    assert len(routes) == 10
    assert routes <= {re.sub(r"\{[^}]+\}", "{}", path) for path in paths}
    instance = "/dicomweb/studies/{study}/series/{series}/instances/{instance}"
    assert paths[f"{instance}/rendered"]["get"]["parameters"] == [p.openapi() for p in query.RENDERED_PARAMS]
    assert paths[f"{instance}/thumbnail"]["get"]["parameters"] == [p.openapi() for p in query.THUMBNAIL_PARAMS]
    volume = paths["/dicomweb/studies/{study}/series/{series}/rendered/volume"]["get"]["parameters"]
    assert volume == [p.openapi() for p in query.RENDERED_VOLUME_PARAMS]


def test_rendered_images_are_counted_in_the_view_audit(ct):
    import json
    import uuid

    node, uids = ct
    reader = str(uuid.uuid4())
    headers = node.headers(user_id=reader)
    for path in (f"{uids.instance(0)}/rendered", f"{uids.base}/thumbnail", f"{uids.base}/rendered/mpr/axial/1"):
        assert node.client.get(f"/dicomweb{path}", headers=headers).status_code == 200
    node.app.extensions["sivr_view_audit"].flush()
    reply = node.client.get("/api/v1/audit", headers=node.headers(role="instadmin"),
                            query_string={"action": "record.view", "user_id": reader})
    [entry] = reply.get_json()["items"]
    detail = json.loads(entry["detail"])
    assert entry["object_id"] == uids.record_id and detail["frame"] == 2 and detail["mpr"] == 1


def test_frames_the_upload_found_short_are_422_in_dicom_numbering(ct):
    from tests.render.synthetic import dataset, to_bytes

    node, _ = ct
    ds = dataset(4, 4, pixels=False)
    ds.NumberOfFrames = 4
    ds.PixelData = np.arange(4 * 16, dtype=np.int16)[: 2 * 16 + 4].tobytes()  # frames 3 and 4 cut
    assert node.upload([("short.dcm", to_bytes(ds))]).status_code == 201
    instance = f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    assert _get(node, f"{instance}/frames/2/rendered").status_code == 200
    single = _get(node, f"{instance}/frames/3/rendered")
    assert single.status_code == 422 and single.get_json()["error"]["code"] == "frame_error"
    assert "frame 3 of instance" in single.get_json()["error"]["message"]
    several = _get(node, f"{instance}/frames/1,2,4/rendered", 'multipart/related; type="image/png"')
    assert several.status_code == 422 and "frame 4 of instance" in several.get_json()["error"]["message"]
    good = _get(node, f"{instance}/frames/1,2/rendered", 'multipart/related; type="image/png"')
    assert len(_multipart(good.headers["Content-Type"], good.get_data())) == 2


@pytest.mark.parametrize("side", [100, 333, 512, 1000])
def test_a_viewport_source_rectangle_crops_exactly_its_pixels(side):
    from daemons.render.api.query import Viewport
    from daemons.render.imaging.geometry import crop_bounds

    for sx in range(0, side, 7):
        sw = max(1, (side - sx) // 2)
        rows, cols = crop_bounds(side, side, Viewport((64, 64), (sx, sx, sw, sw)).region(side, side))
        assert (rows.start, rows.stop, cols.start, cols.stop) == (sx, sx + sw, sx, sx + sw)


def test_rendered_volume_without_a_window_takes_the_projections_default_as_the_node_api(ct):
    """One default for every door (daemons.render.api.mpr3d.Render3D.projection_window): the same
    image and the same X-Window through DICOMweb and the node's API, and not the slices' window."""
    node, uids = ct
    for mode in ("mip", "minip", "avg"):
        ext = _get(node, f"/dicomweb{uids.base}/rendered/volume", "image/png", mode=mode, viewport="160,160")
        own = _get(node, f"/api/v1/records/{uids.record_id}/volume", format="png", mode=mode, size="160x160")
        assert ext.status_code == own.status_code == 200, ext.get_data(as_text=True)
        assert ext.headers["X-Window"] == own.headers["X-Window"], mode
        assert np.array_equal(_pixels(ext.get_data()), _pixels(own.get_data())), mode
        slice_window = _get(node, f"/api/v1/records/{uids.record_id}/frames/0", format="png").headers["X-Window"]
        assert own.headers["X-Window"] != slice_window, mode


def _study_of_two_sizes(node: NodeHarness) -> str:
    """A new study of two series: 64x64 slices (SeriesNumber 1) and 16x12 ones (SeriesNumber 2)."""
    from pydicom.uid import generate_uid

    from tests.render.synthetic import stack, to_bytes

    study = generate_uid()
    for number, (rows, cols) in enumerate(((64, 64), (16, 12)), start=1):
        files = []
        for name, raw in stack((1, 0, 0, 0, 1, 0), count=3, rows=rows, cols=cols):
            ds = pydicom.dcmread(io.BytesIO(raw))
            ds.StudyInstanceUID, ds.SeriesNumber = study, number
            files.append((name, to_bytes(ds)))
        assert node.upload(files).status_code == 201
    return study


def test_a_viewport_outside_any_frame_of_a_multipart_answer_is_400_before_streaming(ct):
    """The source rectangle is checked against every frame size a multipart answer shows, before
    its 200 goes out (it used to fail inside the stream: a 200 then a broken answer)."""
    node, uids = ct
    frames = _get(node, f"{_multiframe_instance(node)}/frames/1,2/rendered", 'multipart/related; type="image/png"',
                  viewport="10,10,999999,0,1,1")
    assert frames.status_code == 400 and "viewport" in frames.get_json()["error"]["message"]
    study = _study_of_two_sizes(node)
    multipart = 'multipart/related; type="image/png"'
    inside_both = _get(node, f"/dicomweb/studies/{study}/rendered", multipart, viewport="10,10,2,0,4,4")
    assert len(_multipart(inside_both.headers["Content-Type"], inside_both.get_data())) == 6
    reply = _get(node, f"/dicomweb/studies/{study}/rendered", multipart, viewport="10,10,20,0,1,1")
    assert reply.status_code == 400, reply.status_code
    error = reply.get_json()["error"]
    assert error["code"] == "validation_error" and "12x16" in error["message"]
    first_only = _get(node, f"/dicomweb/studies/{study}/rendered", "image/png", viewport="10,10,20,0,1,1")
    assert first_only.status_code == 200  # one image: the first series' (64x64) first frame


def test_a_multipart_answer_that_fails_while_streaming_cuts_the_connection(ct, monkeypatch, caplog):
    """A frame that cannot be drawn once the 200 went out (here: not decoded in time) cuts the answer
    after the parts sent (`multipart.AnswerCut`, which gunicorn ends as a reset connection). It ended
    the answer unterminated but whole, which clients that do not look for the close delimiter
    (dicomweb-client) took as complete."""
    from daemons.render.api import frames
    from daemons.render.dicomweb.multipart import AnswerCut
    from shared.errors import ApiError

    node, uids = ct
    ready = frames.ready_frame
    calls = []

    def slow_second_frame(*args):
        calls.append(args)
        if len(calls) == 2:
            raise ApiError(409, "frame_not_ready", "still decoding")
        return ready(*args)

    monkeypatch.setattr(frames, "ready_frame", slow_second_frame)
    reply = node.client.get(f"/dicomweb{uids.base}/rendered", buffered=False,
                            headers={**node.headers(), "Accept": 'multipart/related; type="image/png"'})
    assert reply.status_code == 200
    with pytest.raises(AnswerCut):
        reply.get_data()
    assert "answer cut after 1 parts: 409 still decoding" in caplog.text


def test_rendered_volume_takes_the_node_apis_window_preset(ct):
    """`preset` names a projection's window as at /api/v1/records/{id}/volume (it was ignored, and
    an unknown name accepted); an explicit `window` still wins."""
    node, uids = ct
    ext = _get(node, f"/dicomweb{uids.base}/rendered/volume", "image/png", mode="mip", preset="ct_lung",
               viewport="160,160")
    own = _get(node, f"/api/v1/records/{uids.record_id}/volume", format="png", mode="mip", preset="ct_lung",
               size="160x160")
    assert ext.status_code == own.status_code == 200, ext.get_data(as_text=True)
    assert ext.headers["X-Window"] == own.headers["X-Window"]
    assert np.array_equal(_pixels(ext.get_data()), _pixels(own.get_data()))
    default = _get(node, f"/dicomweb{uids.base}/rendered/volume", "image/png", mode="mip", viewport="160,160")
    assert default.headers["X-Window"] != ext.headers["X-Window"]
    explicit = _get(node, f"/dicomweb{uids.base}/rendered/volume", "image/png", mode="minip", preset="ct_lung",
                    window="40,400,linear", viewport="160,160")
    assert explicit.headers["X-Window"] == _get(node, f"/api/v1/records/{uids.record_id}/volume", mode="minip",
                                                window="40,400", size="160x160").headers["X-Window"]
    unknown = _get(node, f"/dicomweb{uids.base}/rendered/volume", mode="mip", preset="nope")
    assert unknown.status_code == 400 and "preset" in unknown.get_json()["error"]["message"]

    # a malformed window is 400 in every mode, DVR too (it was parsed only for projections)
    for mode in ("dvr", "mip"):
        garbage = _get(node, f"/dicomweb{uids.base}/rendered/volume", mode=mode, window="garbage")
        assert garbage.status_code == 400 and "window" in garbage.get_json()["error"]["message"], mode
    assert _get(node, f"/dicomweb{uids.base}/rendered/volume", mode="dvr", preset="ct_angio",
                viewport="64,64").status_code == 200  # DVR's preset is its transfer function's


def test_thumbnails_declare_the_quality_they_read(ct):
    """A thumbnail's encoder quality is read from `quality` (400 when malformed), so it is declared
    with its parameters and documented in the OpenAPI document (it was read, undeclared)."""
    node, uids = ct
    thumbnail = "/dicomweb/studies/{study}/series/{series}/thumbnail"
    names = [p["name"] for p in node.client.get("/api/v1/openapi.json").get_json()["paths"][thumbnail]["get"]
             ["parameters"]]
    assert "quality" in names
    path = f"/dicomweb{uids.base}/thumbnail"
    assert len(_get(node, path, "image/jpeg", quality="10").get_data()) < len(
        _get(node, path, "image/jpeg", quality="95").get_data())
    assert _get(node, path, quality="0").status_code == 400
