"""Audit of image streams: one entry per user, record and viewing session, with counts and times.

A viewer scrolling a series asks for hundreds of slices a minute; an entry per image would bury
the log and put a database write on the node's hot path. So an image request (frame, reformat,
3D view, and the load status a viewer polls while loading) only counts in memory, keyed by (user,
record, token session `sid`), and a background
thread writes the counts every `audit.flush_s` seconds: it inserts the stream's row the first
time and updates that same row afterwards (`action` `record.view`, `at` the first image, `detail`
a JSON object with the counts per kind and the first/last times). `close` writes what is pending
when the node stops; a node killed hard loses at most the last period.

A stream idle for `IDLE_FORGET_S` is dropped from memory once written; if that session views the
record again later, a new row starts. Each worker of a node counts the images it served: a
session whose requests reached two workers has a row from each, which together count every image.
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import peewee
from flask import Flask, current_app

from shared.audit import client_address, stored_address
from shared.auth import current_identity
from shared.db import new_id, utcnow
from shared.validation import iso_utc

log = logging.getLogger(__name__)

EXTENSION = "sivr_view_audit"
ACTION = "record.view"
KINDS = ("frame", "mpr", "volume", "status", "dicomweb", "value")  # value: probe and ROI readings
IDLE_FORGET_S = 3600.0
MAX_ADDRESSES = 8
INSERT_BATCH = 200


@dataclass
class _Stream:
    """What one viewing session did with one record since it started."""

    entry_id: str
    user_id: str
    username: str
    record_id: str
    session_id: str
    addresses: list[str]
    first_at: dt.datetime
    last_at: dt.datetime
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    stored: bool = False
    dirty: bool = True

    def detail(self) -> str:
        return json.dumps({
            "session": self.session_id, **self.counts,
            "first_at": iso_utc(self.first_at), "last_at": iso_utc(self.last_at),
            "addresses": self.addresses,
        })


class ViewAudit:
    """In-memory counts of image reads, written to the node's audit table on a short period."""

    def __init__(self, model: type[peewee.Model], flush_s: float,
                 export: Callable[[dict[str, Any]], None] | None = None):
        """`export`: also send each written entry on (the central syslog, shared.audit_export),
        after its transaction committed; a stream's entry is sent again with its counts so far
        at every flush that changed it, so the last message of an id is its final state."""
        self.model = model
        self.flush_s = flush_s
        self._export = export
        self._streams: dict[tuple[str, str, str], _Stream] = {}
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sivr-view-audit", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def note(self, kind: str, record_id: str) -> None:
        """Count one image of `kind` shown to the current request's user (no database access)."""
        identity = current_identity()
        address = client_address()
        now = utcnow()
        key = (identity.user_id, record_id, identity.session_id)
        with self._lock:
            stream = self._streams.get(key)
            if stream is None:
                stream = self._streams[key] = _Stream(
                    new_id(), identity.user_id, identity.username, record_id, identity.session_id,
                    [address], now, now)
            elif address not in stream.addresses and len(stream.addresses) < MAX_ADDRESSES:
                stream.addresses.append(address)
            stream.counts[kind] += 1
            stream.last_at = now
            stream.dirty = True

    def flush(self) -> int:
        """Write every stream that changed since the last flush; returns how many were written."""
        with self._flush_lock:
            with self._lock:
                changed = [s for s in self._streams.values() if s.dirty]
                rows = [(s, s.stored, s.detail()) for s in changed]
                for stream in changed:
                    stream.dirty = False
            if rows:
                try:
                    self._write(rows)
                except Exception:  # any database failure (raw driver errors too): keep the counts, retry
                    log.exception("could not write %d image-view audit entries; retrying in %ss",
                                  len(rows), self.flush_s)
                    with self._lock:
                        for stream in changed:
                            stream.dirty = True
                    return 0
            self._forget_idle()
            return len(rows)

    def _write(self, rows: list[tuple[_Stream, bool, str]]) -> None:
        """New streams in multi-row INSERTs, known ones in one prepared UPDATE run per row.

        Building SQL per row in peewee costs more than the database does (1000 rows: about a
        second on a busy core), and a flush must stay far below its period.
        """
        model = self.model
        database = model._meta.database
        new = [{"id": s.entry_id, "at": s.first_at, "user_id": s.user_id, "username": s.username,
                "action": ACTION, "object_type": "record", "object_id": s.record_id, "patient_id": None,
                "client_ip": stored_address(s.addresses[0]), "detail": detail}
               for s, stored, detail in rows if not stored]
        updates = [(detail, s.entry_id) for s, stored, detail in rows if stored]
        with database.connection_context(), database.atomic():
            for start in range(0, len(new), INSERT_BATCH):
                model.insert_many(new[start:start + INSERT_BATCH]).execute()
            if updates:
                template, _params = model.update(detail="").where(model._meta.primary_key == "").sql()
                database.cursor().executemany(template, updates)
        with self._lock:
            for stream, _stored, _detail in rows:
                stream.stored = True
        if self._export is not None:
            for stream, _stored, detail in rows:
                self._export({"id": stream.entry_id, "at": iso_utc(stream.first_at), "user_id": stream.user_id,
                              "username": stream.username, "action": ACTION, "object_type": "record",
                              "object_id": stream.record_id, "patient_id": None,
                              "client_ip": stored_address(stream.addresses[0]), "detail": detail})

    def _forget_idle(self) -> None:
        horizon = utcnow() - dt.timedelta(seconds=IDLE_FORGET_S)
        with self._lock:
            idle = [key for key, s in self._streams.items() if s.stored and not s.dirty and s.last_at < horizon]
            for key in idle:
                del self._streams[key]

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush()

    def close(self) -> None:
        """Stop the timer and write what is pending (at shutdown; safe to call twice)."""
        self._stop.set()
        self.flush()
        atexit.unregister(self.close)


def install(app: Flask, audit: ViewAudit) -> None:
    app.extensions[EXTENSION] = audit


def note_view(kind: str, record_id: str) -> None:
    """Count an image the current request shows; every image endpoint calls this before answering."""
    current_app.extensions[EXTENSION].note(kind, record_id)
