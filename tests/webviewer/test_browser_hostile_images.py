"""The viewer against render nodes that answer an image of another size or kind (docs/operations.md,
attack 110).

A node that is broken or taken over can answer a slice, an export or a thumbnail with a few
kilobytes of PNG that decode to hundreds of megabytes (a 6,000 x 6,000 picture of one colour is
35 KB), with something that is no image, or with more bytes than any image the viewer asks for.
Before, each was handed to the browser's decoder as it came: the picture was decoded whole and
drawn at its own size, and a larger one would take the tab's memory. Now an image's size is read
from its header (webviewer/static/js/imagesize.js) and one larger than the box it was asked for
is refused before anything decodes it, naming the node. The size reader is also checked against
Pillow on every kind of image a node may send.
"""

from __future__ import annotations

import base64
import functools
import gzip
import http.server
import io
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from PIL import Image

from tests.webviewer.helpers import login, opened_record
from tests.webviewer.hostile_answers import still_usable

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def ct(deployment, ct_series, tmp_path_factory):
    return opened_record(deployment, ct_series, tmp_path_factory.mktemp("hostile-images"), 68,
                         "CT for the hostile-image tests")


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


HUGE_SIDE = 6000


@functools.cache
def huge_png() -> bytes:
    """A PNG of HUGE_SIDE × HUGE_SIDE pixels of one grey, 35 KB (made when a test first asks)."""
    return encoded(Image.new("L", (HUGE_SIDE, HUGE_SIDE)), "PNG")


@functools.cache
def inflating_png() -> bytes:
    """A 16 × 16 PNG followed by 40 MiB of zeros, gzip-compressed: 40 KB on the wire (a PNG decoder
    stops at its end, so before, the picture was drawn once the 40 MiB had been taken in)."""
    return gzip.compress(encoded(Image.new("L", (16, 16)), "PNG") + bytes(40 * 2**20), compresslevel=1)


# each: the body served for every slice, its media type, and what the message must say
IMAGE_ATTACKS = {
    "larger-than-its-box": (huge_png, "image/png", f"a {HUGE_SIDE}×{HUGE_SIDE} image for a box of"),
    "no-image": (lambda: b"<html><body>Welcome</body></html>", "image/png", "an image that is not PNG, JPEG or WebP"),
    # a node declaring 33 MiB (Content-Length): refused on the declaration, before its bytes are read
    "more-bytes-than-any-image": (huge_png, "image/png", "an image larger than 32 MiB"),
}
HEADERS = {"more-bytes-than-any-image": {"Content-Length": str(33 * 2**20)}}


def serve_image(route, deployment, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
    route.fulfill(status=200, content_type=content_type, body=body,
                  headers={"Access-Control-Allow-Origin": deployment.url("web"), **(headers or {})})


@pytest.mark.parametrize("attack", list(IMAGE_ATTACKS), ids=list(IMAGE_ATTACKS))
def test_a_slice_of_another_size_or_kind_is_refused_before_it_is_decoded(page, deployment, ct, attack):
    """Attack 110 (slices): every slice answered by the node with `attack`'s body. Before, the huge
    PNG was decoded and drawn 6,000 pixels wide, and the rest said only "The image could not be
    displayed". Now nothing is drawn and the viewport names the node and what it sent."""
    make_body, content_type, problem = IMAGE_ATTACKS[attack]
    body = make_body()
    page.route(slices_of(ct), lambda route: serve_image(route, deployment, body, content_type, HEADERS.get(attack)))
    refused_on_screen(page, deployment, ct, problem)


def slices_of(ct: dict):
    """A URL matcher for the record's rendered slices (not their statistics or value probes)."""
    frames = f"{ct['node']['url']}/{ct['path']}/frames/"
    return lambda url: url.startswith(frames) and "/stats?" not in url and "/value?" not in url


def refused_on_screen(page, deployment, ct: dict, problem: str) -> None:
    """Open the record: the viewport names the node and `problem`, and draws nothing."""
    login(page, deployment)
    page.goto(ct["href"])
    message = page.locator("#viewport").get_by_text(problem)
    message.wait_for(timeout=60_000)
    text = message.inner_text()
    assert urlsplit(ct["node"]["url"]).netloc in text and "tell IT" in text, text
    picture = page.locator("#viewport .view-image")
    size = picture.evaluate("c => [c.width, c.height]")
    assert max(size) < HUGE_SIDE and picture.is_hidden(), size
    still_usable(page)


@pytest.fixture(scope="module")
def gzip_server(deployment) -> Iterator[str]:
    """An HTTPS server on loopback with the deployment's certificate, answering every GET with
    `inflating_png` as gzip (Content-Encoding), as a node taken over could: the browser inflates a
    real server's answer, not one fulfilled by Playwright's interception."""
    key_folder = Path(deployment.layout.root) / "tls"
    origin = deployment.url("web")

    class Inflating(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = inflating_png()
            self.send_response(200)
            for name, value in (("Content-Type", "image/png"), ("Content-Encoding", "gzip"),
                                ("Content-Length", str(len(body))), ("Access-Control-Allow-Origin", origin)):
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Inflating)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(key_folder / "server.pem", key_folder / "server.key")
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_slice_inflating_past_32_mib_is_cut_as_it_arrives(page, deployment, ct, gzip_server):
    """Attack 110 (compressed): 40 KB of gzip that inflate to 40 MiB behind a small PNG. Its
    declared length is the compressed one, so a limit on it let the page take in all 40 MiB (and a
    few more KB of gzip would have been gigabytes) before drawing the little PNG. Now the bytes are
    counted as the page receives them, inflated, and the read stops at 32 MiB."""
    page.route(slices_of(ct), lambda route: route.continue_(
        url=gzip_server + urlsplit(route.request.url).path + "?" + urlsplit(route.request.url).query))
    refused_on_screen(page, deployment, ct, "an image larger than 32 MiB")


def test_a_thumbnail_larger_than_its_box_is_not_shown(page, deployment, ct):
    """Attack 110 (thumbnails): the series thumbnail on the patient page answered with a 6,000 x
    6,000 PNG was decoded whole into a 128-pixel card. Now the card shows no preview and says why."""
    asked: list[str] = []

    def thumbnail(route):
        asked.append(route.request.url)
        serve_image(route, deployment, huge_png(), "image/png")

    page.route(lambda url: url.startswith(f"{ct['node']['url']}/dicomweb/") and "/thumbnail" in urlsplit(url).path,
               thumbnail)
    login(page, deployment)
    page.goto(f"/#/patients/{ct['patient']['id']}")
    slot = page.locator(f"article[data-record='{ct['meta']['id']}'] .series-thumb-link")
    slot.scroll_into_view_if_needed()
    page.wait_for_function("el => el.classList.contains('thumb-none')", arg=slot.element_handle(), timeout=30_000)
    title = slot.get_attribute("title") or ""
    assert f"a {HUGE_SIDE}×{HUGE_SIDE} image for a box of 128×128" in title, title
    assert urlsplit(ct["node"]["url"]).netloc in title, title
    assert asked and all("viewport=128%2C128" in url or "viewport=128,128" in url for url in asked), asked
    img = slot.locator("img")
    assert img.evaluate("i => i.naturalWidth") == 0, "nothing was decoded into the card"


def _images() -> dict[str, bytes]:
    """Every kind of image a node may send (and a JPEG written by others), of an odd size."""
    grey = Image.linear_gradient("L").resize((301, 203))
    colour = Image.merge("RGB", (grey, grey.transpose(Image.Transpose.FLIP_LEFT_RIGHT), grey))
    exif = Image.Exif()
    exif[0x010E] = "x" * 5000   # an application segment of 5 KB before the frame header
    return {
        "png-grey": encoded(grey, "PNG"),
        "png-colour": encoded(colour, "PNG"),
        "png-16-bit": encoded(grey.convert("I;16"), "PNG"),
        "jpeg-baseline": encoded(grey, "JPEG", quality=90),
        "jpeg-progressive": encoded(colour, "JPEG", progressive=True),
        "jpeg-with-exif": encoded(colour, "JPEG", exif=exif.tobytes()),
        "webp-lossy": encoded(colour, "WEBP", quality=80),
        "webp-lossless": encoded(grey, "WEBP", lossless=True),
        "webp-extended": encoded(colour.convert("RGBA"), "WEBP", quality=80, exif=exif.tobytes()),
    }


def test_the_size_read_from_each_kind_of_image_is_pillows(page, deployment):
    """imagesize.js reads the size Pillow reads, from PNG, JPEG (baseline, progressive, behind an
    application segment) and WebP (lossy, lossless, extended); a cut header has none."""
    page.goto("/")
    images = _images()
    read = page.evaluate("""async (images) => {
      const { imageSize } = await import("/static/js/imagesize.js");
      const out = {};
      for (const [name, b64] of Object.entries(images)) {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        out[name] = imageSize(bytes);
        out[`${name}-cut`] = imageSize(bytes.slice(0, 20));
      }
      return out;
    }""", {name: base64.b64encode(data).decode() for name, data in images.items()})
    for name, data in images.items():
        size = Image.open(io.BytesIO(data)).size
        assert read[name] is not None and (read[name]["width"], read[name]["height"]) == size, (name, read[name])
        assert read[f"{name}-cut"] is None, name
