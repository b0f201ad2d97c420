"""The database connection of a DICOM association: one per association, kept from one message to
the next.

pynetdicom serves each association in its own thread, and the node's database connections are per
thread (peewee). Opened and closed around every message, a C-STORE paid for a new connection each
time: 0.25 ms on SQLite, 10.6 ms on PostgreSQL with its password exchange (2 Dec 2026, the 2-core
VM), nearly half of what a C-STORE costs the node otherwise. Kept for the association instead, a
connection the database server dropped meanwhile (a restart) must not fail the next message: it is
checked with a trivial query first (0.06 ms on PostgreSQL) and replaced if dead. On a database
server, "closed" gives the connection back to the process's pool (`shared.db.ThreadPooledDatabase`)
for the next association or request; one the server dropped is not reused.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import peewee
from pynetdicom import evt
from pynetdicom.events import EventHandlerType

log = logging.getLogger(__name__)


class AssociationConnections:
    """Each association thread's connection to `database`: used by `held`, closed when the
    association is released or aborted (`handlers`, bound after the handlers that audit those)."""

    def __init__(self, database: peewee.Database):
        self.database = database

    @contextmanager
    def held(self) -> Iterator[None]:
        """One message's database work on this thread's connection, which stays open for the
        association's next message. Work that fails closes it: the failure may have left it unusable."""
        if not self.database.is_closed():
            try:
                self.database.execute_sql("SELECT 1")
            except peewee.DatabaseError as exc:
                log.info("a DICOM association's database connection was dropped (%s); reconnecting", exc)
                self._close()
        try:
            yield
        except BaseException:
            self._close()
            raise

    def handlers(self) -> list[EventHandlerType]:
        return [(evt.EVT_RELEASED, self._ended), (evt.EVT_ABORTED, self._ended), (evt.EVT_REJECTED, self._ended)]

    def _ended(self, event: Any) -> None:
        """Close the connection of the thread the association ended in: its own (a release, a
        refusal, which audited itself and gets neither other event, or an abort by the peer), or
        pynetdicom's reader of it (an abort for an oversized message, `limits.MessageLimit`), which
        opened one to audit the abort. Either thread ends with the association; the other's
        connection, if any, goes with its thread (`shared.db.ThreadPooledDatabase` closes it)."""
        self._close()

    def _close(self) -> None:
        if self.database.is_closed():
            return
        try:
            self.database.close()
        except peewee.DatabaseError:
            log.exception("closing a DICOM association's database connection failed")
