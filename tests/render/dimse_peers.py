"""The DICOM side of the render-node tests: a node harness with its listener, and a C-GET peer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelGet,
    Verification,
)

from daemons.deployment import free_port
from tests.render.conftest import NodeHarness, close_node

#: The calling AE title of the tests' peers, and the node's own.
CALLER = "MODALITY"
SCP = "SIVRTEST"


def open_archive(make_node: Callable[..., NodeHarness], callers: Sequence[str] = (CALLER,),
                 port: int | None = None, **overrides: Any) -> NodeHarness:
    """A node harness whose DICOM listener runs on `port` (default: a free one; `harness.dicom_port`) as SCP."""
    port = port or free_port()
    harness = make_node(dicom__port=port, dicom__ae_title=SCP, dicom__allowed_callers=list(callers), **overrides)
    harness.dicom_port = port
    return harness


def close_archive(harness: NodeHarness) -> None:
    """The end of `open_archive`: the node closed, its DICOM listener with it (`close_node`)."""
    close_node(harness)


def echo(port: int, caller: str = CALLER, called: str = SCP, host: str = "127.0.0.1") -> bool:
    """Whether a C-ECHO from `caller` to the AE `called` at `host`:`port` succeeds."""
    ae = AE(ae_title=caller)
    ae.add_requested_context(Verification)
    assoc = ae.associate(host, port, ae_title=called)
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and status.Status == 0x0000


def c_get(port: int, query: Dataset, contexts: Sequence[tuple[str, Sequence[str]]],
          model: str = StudyRootQueryRetrieveInformationModelGet,
          cancel_after: int | None = None) -> tuple[Dataset | None, dict[str, bytes]]:
    """A C-GET taking instances over the storage `contexts` it proposes, (SOP class, its syntaxes)
    each, with the SCP role on its own association: the last status and what arrived, by SOP
    Instance UID. After `cancel_after` answers it sends C-CANCEL."""
    arrived: dict[str, bytes] = {}

    def on_store(event: Any) -> int:
        arrived[str(event.request.AffectedSOPInstanceUID)] = event.encoded_dataset(include_meta=False)
        return 0x0000

    ae = AE(ae_title=CALLER)
    ae.add_requested_context(model)
    for sop_class, syntaxes in contexts:
        ae.add_requested_context(sop_class, list(syntaxes))
    sop_classes = dict.fromkeys(sop_class for sop_class, _ in contexts)
    assoc = ae.associate("127.0.0.1", port, ae_title=SCP,
                         ext_neg=[build_role(sop_class, scp_role=True) for sop_class in sop_classes],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    last = None
    for index, (status, _) in enumerate(assoc.send_c_get(query, model)):
        last = status
        if cancel_after is not None and index + 1 == cancel_after:
            assoc.send_c_cancel(1, query_model=model)
    assoc.release()
    return last, arrived
