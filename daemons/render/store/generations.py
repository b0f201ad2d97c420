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
  storing put back and refused; in a shared store another node may have done it, so it is followed,
  unless it is buried (below).

A deleted series is not forgotten: its deletion took its row out of the book, so its folder or
objects put back (an old backup restored, someone on the volume or in the bucket) were taken for a
record the node never saw and the deleted patient's images were served again. So the deletion buries
each storing of the series it knew (`deleted`: the book's lineage and the one in the store), and a
storing that another one replaced is buried too (a new lineage noted in its place: only a put-back
brings the earlier one back, lineages are random and never reused). A buried lineage read is refused
as a rollback is, whether the book has a row or not, in every store. A series sent again after its
deletion is a new storing (a new lineage), stored and served as any. Quarantine is no deletion: the
book keeps the record's latest commit and buries nothing, so IT may put its latest copy back, while an
older one is refused (forgetting it let anyone who could damage the manifest, and so have it
quarantined, put an older copy back in its place).

A storing put back is deleted as any series is (`delete_put_back`): the node holds no row of a series
it deleted, so that DELETE found nothing to delete but the refusal, and IT had to remove the folder or
objects by hand. Only a copy refused by the rule above is removed this way (read through it first,
never served), and its deletion buries it as every deletion does: put back once more, it is refused
again, while the series sent again is a new storing.

A race is not a rollback: a reader that read the manifest before another worker committed and
noted a later generation reads it once more before refusing (the commit is in the store before
its note is in the book, so the second read sees it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from daemons.render.store.interface import RecordUnreadable, Store, StoreUnavailable
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
        """The record was deleted through this node (its storings buried first)."""

    def bury(self, record_id: str, lineage: str) -> None:
        """Note that the record's storing `lineage` was deleted or replaced (kept for good)."""

    def buried(self, record_id: str, lineage: str) -> bool:
        """Whether the record's storing `lineage` was buried."""

    def refused(self, record_id: str, read: Commit, latest: Commit | None, message: str) -> None:
        """Record (audit) that a read at `read` was refused as older than `latest` (None: buried)."""


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
        if not self._accepts(record_id, latest, manifest.commit):
            manifest, version = read()
            if not self._accepts(record_id, latest, manifest.commit):
                raise self._rolled_back(record_id, manifest.commit, latest)
        if latest is None:
            self.book.advance(record_id, manifest.commit, new_lineage=False)
        elif manifest.commit != latest:
            self._advance(record_id, latest, manifest.commit)
        return manifest, version

    def continues(self, record_id: str, commit: Commit, changed: Callable[[], bool]) -> None:
        """A commit is about to be made onto `commit`, read just now: refused (RecordRolledBack) when
        that is older than the latest noted, unless the record `changed()` since it was read (a
        later commit noted meanwhile: StoreUnavailable, retry)."""
        latest = self.book.latest(record_id)
        if self._accepts(record_id, latest, commit):
            return
        if changed():
            raise StoreUnavailable(f"record {record_id} changed since it was read; retry")
        raise self._rolled_back(record_id, commit, latest)

    def wrote(self, record_id: str, commit: Commit, new_lineage: bool = False) -> None:
        """This node committed `commit` (`new_lineage`: it stored the series anew)."""
        latest = self.book.latest(record_id) if new_lineage else None
        if latest is not None:
            self._advance(record_id, latest, commit)
        else:
            self.book.advance(record_id, commit, new_lineage)

    def deleted(self, record_id: str, stored: Commit | None) -> None:
        """The record was deleted through this node: every storing of it that it knew (the book's,
        and `stored`, the one the store held, when it could be read) is buried (module doc)."""
        latest = self.book.latest(record_id)
        for lineage in sorted({commit.lineage for commit in (latest, stored) if commit is not None}):
            self.book.bury(record_id, lineage)
        self.book.forget(record_id)

    def _advance(self, record_id: str, latest: Commit, commit: Commit) -> None:
        """Note `commit` in place of `latest`; a storing it replaces is buried first."""
        new_lineage = commit.lineage != latest.lineage
        if new_lineage:
            self.book.bury(record_id, latest.lineage)
        self.book.advance(record_id, commit, new_lineage)

    def _accepts(self, record_id: str, latest: Commit | None, read: Commit) -> bool:
        """The rule (module doc); the tombstones are asked only for a lineage the book does not hold."""
        if latest is not None and read.lineage == latest.lineage:
            return read.generation >= latest.generation
        if self.book.buried(record_id, read.lineage):
            return False
        return latest is None or self.shared

    def _rolled_back(self, record_id: str, read: Commit, latest: Commit | None) -> RecordRolledBack:
        restore = ("restore the record's latest copy (its whole folder or objects) from a later backup, or "
                   "delete the series and send it again")
        if latest is None:  # buried, and no later storing noted: the series stays deleted
            what = "a manifest of a storing of this series that was deleted (or replaced) since"
            restore = ("an administrator of the institution deletes the series again through the node's API "
                       "(DELETE /api/v1/records/<id>: its folder or objects leave the store, the series stays "
                       "deleted), then the series may be sent again if it is still wanted")
        elif read.lineage != latest.lineage:
            what = "a manifest of an earlier storing of this series (it was deleted and stored again since)"
        else:
            what = (f"an older manifest of this series (commit {read.generation}; this node wrote or read "
                    f"commit {latest.generation})")
        message = (f"record {record_id}: the store holds {what}: it was put back (a restore from an older "
                   f"backup, or someone with write access to the store). It is not served: {restore}")
        log.error("%s", message)
        self.book.refused(record_id, read, latest, message)
        return RecordRolledBack(record_id, message)


def delete_put_back(store: Store, record_id: str) -> bool:
    """Delete the record from `store` when what it holds of it is refused as put back (module doc):
    read through the rule first, so a copy the node serves is never removed here (False, as for none
    held: delete it as any stored series, through its row). The store's delete buries its storing."""
    try:
        store.read_manifest_versioned(record_id)
    except RecordRolledBack:
        return store.delete(record_id)
    except FileNotFoundError:
        return False
    return False
