"""OHIF v3 as a real browser client of a render node's DICOMweb root (issue 12).

OHIF's built viewer (npm @ohif/app, installed by installers/install-ohif.sh) is served from its own
loopback origin (tests/dicomweb/ohif_site.py) with a data source pointing at the node's /dicomweb;
the node allows that origin in `dicomweb.cors_origins`, the toplevel in `cors.origins` (OHIF
exchanges the SIVR session for node tokens there, as SIVR's viewer does). Debian's Chromium, headless
with software WebGL (SwiftShader through ANGLE), opens the study list, the study and its viewport.

TLS: OHIF's site is served with the deployment's own server certificate, and Chromium accepts
exactly that key by its SPKI hash (`--ignore-certificate-errors-spki-list`, as the other browser
tests do): the page and the node stay secure contexts and no other certificate is accepted.

Every request OHIF makes to the node is recorded; a DICOMweb call answered 4xx/5xx (or not answered,
e.g. refused by CORS) fails the test with the list of them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from dicomweb_client import DICOMwebClient
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from daemons.demo import RunningDeployment, start_deployment
from tests.dicomweb.ohif_site import (
    CHROMIUM_ARGS,
    MIN_SPREAD,
    OHIF_DIST,
    OhifSite,
    app_config_js,
    configure_for_ohif,
    painted_spread,
)
from tests.webviewer.browser import CHROMIUM, server_cert_of, spki_hash

pytestmark = pytest.mark.slow

DEMO_CT = Path(__file__).resolve().parents[2] / "demo_data" / "ct-chest-100"
PATIENT_ID = "CMB-CRC-MSB-01068"  # PatientID (and PatientName) of the demo CT
STUDY_UID = "1.3.6.1.4.1.14519.5.2.1.1600.1201.207207224570850447623269041081"
VIEWPORT = {"width": 1400, "height": 900}
LOAD_TIMEOUT_MS = 120_000
STOW_BATCH = 20
TOKEN_TTL_S = 12
LEEWAY_S = 2


@pytest.fixture(scope="module")
def site() -> Iterator[OhifSite]:
    if not (OHIF_DIST / "index.html").is_file():
        pytest.skip(f"the OHIF viewer is not installed in {OHIF_DIST} (run installers/install-ohif.sh)")
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (/usr/bin/chromium)")
    served = OhifSite()
    yield served
    served.stop()


@pytest.fixture(scope="module")
def ohif(site: OhifSite, tmp_path_factory) -> Iterator[tuple[RunningDeployment, OhifSite]]:
    """A deployment whose render node allows the OHIF site, and the site serving a config for that node."""
    running = start_deployment(tmp_path_factory.mktemp("ohif"),
                               before_start=configure_for_ohif(site.origin, TOKEN_TTL_S, LEEWAY_S),
                               institution_names=["Demo Hospital"])
    try:
        tls = Path(running.layout.root) / "tls"
        site.start(tls / "server.pem", tls / "server.key",
                   app_config_js(running.url("render-1-1"), running.url("toplevel")))
        # stored as an archive client would: STOW-RS, in requests of STOW_BATCH instances
        stow = DICOMwebClient(url=f"{running.url('render-1-1')}/dicomweb", session=running.client("physician").session)
        files = sorted(DEMO_CT.glob("*.dcm"))
        for start in range(0, len(files), STOW_BATCH):
            stored = stow.store_instances([pydicom.dcmread(path) for path in files[start:start + STOW_BATCH]])
            assert "FailedSOPSequence" not in stored
        yield running, site
    finally:
        running.stop()


@pytest.fixture(scope="module")
def browser(ohif, playwright_instance):
    running, _ = ohif
    browser = playwright_instance.chromium.launch(
        executable_path=str(CHROMIUM),
        args=[*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={spki_hash(server_cert_of(running))}"],
    )
    yield browser
    browser.close()


class DicomwebLog:
    """The requests a page makes to the node's DICOMweb root, with their outcome."""

    def __init__(self, page, root: str):
        self.root = root
        self.calls: list[tuple[str, str, int | str]] = []
        page.on("response", self._response)
        page.on("requestfailed", self._failed)

    def _response(self, response) -> None:
        if response.url.startswith(self.root) and response.request.method != "OPTIONS":
            self.calls.append((response.request.method, response.url[len(self.root):], response.status))

    def _failed(self, request) -> None:
        # net::ERR_ABORTED: OHIF itself cancelled the request (its prefetch queue drops frames it no
        # longer needs); a refusal by CORS or a broken answer is another error (net::ERR_FAILED, ...)
        if request.url.startswith(self.root) and request.failure != "net::ERR_ABORTED":
            self.calls.append((request.method, request.url[len(self.root):], f"failed: {request.failure}"))

    def errors(self) -> list[str]:
        return [f"{method} {path} -> {status}" for method, path, status in self.calls
                if not isinstance(status, int) or status >= 400]

    def check(self) -> None:
        errors = self.errors()
        assert not errors, "DICOMweb calls OHIF made that failed:\n  " + "\n  ".join(errors)


def _open_page(browser, running: RunningDeployment):
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(LOAD_TIMEOUT_MS)
    page = context.new_page()
    log = DicomwebLog(page, running.url("render-1-1") + "/dicomweb")
    return context, page, log


def _session_fragment(running: RunningDeployment, role: str) -> str:
    return f"#sivr_session={running.client(role).session_token}"


def _wait_visible(locator, log: DicomwebLog, what: str, timeout_s: float = LOAD_TIMEOUT_MS / 1000) -> None:
    """Wait for `locator`, failing at once with the failed DICOMweb calls when there are some."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        log.check()
        try:
            locator.wait_for(timeout=1000)
            return
        except PlaywrightTimeout:
            continue
    log.check()
    raise AssertionError(f"OHIF never showed {what}; its DICOMweb calls: {log.calls}")




def test_ohif_lists_opens_and_paints_a_sivr_study(browser, ohif, artifacts_dir: Path):
    running, site = ohif
    shots = artifacts_dir / "ohif"
    shots.mkdir(parents=True, exist_ok=True)
    context, page, log = _open_page(browser, running)
    try:
        # a physician's study list names the patient (QIDO's listing rule); OHIF's filter `mrn` is PatientID
        page.goto(f"{site.origin}/?mrn={PATIENT_ID}{_session_fragment(running, 'physician')}")
        page.get_by_role("button", name="Confirm and hide").click()  # OHIF's investigational-use notice
        row = page.get_by_text(PATIENT_ID).first
        _wait_visible(row, log, "the study in its study list")
        assert "sivr_session" not in page.url  # the session token left the address bar
        page.screenshot(path=str(shots / "study-list.png"))
        # longer than a node token lives: what follows works only if OHIF's token was renewed
        page.wait_for_timeout((TOKEN_TTL_S + LEEWAY_S + 1) * 1000)

        row.click()
        page.get_by_role("button", name="Basic Viewer").click()
        page.wait_for_url(f"**/viewer?**StudyInstanceUIDs={STUDY_UID}**")
        page.get_by_text("Skip all").dispatch_event("click")  # OHIF's first-visit tour (still animating in)
        canvas = page.locator("canvas.cornerstone-canvas").first
        _wait_visible(canvas, log, "a viewport")
        deadline = time.monotonic() + LOAD_TIMEOUT_MS / 1000
        spread = 0.0
        while time.monotonic() < deadline and spread < MIN_SPREAD:
            log.check()
            spread = painted_spread(canvas.screenshot())
            time.sleep(0.5)
        page.screenshot(path=str(shots / "viewer.png"))
        assert spread >= MIN_SPREAD, f"the viewport stayed blank (grey-level spread {spread:.1f}); calls: {log.calls}"
        log.check()
        assert any("/frames/" in path or path.endswith("/rendered") for _, path, _ in log.calls), log.calls
    finally:
        page.screenshot(path=str(shots / "last.png"))
        context.close()


def test_an_institution_admin_lists_every_study(browser, ohif, artifacts_dir: Path):
    """Without a filter OHIF asks for every study: the node's institution administrator may list them."""
    running, site = ohif
    context, page, log = _open_page(browser, running)
    try:
        page.goto(f"{site.origin}/{_session_fragment(running, 'admin')}")
        _wait_visible(page.get_by_text(PATIENT_ID).first, log, "the study in an administrator's study list")
        page.screenshot(path=str(artifacts_dir / "ohif" / "admin-study-list.png"))
        assert any(path.startswith("/studies?") and "00100020" not in path for _, path, _ in log.calls), log.calls
        log.check()
    finally:
        context.close()


def test_a_physician_s_unfiltered_list_is_refused(browser, ohif, artifacts_dir: Path):
    """QIDO's listing rule seen from OHIF: a physician's search that names no patient gets a 400."""
    running, site = ohif
    context, page, log = _open_page(browser, running)
    try:
        page.goto(f"{site.origin}/{_session_fragment(running, 'physician')}")
        page.get_by_text("Data Source Connection Error").wait_for()
        page.screenshot(path=str(artifacts_dir / "ohif" / "physician-unfiltered-list.png"))
        searches = [(path, status) for _, path, status in log.calls if path.startswith("/studies?")]
        assert searches and all(status == 400 for _, status in searches), log.calls
    finally:
        context.close()
