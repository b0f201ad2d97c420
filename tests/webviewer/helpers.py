"""Small steps the browser tests share: logging in through the page, seeding through the API."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from daemons.demo import ApiClient, register_nodes, register_record
from shared.receipts import issue_receipt, load_or_create_node_key


def login(page, deployment, role: str = "physician") -> None:
    user = deployment.users[role]
    page.goto("/")
    page.get_by_label("Username").fill(user["username"])
    page.get_by_label("Password").fill(user["password"])
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Patients").wait_for()


def shot(page, folder: Path, name: str, full_page: bool = True) -> None:
    """Save a screenshot once the toast has faded, so it shows the screen as a person sees it."""
    page.locator("#status").evaluate("el => el.textContent = ''")
    page.screenshot(path=str(folder / f"{name}.png"), full_page=full_page)


def new_patient(deployment, **overrides) -> dict:
    body = {"first_name": "Ana", "last_name": f"Novak-{uuid.uuid4().hex[:6]}", "sex": "F",
            "birth_date": "1970-03-05", "insurance_number": f"INS{uuid.uuid4().int % 10**10:010d}"}
    body.update(overrides)
    return deployment.client("physician").call(
        "POST", f"{deployment.url('toplevel')}/api/v1/patients", json=body).json()


def institution(deployment, number: int = 1) -> dict:
    return deployment.layout.institutions[number - 1]


def registered_node(deployment, number: int = 1) -> dict:
    """The first render node of institution `number`, registered in its institution's registry."""
    inst = institution(deployment, number)
    known = register_nodes(deployment.client("admin"), inst)
    return known[inst["nodes"][0]["url"]]


def register_placeholder_records(deployment, patient: dict, descriptions: list[str]) -> list[dict]:
    """Record metadata registered at institution 1 (findings cite records; no pixels needed)."""
    inst = institution(deployment)
    node = registered_node(deployment)
    doctor: ApiClient = deployment.client("physician")
    # the test plays the node: it signs the upload receipts the institution requires with the node's key
    key_file = Path(deployment.layout.root) / "keys" / f"{inst['nodes'][0]['name']}.receipt.pem"
    node_key = load_or_create_node_key(key_file)
    doctor_id = doctor.call("GET", f"{deployment.url('toplevel')}/api/v1/me").json()["id"]
    records = []
    for text in descriptions:
        record_id = hashlib.sha256(f"{patient['id']}/{text}".encode()).hexdigest()
        meta = {"id": record_id, "rows": 512, "columns": 512, "frames": 100, "modality": "CT",
                "study_date": "20240105",
                "receipt": issue_receipt(node_key, inst["nodes"][0]["url"], record_id, inst["id"], doctor_id)}
        records.append(register_record(doctor, inst["server_url"], meta, node["id"], patient["id"], "CT", text))
    return records


def derived_series(ct_series: Path, dest: Path, first: int, count: int) -> list[Path]:
    """Slices of the real CT with fresh study/series/instance UIDs (labelled derived).

    Records are identified by content hash and a record belongs to one patient, so every test
    that registers a record gets content of its own, whatever else runs on the shared deployment.
    """
    import pydicom
    from pydicom.uid import generate_uid

    dest.mkdir(parents=True, exist_ok=True)
    sources = sorted(ct_series.glob("*.dcm"))[first:first + count]
    study, series = generate_uid(), generate_uid()
    written = []
    for number, source in enumerate(sources):
        ds = pydicom.dcmread(source)
        sop = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, sop
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        target = dest / f"slice-{number:03d}.dcm"
        ds.save_as(target, enforce_file_format=True)
        written.append(target)
    return written


def as_patient(files: list[Path], patient: dict, dest: Path, keep_study: bool = False) -> list[Path]:
    """Copies of `files` in `dest` that name `patient` (name LAST^FIRST, birth date) as their DICOM
    patient, as a real study of that patient would: the viewer then has no patient mismatch to show.
    Each patient's copies are a study of their own (a UID derived from the patient and the source's
    study): the institution files a study's series to one patient only, and tests file copies of the
    same files to many patients. `keep_study`: the files' study is the test's own, made for this
    patient (a test of how the viewer shows studies)."""
    import pydicom

    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for number, source in enumerate(files):
        ds = pydicom.dcmread(source)
        ds.PatientName = f"{patient['last_name']}^{patient['first_name']}".upper()
        ds.PatientBirthDate = patient["birth_date"].replace("-", "")
        if not keep_study:
            ds.StudyInstanceUID = f"2.25.{uuid.uuid5(uuid.UUID(patient['id']), ds.StudyInstanceUID).int}"
        written.append(dest / f"{number:04d}-{source.name}")
        ds.save_as(written[-1], enforce_file_format=True)
    return written


def uploaded_record(deployment, patient: dict, files: list[Path], description: str,
                    keep_dicom_patient: bool = False, modality: str = "CT", keep_study: bool = False) -> dict:
    """Upload through the node's API and register at institution 1: the record a viewer opens.

    The files are uploaded naming `patient` (`as_patient`), unless `keep_dicom_patient` (a test
    of the viewer's patient-mismatch warning names another DICOM patient on purpose, and registers
    it with the physician's confirmation, as the upload dialog asks for). `keep_study` as `as_patient`.
    """
    import tempfile

    from daemons.demo import mark_filed, register_record, upload_record

    inst = institution(deployment)
    node = registered_node(deployment)
    doctor = deployment.client("physician")
    with tempfile.TemporaryDirectory() as tmp:
        sent = files if keep_dicom_patient else as_patient(files, patient, Path(tmp), keep_study)
        meta = upload_record(doctor, node["url"], sent)
    register_record(doctor, inst["server_url"], meta, node["id"], patient["id"], modality, description,
                    confirm_mismatch=keep_dicom_patient)
    mark_filed(doctor, node["url"], meta["id"])
    return {"meta": meta, "node": node, "institution": inst}


def opened_record(deployment, ct_series: Path, folder: Path, first: int, description: str) -> dict:
    """Four slices of the real CT from `first`, uploaded for a new patient and registered at
    institution 1: a record the viewer opens. Its patient, institution, node, RecordMeta (as the
    upload answered), API path and the viewer's link to it."""
    patient = new_patient(deployment)
    files = derived_series(ct_series, folder, first=first, count=4)
    record = uploaded_record(deployment, patient, files, description)
    inst, node, meta = record["institution"], record["node"], record["meta"]
    return {"patient": patient, "institution": inst, "node": node, "meta": meta, "path": f"api/v1/records/{meta['id']}",
            "href": f"/#/view/{inst['id']}/{node['id']}/{meta['id']}?patient={patient['id']}"}


def users_of_second_institution(deployment) -> dict[str, dict[str, str]]:
    """An admin and a physician of institution 2, created through the toplevel API (once)."""
    if hasattr(deployment, "second_users"):
        return deployment.second_users
    admin = deployment.client("admin")
    inst_id = institution(deployment, 2)["id"]
    users = {}
    for key, role in (("admin", "instadmin"), ("physician", "physician")):
        name = f"{key}-2-{uuid.uuid4().hex[:6]}"
        password = uuid.uuid4().hex
        admin.call("POST", f"{deployment.url('toplevel')}/api/v1/users", json={
            "username": name, "password": password, "full_name": f"Second {key.title()}",
            "role": role, "institution_id": inst_id})
        users[key] = {"username": name, "password": password}
    deployment.second_users = users
    return users


def uploaded_stack(deployment, folder: Path, description: str, orientation, **stack_args) -> dict:
    """A new patient and one synthetic acquisition of `orientation` (`tests.render.synthetic.stack`
    with `stack_args`) written to `folder`, uploaded and registered: the record a viewer opens."""
    from tests.render.synthetic import stack

    paths = []
    for file_name, data in stack(orientation, **stack_args):
        paths.append(folder / file_name)
        paths[-1].write_bytes(data)
    patient = new_patient(deployment)
    return {"patient": patient, **uploaded_record(deployment, patient, paths, description)}



def phone_context(browser, deployment):
    """A browser context of the phone profile (tests/webviewer/browser.py PHONE): a 390×780 touch
    screen that says it is a mobile device, as the phone tests open the viewer."""
    from tests.webviewer.browser import PHONE

    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, base_url=deployment.url("web"))
    context.set_default_timeout(30000)
    return context


class Fingers:
    """Touch input on a page, as a phone's fingers give it (CDP Input.dispatchTouchEvent: the
    browser makes touch and pointer events of it, pointerType "touch"). Playwright's own
    touchscreen only taps; a drag or a pinch needs the moves in between. Each gesture starts and
    ends with a pause longer than a double tap, as a hand makes: Chromium's gesture detector
    takes a tap followed at once by a drag for a double-tap zoom, and then swallows the next tap."""

    PAUSE_MS = 400

    def __init__(self, page):
        self.page = page
        self.cdp = page.context.new_cdp_session(page)

    def _send(self, kind: str, points: list[tuple[float, float]]) -> None:
        if kind == "touchStart":
            self.page.wait_for_timeout(self.PAUSE_MS)
        self.cdp.send("Input.dispatchTouchEvent", {
            "type": kind, "touchPoints": [{"x": x, "y": y, "id": n + 1} for n, (x, y) in enumerate(points)]})
        if kind == "touchEnd":
            self.page.wait_for_timeout(self.PAUSE_MS)

    def tap(self, x: float, y: float) -> None:
        self._send("touchStart", [(x, y)])
        self._send("touchEnd", [])

    def drag(self, start: tuple[float, float], end: tuple[float, float], steps: int = 8) -> None:
        """One finger from `start` to `end` in `steps` moves, then lifted."""
        self._send("touchStart", [start])
        for step in range(1, steps + 1):
            f = step / steps
            self._send("touchMove", [(start[0] + (end[0] - start[0]) * f, start[1] + (end[1] - start[1]) * f)])
        self._send("touchEnd", [])

    def pinch(self, centre: tuple[float, float], spreads: list[float]) -> None:
        """Two fingers on a horizontal line about `centre`, `spreads[0]` apart, then each spread in turn."""
        x, y = centre

        def fingers(spread: float) -> list[tuple[float, float]]:
            return [(x - spread / 2, y), (x + spread / 2, y)]

        self._send("touchStart", fingers(spreads[0]))
        for spread in spreads[1:]:
            self._send("touchMove", fingers(spread))
        self._send("touchEnd", [])


def phone_tools(page, open_it: bool) -> None:
    """On a phone: unfold (or fold) the ☰ Tools bar and wait until it is so. A tap that a busy page
    has not taken yet is tried again, rather than the test going on with the bar the wrong way."""
    toggle = page.locator("#tools-toggle")
    for _ in range(3):
        if (toggle.get_attribute("aria-expanded") == "true") == open_it:
            return
        toggle.tap()
        try:
            page.wait_for_function("([el, open]) => el.getAttribute('aria-expanded') === String(open)",
                                   arg=[toggle.element_handle(), open_it], timeout=10_000)
            return
        except PlaywrightTimeoutError:
            continue
    raise AssertionError(f"the phone's tools bar did not {'open' if open_it else 'fold'} after three taps")


def phone_tool(page, name: str) -> None:
    """On a phone: open the folded ☰ Tools bar, tap the button `name`, fold the bar again (the image
    is then where it was: the bar is under it)."""
    phone_tools(page, True)
    page.get_by_role("button", name=name, exact=True).tap()
    phone_tools(page, False)
