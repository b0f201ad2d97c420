"""Shared fixtures of the DICOMweb tests: synthetic series in several transfer syntaxes, and
`dicomweb-client` against the real daemons (gunicorn + TLS) of the session's deployment.

`dicomweb(role)` gives a `DICOMwebClient` on render node 1's DICOMweb root whose session is the
role's logged-in `ApiClient` session: it verifies the deployment's CA and sends a token exchanged
for the node, renewed as it expires (a client holding one fixed token fails after 55 s).
"""

from __future__ import annotations

import io
from collections.abc import Callable

import imagecodecs
import numpy as np
import pydicom
import pytest
from dicomweb_client import DICOMwebClient
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGLSLossless, RLELossless, generate_uid

from daemons.demo import RunningDeployment
from tests.render.conftest import make_node, node, token_keys  # noqa: F401 (the in-process node's fixtures)
from tests.render.synthetic import dataset

NODE = "render-1-1"


def synthetic_series(count: int = 3, syntax: str | None = None, study: str | None = None,
                     series: str | None = None, rows: int = 16, cols: int = 16) -> list[bytes]:
    """`count` CT instances of one new series (own UIDs unless given), Explicit VR LE, RLE or JPEG-LS."""
    study = study or generate_uid()
    series = series or generate_uid()
    files = []
    for index in range(count):
        ds = dataset(rows, cols, series=series, position=float(index))
        ds.StudyInstanceUID = study
        ds.PatientID, ds.PatientName = "DW-TEST", "Web^Dicom"
        ds.InstanceNumber = index + 1
        pixels = (np.arange(rows * cols, dtype=np.int16).reshape(rows, cols) * (index + 1)) % 2000
        ds.PixelData = pixels.astype(np.int16).tobytes()
        if syntax == RLELossless:
            ds.compress(RLELossless, generate_instance_uid=False)
        elif syntax == JPEGLSLossless:
            ds.PixelRepresentation = 0
            ds.PixelData = encapsulate([imagecodecs.jpegls_encode(pixels.astype(np.uint16))])
            ds.file_meta.TransferSyntaxUID = JPEGLSLossless
            ds["PixelData"].VR = "OB"
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        files.append(out.getvalue())
    return files


def uids(raw: bytes) -> tuple[str, str, str]:
    """(study, series, SOP instance) UIDs of a file."""
    ds = pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


@pytest.fixture(scope="session")
def node_url(deployment: RunningDeployment) -> str:
    """Render node 1 (institution 1, the demo physician's) of the session's deployment."""
    return deployment.url(NODE)


@pytest.fixture(scope="session")
def dicomweb(deployment: RunningDeployment, node_url: str) -> Callable[..., DICOMwebClient]:
    """A DICOMwebClient factory: `dicomweb("physician")` or `dicomweb("admin")` on render node 1."""
    made: dict[str, DICOMwebClient] = {}

    def make(role: str = "physician") -> DICOMwebClient:
        if role not in made:
            made[role] = DICOMwebClient(url=f"{node_url}/dicomweb", session=deployment.client(role).session)
        return made[role]

    return make
