"""A record's manifest must never go back: an older one put back into the store is refused.

Why: the store's files and objects are sealed with the node's key, so someone who can write the
store but has no key (a restore from an older backup gone wrong, an attacker on the storage volume
or in the bucket) cannot forge a manifest, but can put back an older one of the same series, which
still opens. The node then served the older, shorter series: instances appended since vanished,
one deleted since came back (a rollback).

So every manifest carries its commit (`manifest.Commit`: which storing of the series, how many
commits it has had), and the node keeps the latest commit of each record it wrote or read in its
own database (`GenerationBook`, the catalogue's `store_generation` table), a trust domain apart from
the store. A manifest read at an older generation of the same lineage is refused
(`RecordRolledBack`: that record answers 503 with the fix, lists leave it out, the catalogue keeps
what it had, it is logged and audited once per worker), never quarantined: the record is not
damaged, and IT can put its latest copy back.

What is accepted:
- a record the node never saw (no row: its first read is taken as the latest, which is how the
  records of a store written before commits were counted are taken in, generation 0; their first
  write by this release starts counting);
- another lineage: a series deleted and stored again. In a store no other node writes (`shared`
  False) only this node's own `write_record` starts one, so a read of another lineage is an earlier
  storing put back and refused; in a shared store another node may have done it, so it is followed.

A race is not a rollback: a reader that read the manifest before another worker committed and
noted a later generation reads it once more before refusing (the commit is in the store before
its note is in the book, so the second read sees it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from daemons.render.store.interface import RecordUnreadable, StoreUnavailable
from daemons.render.store.manifest import Commit, Manifest

log = logging.getLogger(__name__)


class RecordRolledBack(RecordUnreadable):
    """A record's manifest in the store is older than the latest this node wrote or read (module doc)."""


class GenerationBook(Protocol):
    """Where the node keeps the latest commit of each record (its database, not the store)."""

    def latest(self, record_id: str) -> Commit | None:
        """The latest commit noted for the record; None if none is."""

    def advance(self, record_id: str, commit: Commit, new_lineage: bool) -> None:
        """Note `commit` if it is later than the one noted (same lineage, higher generation) or none
        is; with `new_lineage`, in place of whatever is noted. Atomic across the node's workers."""

    def forget(self, record_id: str) -> None:
        """The record left the store through this node (deleted, quarantined)."""

    def refused(self, record_id: str, read: Commit, latest: Commit, message: str) -> None:
        """Record (audit) that a read at `read` was refused as older than `latest`."""


class Generations:
    """The rule (module doc), for one store: `shared` when other nodes write it too."""

    def __init__(self, book: GenerationBook, shared: bool):
        self.book = book
        self.shared = shared

    def checked(self, record_id: str, read: Callable[[], tuple[Manifest, str]]) -> tuple[Manifest, str]:
        """`read()` (the store's manifest and version), refused with RecordRolledBack when it is
        older than the latest this node noted (read once more first: module doc)."""
        manifest, version = read()
        latest = self.book.latest(record_id)
        if latest is None:
            self.book.advance(record_id, manifest.commit, new_lineage=False)
            return manifest, version
        if not self._accepts(latest, manifest.commit):
            manifest, version = read()
            if not self._accepts(latest, manifest.commit):
                raise self._rolled_back(record_id, manifest.commit, latest)
        if manifest.commit != latest:
            self.book.advance(record_id, manifest.commit, new_lineage=manifest.commit.lineage != latest.lineage)
        return manifest, version

    def continues(self, record_id: str, commit: Commit, changed: Callable[[], bool]) -> None:
        """A commit is about to be made onto `commit`, read just now: refused (RecordRolledBack) when
        that is older than the latest noted, unless the record `changed()` since it was read (a
        later commit noted meanwhile: StoreUnavailable, retry)."""
        latest = self.book.latest(record_id)
        if latest is None or self._accepts(latest, commit):
            return
        if changed():
            raise StoreUnavailable(f"record {record_id} changed since it was read; retry")
        raise self._rolled_back(record_id, commit, latest)

    def wrote(self, record_id: str, commit: Commit, new_lineage: bool = False) -> None:
        """This node committed `commit` (`new_lineage`: it stored the series anew)."""
        self.book.advance(record_id, commit, new_lineage)

    def forget(self, record_id: str) -> None:
        self.book.forget(record_id)

    def _accepts(self, latest: Commit, read: Commit) -> bool:
        if read.lineage != latest.lineage:
            return self.shared
        return read.generation >= latest.generation

    def _rolled_back(self, record_id: str, read: Commit, latest: Commit) -> RecordRolledBack:
        if read.lineage != latest.lineage:
            what = "a manifest of an earlier storing of this series (it was deleted and stored again since)"
        else:
            what = (f"an older manifest of this series (commit {read.generation}; this node wrote or read "
                    f"commit {latest.generation})")
        message = (f"record {record_id}: the store holds {what}: it was put back (a restore from an older "
                   "backup, or someone with write access to the store). It is not served: restore the "
                   "record's latest copy (its whole folder or objects) from a later backup, or delete the "
                   "series and send it again")
        log.error("%s", message)
        self.book.refused(record_id, read, latest, message)
        return RecordRolledBack(record_id, message)
