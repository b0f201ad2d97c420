"""The MPR and volume endpoints through a Flask app that registers the real blueprint.

The node and its loaded records are stood in for by `FakeNode` and `FakeLoadedRecord`, which
implement the interfaces the blueprint declares (`VolumeNode`, `VolumeRecord`); everything else
(auth, validation, rendering, encoding, the image cache) is the real code.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import peewee
import pytest
from PIL import Image

from daemons.render.api.mpr3d import VolumeNode, VolumeRecord, bp, install_render_state, render_state, view_key
from daemons.render.imaging.image_cache import ImageCache
from daemons.render.imaging.pixels import Modality, Voi, Window
from daemons.render.imaging.webp_effort import WebpEffort
from daemons.render.node import NODE_EXTENSION
from daemons.render.settings import KEYS
from daemons.render.stacks import find_stack
from daemons.render.store.manifest import Manifest
from daemons.render.view_audit import ViewAudit
from daemons.render.view_audit import install as install_view_audit
from shared.audit import make_audit_model
from shared.config import build_config
from shared.errors import not_found
from shared.tokens import TokenIssuer, generate_signing_keypair, load_private_key
from shared.webapp import create_base_app
from tests.manifests import sample_manifest
from tests.render3d.phantom import INTERCEPT, SHAPE, SPACING, sample_phantom

RECORD = "a" * 64
USER_ID = "0b7c4f7e-3d52-4a53-9a0e-0d8f8e2b5a11"
LOADING = "b" * 64
MISSING = "c" * 64
MAX_PX = 600


@dataclass(eq=False)  # compared by identity, like the node's LoadedRecord
class FakeLoadedRecord:
    pixels: np.ndarray
    spacing: tuple[float, float, float]
    orientation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    rescale_slope: float = 1.0
    rescale_intercept: float = INTERCEPT
    frames_total: int = SHAPE[0]
    frames_ready: int = SHAPE[0]
    complete: bool = True
    default_voi: Voi | None = Window(40.0, 400.0)
    photometric: str = "MONOCHROME2"
    errors: dict[int, str] = field(default_factory=dict)
    derived_bytes: int = 0
    manifest: Manifest = field(init=False)

    def __post_init__(self):
        """The manifest of such a record, as ingest would store it."""
        frames, rows, columns = self.pixels.shape[:3]
        self.manifest = sample_manifest(frames, rows, columns, spacing=self.spacing, orientation=self.orientation,
                                        photometric=self.photometric)

    def modality(self) -> Modality:
        return Modality(self.rescale_slope, self.rescale_intercept)

    def count_copy(self, nbytes: int) -> None:
        self.derived_bytes += nbytes


class FakeRegistry:
    def __init__(self, records: dict[str, FakeLoadedRecord]):
        self.records = records

    def get_loaded(self, record_id: str) -> FakeLoadedRecord | None:
        return self.records.get(record_id)


@dataclass
class FakeNode:
    """The node as the blueprint sees it: its loaded records, its image cache, its WebP effort (the
    node's: `render.webp_method`, fast above `render.webp_busy_encodes`), its stored manifests."""

    registry: FakeRegistry
    stored: dict[str, Manifest]
    webp_effort: WebpEffort
    images: ImageCache = field(default_factory=lambda: ImageCache(8 * 2**20))

    def manifest(self, record_id: str, fresh: bool = False) -> Manifest:
        """A stored record's manifest; a record loaded is one stored (the tests load records at will)."""
        if record_id in self.stored:
            return self.stored[record_id]
        if record_id in self.registry.records:
            return self.registry.records[record_id].manifest
        raise not_found("record", record_id)


def loaded(app) -> dict[str, FakeLoadedRecord]:
    return app.extensions[NODE_EXTENSION].registry.records


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    generate_signing_keypair(folder / "private.pem", folder / "public.pem")
    return folder


@pytest.fixture()
def app(keys, tmp_path):
    config = build_config("render", KEYS, {
        "tokens": {"public_key": str(keys / "public.pem"), "audience": "https://render.test:5003"},
        "render": {"backend_3d": "cpu", "max_concurrent_3d": 1},
        "limits": {"max_output_px": MAX_PX},
    })
    app = create_base_app("render3d_test", config)
    app.register_blueprint(bp)
    database = peewee.SqliteDatabase(str(tmp_path / "audit.db"))
    audit_model = make_audit_model(database)
    database.create_tables([audit_model])
    install_view_audit(app, ViewAudit(audit_model, flush_s=60))
    voxels = sample_phantom(SHAPE, SPACING, (1, 0, 0, 0, 1, 0))
    records = {
        RECORD: FakeLoadedRecord(voxels, SPACING),
        LOADING: FakeLoadedRecord(np.zeros_like(voxels), SPACING, frames_ready=12, complete=False),
    }
    stored = {record_id: record.manifest for record_id, record in records.items()}
    stored[MISSING] = sample_manifest(*SHAPE, spacing=SPACING)  # stored, not loaded
    effort = WebpEffort(int(config.get_key("render.webp_method")), os.cpu_count() or 2)  # as create_app makes it
    app.extensions[NODE_EXTENSION] = FakeNode(FakeRegistry(records), stored, effort)
    install_render_state(app)
    return app


@pytest.fixture()
def client(app, keys):
    issuer = TokenIssuer(load_private_key(keys / "private.pem"), "sivr-toplevel", "https://render.test:5003", 60)
    token, _ = issuer.issue(USER_ID, "doc", "physician",
                            "6f1c8a4e-8a7f-4d0e-9c55-2f3d7f1e9b20")
    test_client = app.test_client()
    test_client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return test_client


def image_of(response) -> Image.Image:
    assert response.status_code == 200, response.get_json()
    return Image.open(io.BytesIO(response.data))


def error_code(response, status):
    assert response.status_code == status, response.data[:300]
    return response.get_json()["error"]["code"]


def test_still_volume_is_a_png_of_the_requested_size(client):
    response = client.get(f"/api/v1/records/{RECORD}/volume?mode=dvr&preset=ct_bone&azimuth=30"
                          "&elevation=-20&roll=5&zoom=1.5&size=320x200")
    image = image_of(response)
    assert response.mimetype == "image/png" and image.size == (320, 200) and image.mode == "RGB"
    assert "max-age" in response.headers["Cache-Control"] and response.headers["ETag"]
    assert response.headers["X-Orientation"] == "top=SA,right=LP,bottom=IP,left=RA"  # seen from below-left
    again = client.get(response.request.full_path, headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304


def test_interactive_volume_is_a_small_lossy_preview(client):
    response = client.get(f"/api/v1/records/{RECORD}/volume?mode=mip&render=interactive&size=600x400"
                          "&window=500,1500&view_id=v1&seq=1")
    image = image_of(response)
    assert response.mimetype == "image/jpeg" and image.size == (300, 200)
    small = image_of(client.get(f"/api/v1/records/{RECORD}/volume?render=interactive&size=384x300"))
    assert small.size == (256, 200)  # halving stops at 256 px on the longer side
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("mode", ["mip", "minip", "avg", "dvr"])
def test_every_mode_renders(client, mode):
    image = image_of(client.get(f"/api/v1/records/{RECORD}/volume?mode={mode}&size=64x64"))
    assert image.size == (64, 64)


def test_mpr_has_the_true_aspect(client):
    response = client.get(f"/api/v1/records/{RECORD}/mpr/coronal/30")
    assert image_of(response).size == (64, 80)  # 64 columns x 1 mm by 40 slices x 2 mm, in 1 mm pixels
    assert response.headers["X-Orientation"] == "top=S,right=L,bottom=I,left=R"
    boxed = image_of(client.get(f"/api/v1/records/{RECORD}/mpr/coronal/30?size=300x300&slab=6"
                                "&slab_mode=mip&format=webp&window=0,2000"))
    assert boxed.size == (240, 300)


def test_mpr_with_preset_and_region(client):
    image = image_of(client.get(f"/api/v1/records/{RECORD}/mpr/axial/10?preset=ct_bone&region=0,0,0.5,0.5"))
    assert image.size == (40, 36)  # half of 64 x 1.0 mm by half of 72 x 0.8 mm, in 0.8 mm pixels


@pytest.mark.parametrize("query", [
    "mode=xray", "mode=dvr&preset=ct_everything", "mode=mip&preset=ct_nothing", "azimuth=361",
    "elevation=-91", "roll=181", "azimuth=abc", "azimuth=nan", "zoom=0", "zoom=50",
    f"size={MAX_PX + 1}x10", "size=10", "size=0x10", "window=40", "window=40,0", "window=a,b",
    "render=best", "quality=interactive", "format=bmp", "quality=0", "view_id=bad%20id", "seq=-1",
])
def test_bad_volume_parameters_are_refused(client, query):
    assert error_code(client.get(f"/api/v1/records/{RECORD}/volume?{query}"), 400) == "validation_error"


@pytest.mark.parametrize("path", [
    "mpr/oblique/3", "mpr/axial/1?slab=-2",
    "mpr/axial/1?slab_mode=max", "mpr/axial/1?size=5000x5000", "mpr/axial/1?region=0,0,2,1",
    "mpr/axial/1?voi_function=cubic",
])
def test_bad_mpr_parameters_are_refused(client, path):
    assert error_code(client.get(f"/api/v1/records/{RECORD}/{path}"), 400) == "validation_error"


@pytest.mark.parametrize("path", ["mpr/axial/40", "mpr/axial/-1", "mpr/sagittal/64"])
def test_an_mpr_index_outside_the_record_is_not_found(client, path):
    assert error_code(client.get(f"/api/v1/records/{RECORD}/{path}"), 404) == "not_found"


def test_malformed_record_id_is_refused(client):
    assert error_code(client.get("/api/v1/records/XYZ/volume"), 400) == "invalid_id"


def test_a_record_not_loaded_answers_at_once(client):
    response = client.get(f"/api/v1/records/{MISSING}/volume")
    assert error_code(response, 409) == "not_loaded"
    assert error_code(client.get(f"/api/v1/records/{'f' * 64}/volume"), 404) == "not_found"  # not stored
    response = client.get(f"/api/v1/records/{LOADING}/mpr/axial/3")
    assert error_code(response, 409) == "loading"
    body = response.get_json()["error"]
    assert (body["frames_ready"], body["frames_total"]) == (12, SHAPE[0])


def test_a_token_is_required(app):
    response = app.test_client().get(f"/api/v1/records/{RECORD}/volume")
    assert error_code(response, 401) == "missing_token"


def test_older_requests_of_a_view_are_superseded(client):
    base = f"/api/v1/records/{RECORD}/volume?render=interactive&size=64x64&view_id=drag-1"
    assert client.get(base + "&seq=5").status_code == 200
    assert error_code(client.get(base + "&seq=4"), 409) == "superseded"
    assert client.get(base + "&seq=6").status_code == 200
    assert client.get(base.replace("drag-1", "drag-2") + "&seq=1").status_code == 200


def test_another_user_cannot_supersede_a_view(app, keys, client):
    """`view_id` is the caller's: another user who learnt it (a shared screen, a log) sending a higher
    `seq` must not turn the owner's drags into 409 superseded."""
    issuer = TokenIssuer(load_private_key(keys / "private.pem"), "sivr-toplevel", "https://render.test:5003", 60)
    token, _ = issuer.issue("5d0c2a91-6a3e-4b7f-8f11-3c2b1a0e9d77", "other", "physician",
                            "6f1c8a4e-8a7f-4d0e-9c55-2f3d7f1e9b20")
    base = f"/api/v1/records/{RECORD}/volume?render=interactive&size=64x64&view_id=drag-9"
    other = app.test_client().get(base + "&seq=1000", headers={"Authorization": f"Bearer {token}"})
    assert other.status_code == 200
    assert client.get(base + "&seq=1").status_code == 200


def test_a_full_node_answers_busy(app, client):
    state = render_state(app)
    assert state.slots.acquire(timeout=1)
    try:
        response = client.get(f"/api/v1/records/{RECORD}/volume?render=interactive&size=64x64")
        assert error_code(response, 503) == "busy"
        assert response.headers["Retry-After"]
    finally:
        state.slots.release()
    assert client.get(f"/api/v1/records/{RECORD}/volume?render=interactive&size=64x64").status_code == 200


def test_a_request_superseded_while_waiting_is_dropped(app, client):
    """A still that waits for a slot is dropped when a newer request of its view arrives."""
    import threading

    state = render_state(app)
    results = {}
    url = f"/api/v1/records/{RECORD}/volume?size=64x64&view_id=waiting&seq=1"
    assert state.slots.acquire(timeout=1)
    worker = threading.Thread(target=lambda: results.setdefault("r", client.get(url)))
    try:
        worker.start()
        view = view_key(USER_ID, "waiting")
        while state.sequences.is_newest(view, 0):  # until the request has been admitted
            worker.join(0.01)
        assert state.sequences.admit(view, 2)
    finally:
        state.slots.release()
    worker.join(10)
    assert error_code(results["r"], 409) == "superseded"


def test_an_evicted_record_is_not_kept_alive_by_the_3d_cache(app, client):
    import gc
    import weakref

    assert client.get(f"/api/v1/records/{RECORD}/mpr/axial/3").status_code == 200
    record = loaded(app).pop(RECORD)
    voxels = weakref.ref(record.pixels)
    del record
    gc.collect()
    assert voxels() is None
    assert error_code(client.get(f"/api/v1/records/{RECORD}/mpr/axial/3"), 409) == "not_loaded"


def test_a_colour_record_is_refused_clearly(app, client):
    colour = "d" * 64
    loaded(app)[colour] = FakeLoadedRecord(
        np.zeros((*SHAPE, 3), np.uint8), SPACING, photometric="RGB")
    assert error_code(client.get(f"/api/v1/records/{colour}/volume"), 400) == "unsupported_record"
    assert error_code(client.get(f"/api/v1/records/{colour}/mpr/axial/0"), 400) == "unsupported_record"


@pytest.mark.parametrize("record", [
    FakeLoadedRecord(np.full((1, 16, 12), 900, np.int16), (0.0, 0.7, 0.7), frames_total=1, frames_ready=1),
    FakeLoadedRecord(np.arange(2 * 9 * 7, dtype=np.uint8).reshape(2, 9, 7), (3.0, 1.0, 1.0),
                     frames_total=2, frames_ready=2, rescale_intercept=0.0, default_voi=None),
    FakeLoadedRecord(np.linspace(-1, 1, 5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7), (1.0, 1.0, 1.0),
                     frames_total=5, frames_ready=5, rescale_intercept=0.0, default_voi=None),
    FakeLoadedRecord(np.arange(4 * 8 * 8, dtype=np.uint16).reshape(4, 8, 8), (2.0, 1.0, 1.0),
                     frames_total=4, frames_ready=4, rescale_slope=-1.0, photometric="MONOCHROME1"),
], ids=["one-frame-no-slice-spacing", "uint8", "float32", "negative-slope-monochrome1"])
def test_unusual_records_render_without_errors(app, client, record):
    odd = "e" * 64
    loaded(app)[odd] = record
    for query in ("mode=mip", "mode=minip", "mode=avg", "mode=dvr&preset=mr_soft_tissue",
                  "mode=dvr&render=interactive&azimuth=-200&elevation=89"):
        assert image_of(client.get(f"/api/v1/records/{odd}/volume?{query}&size=40x30")).size == (40, 30)
    for plane in ("axial", "coronal", "sagittal"):
        image_of(client.get(f"/api/v1/records/{odd}/mpr/{plane}/0?slab=5&slab_mode=mip"))


def test_reformats_and_3d_views_are_counted_in_the_sessions_audit_entry(app, client):
    assert client.get(f"/api/v1/records/{RECORD}/mpr/axial/3").status_code == 200
    assert client.get(f"/api/v1/records/{RECORD}/mpr/sagittal/4").status_code == 200
    assert client.get(f"/api/v1/records/{RECORD}/volume?render=interactive&size=64x64").status_code == 200
    assert client.get(f"/api/v1/records/{LOADING}/volume").status_code == 409  # nothing shown, nothing counted
    audit = app.extensions["sivr_view_audit"]
    assert audit.flush() == 1
    (entry,) = audit.model.select()
    detail = json.loads(entry.detail)
    assert (entry.action, entry.object_id, detail["mpr"], detail["volume"], detail["frame"]) == (
        "record.view", RECORD, 2, 1, 0)


def test_the_stand_ins_implement_the_declared_interfaces(app):
    """The blueprint has no branch for the stand-ins: they provide what it declares it needs."""
    the_node = app.extensions[NODE_EXTENSION]
    assert isinstance(the_node, VolumeNode)
    assert all(isinstance(record, VolumeRecord) for record in loaded(app).values())


def test_the_3d_state_is_never_made_lazily_by_a_request(app):
    """`render_state` only reads what the factory made: no lazy construction under a lock."""
    state = render_state(app)
    assert app.extensions["sivr_render_3d"] is state
    del app.extensions["sivr_render_3d"]
    with pytest.raises(KeyError):
        render_state(app)


def test_a_projection_without_a_window_names_the_one_measured_on_it(client, app):
    """Not the record's slice window (40,400 here): each projection mode its own, in X-Window, so a
    viewer's drag starts from the picture on screen; a window asked for is the one named."""
    windows = {}
    for mode in ("mip", "minip", "avg"):
        response = client.get(f"/api/v1/records/{RECORD}/volume?mode={mode}&size=64x64&azimuth=40")
        assert response.status_code == 200
        windows[mode] = response.headers["X-Window"]
        record = loaded(app)[RECORD]
        with app.app_context():
            expected = render_state(app).projection_window(record, find_stack(record.manifest, None), mode)
        assert windows[mode] == f"{expected.center:.10g},{expected.width:.10g}" != "40,400"
    assert len(set(windows.values())) == 3
    asked = client.get(f"/api/v1/records/{RECORD}/volume?mode=mip&size=64x64&window=300,1500")
    assert asked.headers["X-Window"] == "300,1500"


def test_a_3d_view_is_encoded_inside_its_slot(app, client, monkeypatch):
    """A 3D view keeps its slot until it is encoded: with one slot, a second view asked for while the
    first is being encoded waits and gets 503 busy, so at most `render.max_concurrent_3d` heavy
    operations run at once (a 2048² GIF or WebP takes 1.6-2.1 s: released before encoding, the slot
    let one user keep every core encoding)."""
    import threading

    real_save = Image.Image.save
    first_in_encode, release = threading.Event(), threading.Event()
    lock = threading.Lock()
    encodes = {"now": 0, "most": 0}

    def save(self, fp, format=None, **params):  # Pillow encodes the GIF: count and hold the first
        with lock:
            encodes["now"] += 1
            encodes["most"] = max(encodes["most"], encodes["now"])
        try:
            if not first_in_encode.is_set():
                first_in_encode.set()
                release.wait(10)
            return real_save(self, fp, format, **params)
        finally:
            with lock:
                encodes["now"] -= 1

    monkeypatch.setattr(Image.Image, "save", save)
    url = f"/api/v1/records/{RECORD}/volume?size=64x64&format=gif"
    results = {}
    worker = threading.Thread(target=lambda: results.setdefault("still", client.get(url)))
    worker.start()
    try:
        assert first_in_encode.wait(10)
        second = client.get(f"{url}&render=interactive&azimuth=30")
    finally:
        release.set()
        worker.join(10)
    assert error_code(second, 503) == "busy" and second.headers["Retry-After"]
    assert encodes["most"] == 1
    assert results["still"].status_code == 200
    assert client.get(f"{url}&render=interactive&azimuth=30").status_code == 200  # the slot was freed


class RecordingEffort(WebpEffort):
    """The node's WebP effort, noting the method each encode was given."""

    def __init__(self, method: int, busy_above: int):
        super().__init__(method, busy_above)
        self.methods: list[int] = []

    @contextmanager
    def slot(self) -> Iterator[int]:
        with super().slot() as method:
            self.methods.append(method)
            yield method


@pytest.mark.parametrize("path", [f"/api/v1/records/{RECORD}/mpr/axial/3?window=40,400",
                                  f"/api/v1/records/{RECORD}/volume?size=64x64"])
def test_reformats_and_3d_views_encode_webp_at_the_node_s_effort(app, client, path):
    """`render.webp_method` and the fast method under load apply to reformats and 3D views as to
    frames (counted in `webp_fast_encodes`), and their WebP ETags are weak like a frame's."""
    effort = app.extensions[NODE_EXTENSION].webp_effort = RecordingEffort(method=4, busy_above=1)
    calm = client.get(f"{path}&format=webp")
    with effort.slot():  # another image is being encoded: the node is now busy
        busy = client.get(f"{path}&format=webp&quality=79")
    assert calm.status_code == busy.status_code == 200
    assert effort.methods == [4, 4, 0] and effort.fast_encodes == 1
    assert calm.headers["ETag"].startswith('W/"')
    again = client.get(f"{path}&format=webp", headers={"If-None-Match": calm.headers["ETag"]})
    assert again.status_code == 304 and again.headers["ETag"] == calm.headers["ETag"]
    assert client.get(f"{path}&format=png").headers["ETag"].startswith('"')
