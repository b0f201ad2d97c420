"""Which of a render node's routes its front streams (daemons/render/settings.py STREAMED_LOCATIONS):
its DICOM uploads, and no other route that takes a body (every other body the front reads whole
before the node sees the request: tests/test_front.py, attack 113)."""

from __future__ import annotations

from daemons.render.settings import STREAMED_LOCATIONS


def _streamed(path: str) -> bool:
    """Whether nginx's location matching puts `path` in one of the streamed locations."""
    for location in STREAMED_LOCATIONS:
        kind, prefix = location.split(" ", 1)
        if (kind == "=" and path == prefix) or (kind == "^~" and path.startswith(prefix)):
            return True
    return False


def test_only_the_upload_and_stow_rs_are_streamed(node):
    with_bodies = {rule.rule for rule in node.app.url_map.iter_rules() if rule.methods & {"POST", "PUT", "PATCH"}}
    assert {rule for rule in with_bodies if _streamed(rule)} == {
        "/api/v1/records", "/dicomweb/studies", "/dicomweb/studies/<study>"}
    assert all(location.split(" ", 1)[0] in ("=", "^~") for location in STREAMED_LOCATIONS)
