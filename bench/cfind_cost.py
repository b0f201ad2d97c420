"""Where the node's time goes in a C-FIND with many answers (issue 11: p95 <= 50 ms), in-process.

    python -m bench.cfind_cost [--instances 100000] [--repeats 5]

The catalogue of `bench/archive.py` (synthetic studies of 50 instances from the real CT's header)
in a fresh SQLite database, then, for each search of the benchmark's mix with the most answers
(`ModalitiesInStudy=MR`, `PatientName=SMITH*`), each step timed alone:
1. the query (`catalogue.matching.find`: the matching rows);
2. the node's answers as `dimse.find_answers` sends them: each identifier written from its values,
   with the command set encoded once, as one P-DATA-TF PDU each, encoded as the DUL encodes it;
3. for comparison, pynetdicom's own path for the same answers: a pydicom dataset each, encoded
   (`pynetdicom.dsutils.encode`), then each C-FIND-RSP built and encoded (`C_FIND_RSP.encode_msg`)
   and its P-DATA-TF PDUs encoded (what the node did before `find_answers`);
4. a pynetdicom client reading those messages: each P-DATA-TF PDU decoded, each C-FIND-RSP
   assembled and its identifier decoded (what `Association.send_c_find`'s caller gets), the
   client's own floor whatever the node does (dcmtk's findscu, in C++, has almost none).
Sending (the DUL's queue, state machine and socket) comes on top of these.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from peewee import SqliteDatabase

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.archive import catalogue_rows, cfind_identifier  # noqa: E402
from daemons.render.catalogue.matching import find  # noqa: E402
from daemons.render.dimse.listener import set_protocol_logging  # noqa: E402
from daemons.render.models import make_models  # noqa: E402
from daemons.render.statuses import PENDING  # noqa: E402

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
SEARCHES = ("ModalitiesInStudy=MR", "PatientName=SMITH*")


def capturing_event(sent: list) -> SimpleNamespace:
    """An EVT_C_FIND event with what `AnswerSender` uses of a real one (its request, its Explicit VR
    Little Endian context, its association's DIMSE and DUL), whose DUL keeps what it is handed."""
    from pydicom.uid import ExplicitVRLittleEndian
    from pynetdicom.dimse_primitives import C_FIND

    request = C_FIND()
    request.MessageID, request.AffectedSOPClassUID = 1, STUDY_ROOT_FIND
    dul = SimpleNamespace(send_pdu=sent.append)
    dimse = SimpleNamespace(maximum_pdu_size=16382, send_msg=lambda *_: sent.append(None))
    context = SimpleNamespace(context_id=1, transfer_syntax=ExplicitVRLittleEndian)
    return SimpleNamespace(request=request, context=context, assoc=SimpleNamespace(dimse=dimse, dul=dul))


def timed_steps(catalogue, search: str) -> dict[str, float]:
    from pynetdicom.dimse_messages import C_FIND_RSP
    from pynetdicom.dimse_primitives import C_FIND
    from pynetdicom.dsutils import decode, encode
    from pynetdicom.pdu import P_DATA_TF
    from pynetdicom.pdu_primitives import P_DATA

    from daemons.render.dimse.find_answers import AnswerSender

    def response(identifier: bytes) -> C_FIND_RSP:
        primitive = C_FIND()
        primitive.MessageIDBeingRespondedTo, primitive.AffectedSOPClassUID = 1, STUDY_ROOT_FIND
        primitive.Status, primitive.Identifier = PENDING, io.BytesIO(identifier)
        message = C_FIND_RSP()
        message.primitive_to_message(primitive)
        return message

    def pdus(primitives: list) -> list[bytes]:
        return [P_DATA_TF(primitive).encode() for primitive in primitives]

    started = time.perf_counter()
    found = find(catalogue, "STUDY", cfind_identifier(search), 1_000_000)  # the matching's cost, unbounded
    query = time.perf_counter() - started
    started = time.perf_counter()
    sent_now: list[P_DATA] = []
    sender = AnswerSender(capturing_event(sent_now))
    for row in found.rows:
        assert sender.send(found, row)
    pdus(sent_now)  # encoded as the DUL encodes them
    answers_now = time.perf_counter() - started
    started = time.perf_counter()
    sent_before = []
    for row in found.rows:
        sent_before += response(encode(found.dataset(row), False, True)).encode_msg(1, 16382)
    before = pdus(sent_before)
    answers_before = time.perf_counter() - started
    started = time.perf_counter()
    received = None
    for raw in before:
        pdu = P_DATA_TF()
        pdu.decode(raw)
        received = received or C_FIND_RSP()
        if received.decode_msg(pdu.to_primitive()):
            decode(received.message_to_primitive().Identifier, False, True)
            received = None
    client = time.perf_counter() - started
    count = len(found.rows)
    return {"answers": count, "query_ms": query * 1000, "answers_ms": answers_now * 1000,
            "per_answer_ms": answers_now * 1000 / max(1, count), "pynetdicom_answers_ms": answers_before * 1000,
            "pynetdicom_per_answer_ms": answers_before * 1000 / max(1, count), "client_decoding_ms": client * 1000,
            "client_per_answer_ms": client * 1000 / max(1, count)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    set_protocol_logging("info")  # as a node logging at info level runs: answers not described
    with tempfile.TemporaryDirectory(prefix="sivr-bench-cfind-") as folder:
        database = SqliteDatabase(str(Path(folder) / "catalogue.db"), pragmas={"journal_mode": "wal"})
        models = make_models(database)
        with database.connection_context():
            database.create_tables(models.all)
            catalogue_rows(models.catalogue, sorted((REPO / "demo_data" / "ct-chest-100").glob("*.dcm"))[0],
                           args.instances, 50)
            for search in SEARCHES:
                runs = [timed_steps(models.catalogue, search) for _ in range(args.repeats)]
                print(json.dumps({"search": search, "answers": runs[0]["answers"], **{
                    key: round(statistics.median(run[key] for run in runs), 3)
                    for key in runs[0] if key != "answers"}}), flush=True)


if __name__ == "__main__":
    main()
