"""The race of an edit with a deletion of the row it edits, for every layer's tests (attack 58)."""

from __future__ import annotations

from typing import Any

import peewee
import pytest


def deleted_when_saved(monkeypatch: pytest.MonkeyPatch, model: type[peewee.Model]) -> None:
    """Delete the row a view is about to save, at the moment it saves: what a DELETE committed by
    another request between the view's read and its write leaves. (Deleted in the view's own
    transaction, where it has one, so the view's rollback brings the row back.)"""
    real_save = model.save

    def save(self: peewee.Model, *args: Any, **kwargs: Any) -> Any:
        type(self).delete().where(self._pk_expr()).execute()
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(model, "save", save)
