"""Routing helper: a blank id in the path is a 400, never a fall-through to the collection.

`DELETE /api/v1/nodes/` (empty id) must not match "all nodes" nor vanish as a bare 404; the
item view is also mounted on the trailing-slash path with an empty id so `parse_uuid` refuses
it with `invalid_id`, like any other malformed id.
"""

from __future__ import annotations

from typing import Callable, TypeVar

from flask import Blueprint

F = TypeVar("F", bound=Callable)


def item_route(bp: Blueprint, prefix: str, param: str, methods: list[str]) -> Callable[[F], F]:
    """Register a view on `prefix/<param>` and on `prefix/` (with `param` = "")."""

    def decorator(view: F) -> F:
        bp.add_url_rule(f"{prefix}/<{param}>", view_func=view, methods=methods)
        bp.add_url_rule(f"{prefix}/", view_func=view, methods=methods, defaults={param: ""})
        return view

    return decorator
